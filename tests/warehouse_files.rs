//! The local-file warehouse on a real folder: rows are durable when a write answers, reach
//! readers when their part rolls (by age, rows, or a flush), are written once however many
//! batches carry them at once, and survive a crash that leaves a part open, torn last line
//! and all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use fluxgate::sink::{LocalFileSink, RollPolicy, Sink, WarehouseRow};
use fluxgate_tests::{event, files_under, warehouse_row_count};

/// Part files a reader sees (`part-….jsonl`), and the rows each holds.
fn visible_parts(root: &Path) -> Vec<(PathBuf, usize)> {
    files_under(root)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .map(|path| {
            let rows = std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count();
            (path, rows)
        })
        .collect()
}

fn rows(tenant: &str, ids: &[&str]) -> Vec<WarehouseRow> {
    ids.iter()
        .map(|id| WarehouseRow::new(&event(tenant, id), fluxgate::now()))
        .collect()
}

fn policy(max_age: TimeDelta, max_rows: u64) -> RollPolicy {
    RollPolicy {
        max_age,
        max_rows,
        ..RollPolicy::default()
    }
}

async fn open(dir: &Path, policy: RollPolicy) -> LocalFileSink {
    LocalFileSink::open_with(dir, policy).await.expect("open")
}

/// Writes rows of acme with these ids; every one is answered as written.
async fn write(sink: &LocalFileSink, ids: &[&str]) {
    let answers = sink.write_rows(&rows("acme", ids)).await.expect("write");
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
}

/// Waits (up to 10 s) until readers see `expected` rows.
async fn until_visible(root: &Path, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen: usize = visible_parts(root).iter().map(|(_, rows)| rows).sum();
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "readers see {seen} rows, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rows_are_durable_at_once_and_visible_when_their_part_rolls_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = open(dir.path(), policy(TimeDelta::milliseconds(300), 1000)).await;
    write(&sink, &["a", "b"]).await;
    assert_eq!(warehouse_row_count(dir.path()), 2, "durable when answered");
    assert!(
        visible_parts(dir.path()).is_empty(),
        "a part is hidden while it is open"
    );
    write(&sink, &["c"]).await;
    until_visible(dir.path(), 3).await;
    assert_eq!(
        visible_parts(dir.path()).len(),
        1,
        "writes within the age limit share one part"
    );
}

#[tokio::test]
async fn a_part_rolls_at_its_row_limit_and_a_flush_closes_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = open(dir.path(), policy(TimeDelta::hours(1), 2)).await;
    for id in ["a", "b", "c", "d", "e"] {
        write(&sink, &[id]).await;
    }
    let parts = visible_parts(dir.path());
    assert_eq!(
        parts.iter().map(|(_, rows)| rows).collect::<Vec<_>>(),
        vec![&2, &2],
        "two full parts rolled, {parts:?}"
    );
    sink.flush().await.expect("flush");
    until_visible(dir.path(), 5).await;
}

#[tokio::test]
async fn concurrent_batches_carrying_one_key_write_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Arc::new(LocalFileSink::open(dir.path()).await.expect("open"));
    let writers: Vec<_> = (0..8)
        .map(|n| {
            let sink = sink.clone();
            let ids = ["same", if n % 2 == 0 { "even" } else { "odd" }];
            tokio::spawn(async move { sink.write_rows(&rows("acme", &ids)).await })
        })
        .collect();
    for writer in writers {
        let answers = writer.await.expect("join").expect("write");
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    }
    sink.flush().await.expect("flush");
    until_visible(dir.path(), 3).await;
}

#[tokio::test]
async fn a_part_left_open_by_a_crash_is_kept_whole_lines_only_and_indexed() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let sink = open(dir.path(), policy(TimeDelta::hours(1), 1000)).await;
        write(&sink, &["kept"]).await;
        // A crash: the writer never closes the part. Leak the sink so nothing rolls it.
        std::mem::forget(sink);
    }
    let open_part = files_under(dir.path())
        .into_iter()
        .find(|path| path.to_string_lossy().ends_with(".jsonl.open"))
        .expect("the part the crash left open");
    // The crash tore a write that was never acknowledged.
    let mut torn = std::fs::read(&open_part).expect("read");
    torn.extend_from_slice(br#"{"event_id":"torn","payl"#);
    std::fs::write(&open_part, torn).expect("tear");

    let sink = LocalFileSink::open(dir.path()).await.expect("reopen");
    let parts = visible_parts(dir.path());
    assert_eq!(parts.len(), 1, "the open part became visible: {parts:?}");
    assert_eq!(parts[0].1, 1, "the torn line was cut off");
    write(&sink, &["kept"]).await;
    sink.flush().await.expect("flush");
    assert_eq!(
        warehouse_row_count(dir.path()),
        1,
        "the recovered row is known: its redelivery adds nothing"
    );
}
