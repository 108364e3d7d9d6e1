//! The drain binary as a Cloud Run job (`CLOUD_RUN_JOB` set): one run, exit status 0 only when
//! it worked, and a SIGTERM that lets the rounds in flight settle. Runs the real binary against
//! a SQLite database and the Pub/Sub test server (the suite's one mock; see there why).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fluxgate::event::Event;
use fluxgate::store::OutboxStatus;
use fluxgate_tests::pubsub_server::PubsubTestServer;
use fluxgate_tests::{TestDb, event};

const TOPIC: &str = "projects/fluxgate-test/topics/events";

fn job(db: &TestDb, server: &PubsubTestServer, topic: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fluxgate-outbox-drain"));
    command
        .env("CLOUD_RUN_JOB", "fluxgate-outbox-drain")
        .env("DATABASE_URL", &db.url)
        .env("FLUXGATE_QUEUE", "pubsub")
        .env("FLUXGATE_PUBSUB_TOPIC", topic)
        .env("PUBSUB_EMULATOR_HOST", server.emulator_host())
        .env("FLUXGATE_PUBSUB_PUBLISH_TIMEOUT", "2s")
        .env("FLUXGATE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("FLUXGATE_PUBSUB_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

async fn seed(db: &TestDb, prefix: &str, count: usize) -> Vec<Event> {
    let events: Vec<Event> = (0..count)
        .map(|i| event("acme", &format!("{prefix}{i:03}")))
        .collect();
    db.store.insert_events(&events).await.expect("insert");
    events
}

async fn count(db: &TestDb, events: &[Event], status: OutboxStatus) -> usize {
    let keys: Vec<_> = events.iter().map(Event::key).collect();
    let statuses = db.store.statuses(&keys).await.expect("statuses");
    statuses.values().filter(|s| **s == status).count()
}

/// Events in the messages the server took (the drain packs them).
fn carried(server: &PubsubTestServer) -> usize {
    let published = server.published();
    fluxgate_tests::unpack(published.iter().map(|m| m.data.as_slice())).len()
}

async fn finish(command: Command) -> std::process::Output {
    let mut command = command;
    tokio::task::spawn_blocking(move || command.output().expect("run fluxgate-outbox-drain"))
        .await
        .expect("join")
}

#[tokio::test]
async fn a_job_runs_once_and_its_exit_status_tells_whether_it_worked() {
    let db = TestDb::sqlite().await;
    let server = PubsubTestServer::start(&[TOPIC]).await;
    let events = seed(&db, "ok", 12).await;

    let output = finish(job(&db, &server, TOPIC)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let finished = stdout
        .lines()
        .find(|l| l.contains("drain job finished"))
        .expect("a summary line");
    let line: serde_json::Value = serde_json::from_str(finished).expect("the summary is JSON");
    let summary: serde_json::Value =
        serde_json::from_str(line["summary"].as_str().expect("summary field")).expect("json");
    assert_eq!(summary["published"], 12, "{line}");
    assert_eq!(count(&db, &events, OutboxStatus::Published).await, 12);
    assert_eq!(carried(&server), 12);

    // A topic that does not exist: nothing can be published, the job fails, nothing is lost.
    let more = seed(&db, "lost", 3).await;
    let output = finish(job(&db, &server, "projects/fluxgate-test/topics/missing")).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(count(&db, &more, OutboxStatus::Pending).await, 3);

    // Bad settings fail before anything runs.
    let output = finish(job(&db, &server, "not-a-topic")).await;
    assert_eq!(output.status.code(), Some(1));
}

#[tokio::test]
async fn sigterm_during_a_job_settles_the_rounds_in_flight_and_leaves_the_rest() {
    let db = TestDb::sqlite().await;
    let server = PubsubTestServer::start(&[TOPIC]).await;
    let events = seed(&db, "e", 30).await;
    server.hold();
    let mut command = job(&db, &server, TOPIC);
    command.env("FLUXGATE_DRAIN_BATCH_SIZE", "10");
    // Only stdout is read while the job runs; stderr goes to the test's own output.
    command.stderr(Stdio::inherit());
    let mut child = command.spawn().expect("start fluxgate-outbox-drain");
    let pid = child.id();
    // The job's log, line by line as it comes, so the test can wait for what it reports.
    let (lines, log) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            let _ = lines.send(line);
        }
        all
    });

    server.until_a_request_waits(Duration::from_secs(30)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    // The publish is answered only once the job has logged that the signal landed (it stops
    // new rounds right after logging it), whatever the machine's load.
    let landed = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match log.recv_timeout(left) {
                Ok(line) if line.contains("SIGTERM received") => return Ok(()),
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        Err(seen.join("\n"))
    })
    .await
    .expect("join");
    if let Err(seen) = landed {
        panic!("the job never logged the SIGTERM within 30 s:\n{seen}");
    }
    server.release();
    let status = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    let stdout = reader.join().expect("the log reader");
    assert!(status.success(), "{stdout}");
    assert!(stdout.contains("shutdown"), "{stdout}");
    // Two rounds were in flight: the one held at the queue, and the next, claimed beside it
    // before the signal (pipelined rounds). Both settle; nothing more is claimed.
    assert_eq!(count(&db, &events, OutboxStatus::Published).await, 20);
    assert_eq!(count(&db, &events, OutboxStatus::Pending).await, 10);
    assert_eq!(carried(&server), 20);
}
