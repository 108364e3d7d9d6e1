//! Files a test reads back: the repository's own (templates, manifests, sources), and the
//! local-file warehouse's part files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The repository's root folder (the workspace; `tests/` is one of its crates).
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// Every file below `dir`, at any depth.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Whether `path` holds warehouse rows: a part file (`part-….jsonl`), or one the sink still
/// has open (`.part-….jsonl.open`, made visible when it rolls or at the next start). Both
/// count, because these helpers check what the sink made durable, not when readers see it.
pub fn is_warehouse_part(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".jsonl") || n.ends_with(".jsonl.open"))
}

/// The local-file warehouse's rows (`LocalFileSink` under `root`), durable ones included (see
/// [`is_warehouse_part`]), by event id, each with its partition columns put back from the
/// Hive-style path.
pub fn warehouse_file_rows(root: &Path) -> HashMap<String, Vec<Value>> {
    // A running sink renames a part when it rolls (`.part-….jsonl.open` to `part-….jsonl`), so
    // a file listed may be gone when it is read: it is there under its new name, and a second
    // look finds it. A rename is atomic, so no row is ever in neither file.
    for _ in 0..10 {
        match read_warehouse(root) {
            Ok(rows) => return rows,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read the warehouse under {}: {e}", root.display()),
        }
    }
    panic!("the warehouse under {} kept changing", root.display())
}

fn read_warehouse(root: &Path) -> std::io::Result<HashMap<String, Vec<Value>>> {
    let mut rows: HashMap<String, Vec<Value>> = HashMap::new();
    for path in files_under(root) {
        if is_warehouse_part(&path) {
            // Hive layout: the partition columns are in the path, not in the rows.
            let partitions: Vec<(String, String)> = path
                .iter()
                .filter_map(|part| part.to_str()?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            for line in std::fs::read_to_string(&path)?.lines() {
                let mut row: Value = serde_json::from_str(line).expect("row");
                for (column, value) in &partitions {
                    row[column] = json!(value);
                }
                let id = row["event_id"].as_str().expect("event_id").to_string();
                rows.entry(id).or_default().push(row);
            }
        }
    }
    Ok(rows)
}

/// How many rows the local-file warehouse under `root` holds, of every event.
pub fn warehouse_row_count(root: &Path) -> usize {
    warehouse_file_rows(root).values().map(Vec::len).sum()
}
