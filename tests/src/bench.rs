//! What the benchmarks in `tests/benches` share: their settings from the environment, rates
//! and percentiles, outbox counts by plain SQL, and `fluxgate-local` started from its release
//! binary as a user starts it; in [`raw`], the raw SQL baselines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Executor, MySqlPool, PgPool, SqlitePool};
use tempfile::TempDir;

use crate::{DbKind, TestDb, files_under};

pub mod raw;

/// `FLUXGATE_BENCH_SCALE`: a multiple of each benchmark's default amount of work (at least 1).
pub fn scale() -> usize {
    env_number("FLUXGATE_BENCH_SCALE", 1)
}

/// `FLUXGATE_BENCH_ROUNDS`: rounds of each side, of which the best counts (default 3).
pub fn rounds() -> usize {
    env_number("FLUXGATE_BENCH_ROUNDS", 3)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// `FLUXGATE_BENCH_DATABASES` (`postgres,mariadb,sqlite`; `mysql` means MariaDB), or `default`.
pub fn databases(default: &str) -> Vec<DbKind> {
    let chosen = std::env::var("FLUXGATE_BENCH_DATABASES").unwrap_or_else(|_| default.into());
    chosen
        .split(',')
        .map(|name| {
            DbKind::named(name.trim())
                .unwrap_or_else(|| panic!("FLUXGATE_BENCH_DATABASES: unknown database {name:?}"))
        })
        .collect()
}

/// The multi-threaded tokio runtime a benchmark's `main` runs its rounds on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

/// The nearest-rank percentile `p` (0..=1) of sorted, non-empty values.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The machine's 1-minute load average (`/proc/loadavg`), to print beside a result: other
/// work on a small machine moves these figures a lot.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Runs `pgbench` with `args` against `url` and answers how long it took (scripts/bench.sh
/// installs it).
pub fn pgbench<I, S>(args: I, url: &str) -> Duration
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let started = Instant::now();
    let output = Command::new("pgbench")
        .args(args)
        .arg(url)
        .output()
        .expect("run pgbench (scripts/bench.sh installs it)");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

/// A binary of the release profile (`cargo build --release`), as it is deployed.
pub fn release_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let binary = target.join("release").join(name);
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release --bin {name}` (scripts/bench.sh does)",
        binary.display()
    );
    binary
}

/// A plain connection pool on a test database, for what the store does not offer: counts
/// while another process works, and raw SQL baselines.
pub enum Sql {
    Postgres(PgPool),
    MariaDb(MySqlPool),
    Sqlite(SqlitePool),
}

impl Sql {
    pub async fn connect(db: &TestDb) -> Self {
        let connected = match db.kind {
            DbKind::Postgres => PgPool::connect(&db.url).await.map(Self::Postgres),
            DbKind::MariaDb => MySqlPool::connect(&db.url).await.map(Self::MariaDb),
            DbKind::Sqlite => SqlitePool::connect(&db.url).await.map(Self::Sqlite),
        };
        connected.unwrap_or_else(|err| panic!("connect to the {} test database: {err}", db.kind))
    }

    /// The outbox rows in `status`.
    pub async fn count(&self, status: &str) -> i64 {
        const COUNT: &str = "SELECT count(*) FROM outbox WHERE status = ";
        let counted = match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{COUNT}$1")))
                    .bind(status)
                    .fetch_one(pool)
                    .await
            }
            Self::MariaDb(pool) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{COUNT}?")))
                    .bind(status)
                    .fetch_one(pool)
                    .await
            }
            Self::Sqlite(pool) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{COUNT}?")))
                    .bind(status)
                    .fetch_one(pool)
                    .await
            }
        };
        counted.unwrap_or_else(|err| panic!("count {status} outbox rows: {err}"))
    }

    /// Fresh planner statistics, so a run does not wait on the server's own schedule for them.
    pub async fn analyze(&self) {
        let analyzed = match self {
            Self::Postgres(pool) => pool
                .execute("ANALYZE events; ANALYZE outbox")
                .await
                .map(drop),
            Self::MariaDb(pool) => pool.execute("ANALYZE TABLE events, outbox").await.map(drop),
            Self::Sqlite(pool) => pool.execute("ANALYZE").await.map(drop),
        };
        analyzed.expect("analyze");
    }

    /// Waits (polling every 50 ms) until `events` outbox rows are DONE, while `local` runs.
    pub async fn wait_all_done(&self, events: usize, local: &mut LocalProcess, limit: Duration) {
        let started = Instant::now();
        while self.count("DONE").await < events as i64 {
            local.assert_running();
            if started.elapsed() > limit {
                let counts: Vec<String> = status_counts(self).await;
                panic!(
                    "not every outbox row was DONE after {limit:?}: {}",
                    counts.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn status_counts(sql: &Sql) -> Vec<String> {
    let mut counts = Vec::new();
    for status in ["PENDING", "PUBLISHED", "DONE", "FAILED", "DEAD"] {
        counts.push(format!("{status} {}", sql.count(status).await));
    }
    counts
}

/// The release `fluxgate-local` binary serving a database: in-process queue, the file
/// warehouse in a temporary folder of its own, its HTTP API on a free loopback port. Settings
/// `FLUXGATE_*` of the environment are passed on (not those of the benchmarks and tests), so
/// `FLUXGATE_DRAIN_BATCH_SIZE=500 scripts/bench.sh drain` measures that setting. Killed when
/// dropped.
pub struct LocalProcess {
    child: Child,
    data_dir: TempDir,
    pub address: SocketAddr,
}

impl LocalProcess {
    pub fn spawn(database_url: &str) -> Self {
        Self::spawn_with(database_url, &[])
    }

    /// [`Self::spawn`] with more settings (`env`) on top of those passed on.
    pub fn spawn_with(database_url: &str, env: &[(&str, String)]) -> Self {
        // scripts/bench.sh copies the binary it built here, out of reach of other builds that
        // share the target folder.
        let binary = std::env::var_os("FLUXGATE_BENCH_LOCAL_BINARY")
            .map(PathBuf::from)
            .unwrap_or_else(|| release_binary("fluxgate-local"));
        Self::spawn_function_with(&binary, database_url, env.iter().cloned())
    }

    /// Starts another function's binary (`fluxgate-ingest`, …) the same way: it serves HTTP on
    /// `PORT` (all interfaces; the benchmarks call it on loopback).
    pub fn spawn_function(binary: &Path, database_url: &str) -> Self {
        Self::spawn_function_with(binary, database_url, std::iter::empty::<(&str, String)>())
    }

    /// [`Self::spawn_function`] with more settings of its own (a queue, say), given after those
    /// passed on from the environment.
    pub fn spawn_function_with<K, V>(
        binary: &Path,
        database_url: &str,
        settings: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let data_dir = tempfile::Builder::new()
            .prefix("fluxgate-bench-")
            .tempdir()
            .expect("temporary data folder");
        let address = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let log = std::fs::File::create(data_dir.path().join("fluxgate-local.log")).expect("log");
        let passed_on = std::env::vars().filter(|(name, _)| {
            name == "RUST_LOG"
                || (name.starts_with("FLUXGATE_")
                    && !name.starts_with("FLUXGATE_BENCH_")
                    && !name.starts_with("FLUXGATE_TEST_"))
        });
        let child = Command::new(binary)
            .env_clear()
            .envs(passed_on)
            .env("DATABASE_URL", database_url)
            .env("FLUXGATE_DATA_DIR", data_dir.path())
            .env("FLUXGATE_BIND", address.ip().to_string())
            .env("PORT", address.port().to_string())
            .envs(settings)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", binary.display()));
        Self {
            child,
            data_dir,
            address,
        }
    }

    /// Waits until `GET /healthz` answers.
    pub async fn ready(&mut self) {
        let url = format!("http://{}/healthz", self.address);
        let deadline = crate::Deadline::after(Duration::from_secs(30), Duration::from_millis(20));
        loop {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            self.assert_running();
            deadline
                .next(|| format!("fluxgate-local did not answer {url} within 30 s"))
                .await;
        }
    }

    /// Panics with the end of its log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(self.data_dir.path().join("fluxgate-local.log"))
                .unwrap_or_default();
            let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            panic!("fluxgate-local exited ({status}); its last log lines, newest first:\n{tail}");
        }
    }

    /// Its peak resident set so far, in KiB (`VmHWM` of `/proc/<pid>/status`; Linux only).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The files of its warehouse.
    pub fn warehouse_files(&self) -> usize {
        let dir = self.data_dir.path().join("warehouse");
        if dir.exists() {
            files_under(&dir).len()
        } else {
            0
        }
    }

    /// The development API key it made on its first start (`<data dir>/dev-api-key`).
    pub fn dev_key(&self) -> String {
        let path = self.data_dir.path().join("dev-api-key");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
            .trim()
            .to_owned()
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
