//! The local process end to end, over HTTP, as a newcomer runs it: the real binary, a real
//! database, the file warehouse. Stops and kills must lose nothing, and a restart must finish
//! what the last run started without a second warehouse row.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use fluxgate::event::EventKey;
use fluxgate::sink::bigquery::BigQueryWriteMode;
use fluxgate::sink::{LocalFileSink, Sink, WarehouseRow};
use fluxgate::store::{ClaimRequest, OutboxStatus, Store};
use fluxgate_local::LocalConfig;
use fluxgate_tests::{
    DbKind, Deadline, TestBigQuery, TestDb, database_config, event, free_port, in_each_write_mode,
    per_database,
};
use serde_json::{Value, json};

struct LocalProcess {
    child: Child,
    base: String,
    log: PathBuf,
    /// The development key the process wrote to `<data-dir>/dev-api-key`.
    key: String,
}

/// The database a run of local uses on `kind`: a fresh one on the server (dropped with the
/// `TestDb`), or none for SQLite, where local makes its own file in its data folder.
async fn server_db(kind: DbKind) -> Option<TestDb> {
    match kind {
        DbKind::Sqlite => None,
        server => Some(TestDb::of(server).await),
    }
}

impl LocalProcess {
    /// Starts `fluxgate-local` on a free port and waits until it is ready.
    async fn start(data_dir: &Path, database_url: Option<&str>) -> Self {
        Self::start_for("acme", data_dir, database_url).await
    }

    /// Starts it with `tenant` as the development tenant (whose key every request sends).
    async fn start_for(tenant: &str, data_dir: &Path, database_url: Option<&str>) -> Self {
        Self::start_with(tenant, data_dir, database_url, &[]).await
    }

    /// Starts it with more settings in its environment (`env`).
    async fn start_with(
        tenant: &str,
        data_dir: &Path,
        database_url: Option<&str>,
        env: &[(&str, String)],
    ) -> Self {
        let port = free_port();
        let log = data_dir.join(format!("local-{port}.log"));
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_fluxgate-local"));
        command
            .env("PORT", port.to_string())
            .env("FLUXGATE_DATA_DIR", data_dir)
            .env("FLUXGATE_DRAIN_INTERVAL", "200ms")
            .env("FLUXGATE_DEV_TENANT", tenant)
            .env_remove("FLUXGATE_AUTH")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::from(log_file.try_clone().expect("log")))
            .stderr(Stdio::from(log_file));
        if let Some(url) = database_url {
            command.env("DATABASE_URL", url);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut process = Self {
            child: command.spawn().expect("start fluxgate-local"),
            base: format!("http://127.0.0.1:{port}"),
            log,
            key: String::new(),
        };
        let deadline = Deadline::after(Duration::from_secs(30), Duration::from_millis(100));
        loop {
            if let Some(status) = process.child.try_wait().expect("try_wait") {
                panic!(
                    "fluxgate-local exited at start ({status}):\n{}",
                    process.log_text()
                );
            }
            let ready = reqwest::get(format!("{}/readyz", process.base)).await;
            if ready.is_ok_and(|response| response.status().is_success()) {
                process.key = std::fs::read_to_string(data_dir.join("dev-api-key"))
                    .expect("the local mode writes its development key")
                    .trim()
                    .to_owned();
                return process;
            }
            let why = || format!("fluxgate-local not ready in 30 s:\n{}", process.log_text());
            deadline.next(why).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Deadline::after(within, Duration::from_millis(50));
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            let why = || {
                format!(
                    "fluxgate-local did not stop in {within:?}:\n{}",
                    self.log_text()
                )
            };
            deadline.next(why).await;
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_text(path, &body.to_string()).await
    }

    /// Posts `body` byte for byte, as a client wrote it.
    async fn post_text(&self, path: &str, body: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json answer"))
    }

    /// `GET /v1/events/{tenant}/{id}` as text, once its outbox row is DONE.
    async fn get_when_done(&self, tenant: &str, event_id: &str) -> String {
        let deadline = Deadline::after(Duration::from_secs(10), Duration::from_millis(100));
        loop {
            let text = reqwest::Client::new()
                .get(format!("{}/v1/events/{tenant}/{event_id}", self.base))
                .bearer_auth(&self.key)
                .send()
                .await
                .expect("get")
                .text()
                .await
                .expect("text");
            let read: Value = serde_json::from_str(&text).expect("json");
            if read["outbox"]["status"] == "DONE" {
                return text;
            }
            deadline
                .next(|| {
                    format!(
                        "{event_id} not DONE within 10 s: {read}\n{}",
                        self.log_text()
                    )
                })
                .await;
        }
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("fluxgate.db").display())
}

/// The store at `url`, opened as local opens it.
async fn open_store(url: &str) -> Arc<dyn Store> {
    fluxgate::store::connect(url, &database_config(url))
        .await
        .expect("open the database")
}

/// Posts the batch `body` to `local`, and waits (60 s at most) until each of its events, `keys`,
/// is DONE in local's SQLite database in `data_dir`, which it answers.
async fn post_until_done(
    local: &LocalProcess,
    data_dir: &Path,
    body: &Value,
    keys: &[EventKey],
) -> Arc<dyn Store> {
    let (status, answer) = local.post("/v1/events/batch", body).await;
    assert_eq!(status, 200, "{answer}");
    let store = open_store(&sqlite_url(data_dir)).await;
    wait_all_done(store.as_ref(), keys, Duration::from_secs(60)).await;
    store
}

/// Every warehouse row's key, and how many rows there are (to see duplicates).
fn warehouse(data_dir: &Path) -> (usize, HashSet<(String, String)>) {
    let root = data_dir.join("warehouse");
    if !root.exists() {
        return (0, HashSet::new());
    }
    let rows: Vec<Value> = fluxgate_tests::warehouse_file_rows(&root)
        .into_values()
        .flatten()
        .collect();
    let keys = rows
        .iter()
        .map(|row| {
            let field = |name: &str| row[name].as_str().expect(name).to_owned();
            (field("tenant_id"), field("event_id"))
        })
        .collect();
    (rows.len(), keys)
}

/// Every line of the warehouse folder as written (parts still open included), with its file
/// and the tenant of its partition.
fn warehouse_lines(data_dir: &Path) -> Vec<(PathBuf, String, String)> {
    let mut lines = Vec::new();
    let root = data_dir.join("warehouse");
    let Ok(dates) = std::fs::read_dir(&root) else {
        return lines;
    };
    for date in dates {
        for tenant in std::fs::read_dir(date.expect("entry").path()).expect("dir") {
            let tenant = tenant.expect("entry").path();
            let tenant_id = tenant
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("tenant_id="))
                .expect("tenant_id=… partition")
                .to_owned();
            for file in std::fs::read_dir(&tenant).expect("dir") {
                let file = file.expect("entry").path();
                if !fluxgate_tests::is_warehouse_part(&file) {
                    continue;
                }
                for line in std::fs::read_to_string(&file).expect("read").lines() {
                    lines.push((file.clone(), tenant_id.clone(), line.to_owned()));
                }
            }
        }
    }
    lines
}

/// Waits until every key is DONE in the database.
async fn wait_all_done(store: &dyn Store, keys: &[EventKey], within: Duration) {
    let deadline = Deadline::after(within, Duration::from_millis(100));
    loop {
        let statuses = store.statuses(keys).await.expect("statuses");
        let done = statuses
            .values()
            .filter(|s| **s == OutboxStatus::Done)
            .count();
        if done == keys.len() {
            return;
        }
        let why = || format!("only {done} of {} events DONE after {within:?}", keys.len());
        deadline.next(why).await;
    }
}

/// The body of a batch of `events`, and the keys they are stored under.
fn batch_of(events: Vec<Value>) -> (Value, Vec<EventKey>) {
    let field = |event: &Value, name: &str| event[name].as_str().expect(name).to_owned();
    let keys = events
        .iter()
        .map(|event| EventKey {
            tenant_id: field(event, "tenantId"),
            event_id: field(event, "eventId"),
        })
        .collect();
    (json!({ "events": events }), keys)
}

fn batch(tenant: &str, count: usize) -> (Value, Vec<EventKey>) {
    batch_of(
        (0..count)
            .map(|i| json!({"tenantId": tenant, "eventId": format!("e{i:05}"), "eventType": "page.viewed", "payload": {"n": i}}))
            .collect(),
    )
}

/// The README's first example: post an event, find it in the warehouse folder.
async fn a_posted_event_reaches_the_warehouse(kind: DbKind) {
    let db = server_db(kind).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalProcess::start(dir.path(), db.as_ref().map(|db| db.url.as_str())).await;
    let (status, answer) = local
        .post(
            "/v1/events",
            &json!({"tenantId": "acme", "eventId": "order-1001", "eventType": "order.created",
                    "payload": {"orderId": 1001, "total": 42.5}}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");

    let deadline = Deadline::after(Duration::from_secs(10), Duration::from_millis(100));
    loop {
        let read: Value = reqwest::Client::new()
            .get(format!("{}/v1/events/acme/order-1001", local.base))
            .header("x-api-key", &local.key)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if read["outbox"]["status"] == "DONE" {
            break;
        }
        let why = || format!("not DONE within 10 s: {read}\n{}", local.log_text());
        deadline.next(why).await;
    }
    let (rows, keys) = warehouse(dir.path());
    assert_eq!(rows, 1);
    assert!(keys.contains(&("acme".to_owned(), "order-1001".to_owned())));
}

per_database!(#[tokio::test] a_posted_event_reaches_the_warehouse: sqlite, postgres, mariadb);

/// The reference outbox API's own example, posted as written (a naive timestamp almost three
/// years old, `tenantId` in the body), reaches the warehouse in its own day's partition; and
/// payload numbers keep every digit on the way.
async fn the_reference_example_reaches_the_warehouse(kind: DbKind) {
    let db = server_db(kind).await;
    let database_url = db.as_ref().map(|db| db.url.as_str());
    const EXAMPLE: &str = r#"{"tenantId":"tenant-123","eventId":"event-456","eventType":"user.action","eventTs":"2024-01-15T10:30:00","payload":{"userId":"user-789","action":"login","ipAddress":"192.168.1.1"},"source":"web-app"}"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalProcess::start_for("tenant-123", dir.path(), database_url).await;
    let (status, answer) = local.post_text("/v1/events", EXAMPLE).await;
    assert_eq!(status, 202, "{answer}");
    let read: Value =
        serde_json::from_str(&local.get_when_done("tenant-123", "event-456").await).expect("json");
    assert_eq!(read["eventTs"], "2024-01-15T10:30:00Z");
    let rows = warehouse_lines(dir.path());
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (file, tenant, line) = &rows[0];
    let row: Value = serde_json::from_str(line).expect("row");
    assert_eq!(tenant, "tenant-123");
    assert!(
        file.to_string_lossy().contains("event_date=2024-01-15/"),
        "{}",
        file.display()
    );
    assert_eq!(row["event_id"], "event-456");
    assert_eq!(row["payload"]["ipAddress"], "192.168.1.1");

    // A 30-digit integer and a 17-significant-digit decimal come back as sent, from GET and
    // from the warehouse row.
    let exact = r#"{"eventId":"exact","eventType":"n","payload":{"pi":3.1415926535897932,"big":123456789012345678901234567890}}"#;
    let (status, answer) = local.post_text("/v1/events", exact).await;
    assert_eq!(status, 202, "{answer}");
    let digits = r#""payload":{"big":123456789012345678901234567890,"pi":3.1415926535897932}"#;
    let read = local.get_when_done("tenant-123", "exact").await;
    assert!(read.contains(digits), "{read}");
    let rows = warehouse_lines(dir.path());
    assert!(
        rows.iter().any(|(_, _, line)| line.contains(digits)),
        "{rows:?}"
    );
}

per_database!(#[tokio::test] the_reference_example_reaches_the_warehouse: sqlite, postgres);

/// Posts a batch, stops the process with `signal` at once, restarts it and waits: every
/// accepted event ends DONE, in the warehouse exactly once.
async fn nothing_is_lost_across(signal: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (body, keys) = batch("acme", 300);
    let mut local = LocalProcess::start(dir.path(), None).await;
    let (status, answer) = local.post("/v1/events/batch", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["counts"]["accepted"], 300);
    local.signal(signal);
    let exit = local.wait_exit(Duration::from_secs(20)).await;
    if signal == "TERM" {
        assert!(
            exit.success(),
            "a graceful stop exits 0, got {exit}:\n{}",
            local.log_text()
        );
    }
    drop(local);

    let _restarted = LocalProcess::start(dir.path(), None).await;
    let store = open_store(&sqlite_url(dir.path())).await;
    wait_all_done(store.as_ref(), &keys, Duration::from_secs(30)).await;
    let (rows, stored) = warehouse(dir.path());
    assert_eq!(stored.len(), 300, "every event is in the warehouse");
    assert_eq!(rows, 300, "and none twice");
}

#[tokio::test]
async fn a_graceful_stop_loses_nothing_and_a_restart_carries_on() {
    nothing_is_lost_across("TERM").await;
}

#[tokio::test]
async fn a_kill_loses_nothing_and_a_restart_carries_on() {
    nothing_is_lost_across("KILL").await;
}

/// The exact state a kill can leave: rows handed to the in-memory queue (PUBLISHED) with no
/// outcome, one of them already written to the warehouse before the process died.
#[tokio::test]
async fn a_restart_redelivers_published_rows_without_a_second_warehouse_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(dir.path());
    let store = open_store(&url).await;
    let events: Vec<_> = (0..5).map(|i| event("acme", &format!("p{i}"))).collect();
    store.insert_events(&events).await.expect("insert");
    let now = fluxgate::now();
    let claimed = store
        .claim_batch(&ClaimRequest {
            owner: "previous-run".into(),
            limit: 10,
            lease_ttl: chrono::TimeDelta::minutes(2),
            now,
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 5);
    let keys: Vec<EventKey> = events.iter().map(|e| e.key()).collect();
    assert_eq!(
        store
            .mark_published("previous-run", &keys, now)
            .await
            .expect("publish"),
        5
    );
    let sink = LocalFileSink::open(dir.path().join("warehouse"))
        .await
        .expect("sink");
    sink.write_rows(&[WarehouseRow::new(&events[0], now)])
        .await
        .expect("write");
    drop(sink);

    let config = LocalConfig::parse_from([
        "fluxgate-local",
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--database-url",
        &url,
        "--drain-interval",
        "100ms",
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stop = stop_switch();
    let running = tokio::spawn(fluxgate_local::run_on(listener, config, stop.1));
    wait_all_done(store.as_ref(), &keys, Duration::from_secs(15)).await;
    let _ = stop.0.send(());
    running.await.expect("join").expect("local run");
    let (rows, stored) = warehouse(dir.path());
    assert_eq!((rows, stored.len()), (5, 5));
}

/// A shutdown future for `run_on` and the switch that fires it.
fn stop_switch() -> (
    tokio::sync::oneshot::Sender<()>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// The first start makes the development tenant and a key, keeps it owner-only in
/// `<data-dir>/dev-api-key`; a restart reuses it; requests without it are refused.
#[tokio::test]
async fn the_development_key_is_made_once_and_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalProcess::start(dir.path(), None).await;
    let first_key = local.key.clone();
    assert!(first_key.starts_with("fgk_"), "{first_key}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("dev-api-key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        local.log_text().contains(&first_key),
        "the first start prints the key for the person at the terminal"
    );
    let anonymous = reqwest::Client::new()
        .post(format!("{}/v1/events", local.base))
        .json(&json!({"eventType": "x", "payload": {}}))
        .send()
        .await
        .expect("post");
    assert_eq!(anonymous.status().as_u16(), 401);
    let (status, answer) = local
        .post("/v1/events", &json!({"eventType": "x", "payload": {}}))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["tenantId"], "acme", "the key names the dev tenant");
    drop(local);

    let again = LocalProcess::start(dir.path(), None).await;
    assert_eq!(again.key, first_key, "a restart reuses the key");
    assert!(
        !again.log_text().contains(&first_key),
        "and does not print it again"
    );
    let (status, _) = again
        .post("/v1/events", &json!({"eventType": "x", "payload": {}}))
        .await;
    assert_eq!(status, 202);
}

/// Another `DATABASE_URL` learns the key of `dev-api-key` instead of replacing the file: the
/// file keeps working with both databases, and each holds that one key of the tenant.
#[tokio::test]
async fn another_database_learns_the_same_development_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let other_url = sqlite_url(other.path());
    let first = LocalProcess::start(dir.path(), None).await;
    let key = first.key.clone();
    drop(first);

    let second = LocalProcess::start(dir.path(), Some(&other_url)).await;
    assert_eq!(second.key, key, "the key file is not rewritten");
    let (status, answer) = second
        .post("/v1/events", &json!({"eventType": "x", "payload": {}}))
        .await;
    assert_eq!(status, 202, "the other database knows the key: {answer}");
    drop(second);

    let third = LocalProcess::start(dir.path(), None).await;
    assert_eq!(third.key, key);
    let (status, _) = third
        .post("/v1/events", &json!({"eventType": "x", "payload": {}}))
        .await;
    assert_eq!(status, 202, "and the first one still does");
    drop(third);
    for url in [sqlite_url(dir.path()), other_url] {
        let (ok, listed, err) = manage(&url, &["keys", "list"]);
        assert!(ok, "{err}");
        assert_eq!(listed.lines().count(), 1, "one key in {url}: {listed}");
        assert!(
            listed.contains(&key[4..16]) && listed.contains("active"),
            "{listed}"
        );
    }
}

/// `fluxgate-local tenants|keys …` against a database named by `DATABASE_URL`.
fn manage(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fluxgate-local"))
        .env("DATABASE_URL", database_url)
        .args(args)
        .output()
        .expect("run fluxgate-local");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_manages_tenants_and_keys_of_a_database() {
    let db = TestDb::postgres().await;
    let (ok, out, err) = manage(&db.url, &["tenants", "create", "acme"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = manage(&db.url, &["keys", "create", "--tenant", "nobody"]);
    assert!(!ok);
    assert!(
        err.trim_end()
            == "error: tenant nobody does not exist; create it first with \
                `scripts/dev.sh tenants create nobody`",
        "{err}"
    );
    let (ok, out, err) = manage(
        &db.url,
        &["keys", "create", "--tenant", "acme", "--name", "ci"],
    );
    assert!(ok, "{out}{err}");
    let key = out
        .lines()
        .find(|l| l.starts_with("fgk_"))
        .expect("the key is printed")
        .to_owned();
    let key_id = &key[4..16];
    let found = db
        .store
        .find_active_key(key_id)
        .await
        .expect("lookup")
        .expect("stored");
    assert_eq!(found.tenant_id, "acme");

    let (ok, listed, _) = manage(&db.url, &["keys", "list", "--tenant", "acme"]);
    assert!(ok);
    assert!(listed.contains(key_id) && listed.contains("\tci\t") && listed.contains("active"));
    assert!(!listed.contains(&key[17..]), "listings never show a key");
    let (ok, out, _) = manage(&db.url, &["keys", "revoke", key_id]);
    assert!(ok, "{out}");
    let (_, listed, _) = manage(&db.url, &["keys", "list"]);
    assert!(listed.contains("revoked"), "{listed}");
    assert!(
        db.store
            .find_active_key(key_id)
            .await
            .expect("lookup")
            .is_none()
    );
    db.cleanup().await;
}

/// Events of the kill test: `FLUXGATE_CRASH_TEST_EVENTS`, 100,000 by default.
fn crash_test_events() -> usize {
    std::env::var("FLUXGATE_CRASH_TEST_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

/// Posts `body` to whichever process is up now (`base` changes at each restart) until one
/// answers 200: a kill while the request is in flight gets no answer, and the same batch again
/// is idempotent (what was stored is a duplicate then).
async fn post_until_answered(
    base: &tokio::sync::watch::Receiver<(String, String)>,
    body: &Value,
) -> Value {
    let client = reqwest::Client::new();
    let deadline = Deadline::after(Duration::from_secs(300), Duration::from_millis(50));
    loop {
        let (url, key) = base.borrow().clone();
        let answer = client
            .post(format!("{url}/v1/events/batch"))
            .bearer_auth(&key)
            .json(body)
            .send()
            .await;
        if let Ok(response) = answer
            && response.status().as_u16() == 200
            && let Ok(answer) = response.json::<Value>().await
        {
            return answer;
        }
        let why = || "no process answered a batch in 300 s".to_owned();
        deadline.next(why).await;
    }
}

/// Posts `total` events of acme, `batch` a request, each batch until a process answers it
/// ([`post_until_answered`]), and answers the keys of the events it accepted: each item of an
/// answer is accepted, or a duplicate of a batch a killed process stored.
async fn post_through_kills(
    base: tokio::sync::watch::Receiver<(String, String)>,
    total: usize,
    batch: usize,
) -> Vec<EventKey> {
    let mut accepted = Vec::new();
    for first in (0..total).step_by(batch) {
        let events: Vec<Value> = (first..first + batch)
            .map(|i| {
                json!({"tenantId": "acme", "eventId": format!("k{i:07}"),
                            "eventType": "page.viewed", "payload": {"n": i}})
            })
            .collect();
        let answer = post_until_answered(&base, &json!({ "events": events })).await;
        for item in answer["items"].as_array().expect("items") {
            let status = item["status"].as_str().expect("status");
            assert!(matches!(status, "accepted" | "duplicate"), "{item}");
            accepted.push(EventKey {
                tenant_id: "acme".into(),
                event_id: item["eventId"].as_str().expect("eventId").to_owned(),
            });
        }
    }
    accepted
}

/// Batches posted while the process is killed (SIGKILL) and restarted six times, during ingest
/// and delivery: at the end every accepted event is DONE and in the warehouse exactly once.
async fn six_kills_lose_and_duplicate_nothing(kind: DbKind) {
    const BATCH: usize = 500;
    let total = crash_test_events().div_ceil(BATCH) * BATCH;
    let db = server_db(kind).await;
    let database_url = db.as_ref().map(|db| db.url.as_str());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut local = LocalProcess::start(dir.path(), database_url).await;
    let (base_tx, base) = tokio::sync::watch::channel((local.base.clone(), local.key.clone()));
    let poster = tokio::spawn(post_through_kills(base, total, BATCH));
    // Six kills spread over ingest and delivery, each followed by a restart on the same data.
    for kill in 0..6 {
        tokio::time::sleep(Duration::from_millis(if kill < 4 { 1500 } else { 700 })).await;
        local.signal("KILL");
        local.wait_exit(Duration::from_secs(20)).await;
        drop(local);
        local = LocalProcess::start(dir.path(), database_url).await;
        base_tx
            .send((local.base.clone(), local.key.clone()))
            .expect("the poster listens");
    }
    let accepted = poster.await.expect("poster");
    assert_eq!(accepted.len(), total, "every batch was answered in the end");

    let url = database_url.map_or_else(|| sqlite_url(dir.path()), str::to_owned);
    let store = open_store(&url).await;
    wait_all_done(store.as_ref(), &accepted, Duration::from_secs(600)).await;
    let (rows, stored) = warehouse(dir.path());
    assert_eq!(
        stored.len(),
        total,
        "every accepted event is in the warehouse"
    );
    assert_eq!(rows, total, "and none twice");
    drop(local);
}

per_database!(#[tokio::test] six_kills_lose_and_duplicate_nothing: sqlite, postgres);

// ---- fluxgate-local writing to BigQuery (bqemulator: REST for tables, queries and load
// uploads, gRPC for the Storage Write API), in each write mode.

/// Events with every optional field on some, posted as a client would.
fn varied_batch(tenant: &str, count: usize) -> (Value, Vec<EventKey>) {
    let events = (0..count)
        .map(|i| {
            let mut event = json!({"tenantId": tenant, "eventId": format!("b{i:05}"),
                "eventType": if i % 2 == 0 { "order.created" } else { "page.viewed" },
                "payload": {"n": i, "pi": 3.25, "nested": {"a": [1, 2.5, "x", null, true]}, "note": "é ✓"}});
            if i % 3 == 0 {
                event["source"] = json!("shop-web");
                event["metadata"] = json!({"region": "eu", "i": i});
            }
            event
        })
        .collect();
    batch_of(events)
}

/// Posted events reach the emulator's table through local in `mode`, and the rows equal the
/// stored events column for column (`ingested_at` is the worker's own time, read back).
async fn bigquery_local_delivers_in(mode: BigQueryWriteMode) {
    let bq = TestBigQuery::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalProcess::start_with("acme", dir.path(), None, &bq.env_in(mode)).await;
    let (body, keys) = varied_batch("acme", 40);
    let store = post_until_done(&local, dir.path(), &body, &keys).await;

    let rows = bq.rows().await;
    assert_eq!(rows.len(), keys.len(), "{mode:?}: one row per event");
    for row in rows {
        let stored = store
            .get_event(&row.key())
            .await
            .expect("read")
            .expect("a row of a stored event");
        assert_eq!(
            row,
            WarehouseRow::new(&stored.event, row.ingested_at),
            "{mode:?}"
        );
    }
    bq.cleanup().await;
}

#[tokio::test]
async fn bigquery_local_delivers_rows_equal_to_the_events_in_each_write_mode() {
    in_each_write_mode(bigquery_local_delivers_in).await;
}

/// `FLUXGATE_BIGQUERY_KILL_TEST_EVENTS`, 6,000 by default.
fn bigquery_kill_test_events() -> usize {
    std::env::var("FLUXGATE_BIGQUERY_KILL_TEST_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6_000)
}

/// Batches posted while local, writing to BigQuery in `mode`, is killed (SIGKILL) mid-delivery
/// and restarted: at the end every accepted event is DONE and in the table exactly once.
async fn bigquery_kills_lose_and_duplicate_nothing(mode: BigQueryWriteMode) {
    const BATCH: usize = 250;
    let total = bigquery_kill_test_events().div_ceil(BATCH) * BATCH;
    let bq = TestBigQuery::new().await;
    let env = bq.env_in(mode);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut local = LocalProcess::start_with("acme", dir.path(), None, &env).await;
    let (base_tx, base) = tokio::sync::watch::channel((local.base.clone(), local.key.clone()));
    let poster = tokio::spawn(post_through_kills(base, total, BATCH));
    // Kills while batches are being written: the table holds some of the events, not all.
    let mut mid_delivery = 0;
    for kill in 0..3 {
        tokio::time::sleep(Duration::from_millis(if kill == 0 { 700 } else { 400 })).await;
        local.signal("KILL");
        local.wait_exit(Duration::from_secs(20)).await;
        let (in_table, _) = bq.count().await;
        eprintln!("{mode:?}: kill {kill} with {in_table} of {total} events in the table");
        if in_table < total as i64 {
            mid_delivery += 1;
        }
        drop(local);
        local = LocalProcess::start_with("acme", dir.path(), None, &env).await;
        // The poster may have posted everything already.
        let _ = base_tx.send((local.base.clone(), local.key.clone()));
    }
    assert!(
        mid_delivery > 0,
        "{mode:?}: no kill landed during delivery; post more events"
    );
    let accepted = poster.await.expect("poster");
    assert_eq!(accepted.len(), total, "every batch was answered in the end");
    let store = open_store(&sqlite_url(dir.path())).await;
    wait_all_done(store.as_ref(), &accepted, Duration::from_secs(300)).await;
    let (rows, distinct) = bq.count().await;
    assert_eq!(
        distinct, total as i64,
        "{mode:?}: every accepted event is in the table"
    );
    assert_eq!(rows, total as i64, "{mode:?}: and none twice");
    drop(local);
    bq.cleanup().await;
}

#[tokio::test]
async fn bigquery_kills_lose_and_duplicate_nothing_in_each_write_mode() {
    in_each_write_mode(bigquery_kills_lose_and_duplicate_nothing).await;
}

// ---- fluxgate-local with a real queue between drain and worker, as the functions take it:
// SQS on moto (the worker long-polls it), and Pub/Sub on the declared test server of
// `fluxgate_tests::pubsub_server` (the one mock: no Pub/Sub emulator installs here), which the
// worker pulls.

/// Posts a batch to local started with `env`, and checks that every event reaches the file
/// warehouse once.
async fn local_delivers_through(env: &[(&str, String)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalProcess::start_with("acme", dir.path(), None, env).await;
    let (body, keys) = batch("acme", 120);
    post_until_done(&local, dir.path(), &body, &keys).await;
    drop(local);
    let (rows, stored) = warehouse(dir.path());
    assert_eq!((rows, stored.len()), (120, 120), "every event once");
}

#[tokio::test]
async fn local_with_sqs_delivers_through_the_queue() {
    let queue = fluxgate_tests::aws::TestQueue::create().await;
    let mut env = fluxgate_tests::aws::moto_env();
    env.push(("FLUXGATE_QUEUE", "sqs".into()));
    env.push(("FLUXGATE_SQS_QUEUE_URL", queue.url.clone()));
    local_delivers_through(&env).await;
    assert!(queue.leftovers().await.is_empty(), "every message deleted");
    queue.delete().await;
}

#[tokio::test]
async fn local_with_pubsub_delivers_through_a_pull_subscription() {
    const TOPIC: &str = "projects/fluxgate-test/topics/local";
    const SUBSCRIPTION: &str = "projects/fluxgate-test/subscriptions/local-worker";
    let server = fluxgate_tests::pubsub_server::PubsubTestServer::start(&[TOPIC]).await;
    server.add_subscription_of(TOPIC, SUBSCRIPTION);
    let env = vec![
        ("FLUXGATE_QUEUE", "pubsub".to_owned()),
        ("FLUXGATE_PUBSUB_TOPIC", TOPIC.to_owned()),
        ("FLUXGATE_PUBSUB_SUBSCRIPTION", SUBSCRIPTION.to_owned()),
        ("PUBSUB_EMULATOR_HOST", server.emulator_host()),
    ];
    local_delivers_through(&env).await;
    assert!(
        server.on_subscription(SUBSCRIPTION).is_empty(),
        "every message acknowledged"
    );
}

#[tokio::test]
async fn local_with_pubsub_needs_its_pull_subscription() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_fluxgate-local"))
        .env("FLUXGATE_DATA_DIR", dir.path())
        .env("PORT", free_port().to_string())
        .env("FLUXGATE_QUEUE", "pubsub")
        .env("FLUXGATE_PUBSUB_TOPIC", "projects/p/topics/t")
        .env("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")
        .env_remove("FLUXGATE_PUBSUB_SUBSCRIPTION")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run fluxgate-local");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("FLUXGATE_PUBSUB_SUBSCRIPTION"), "{text}");
}
