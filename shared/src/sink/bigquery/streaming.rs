//! Streaming inserts (`tabledata.insertAll`): rows encoded for the events table, split into
//! requests within BigQuery's limits, and each row's answer mapped back to it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BigQueryTarget;
use super::json_row::encode;
use super::rest::{Encoding, ErrorProto, Rest, path};
use crate::error::{Error, Result};
use crate::event::EventKey;
use crate::sink::{RowError, RowResult, WarehouseRow};

/// Rows per request: BigQuery's recommended maximum (the hard limit is 50,000).
pub(super) const MAX_ROWS_PER_REQUEST: usize = 500;
/// Bytes of row JSON per request: the HTTP request limit is 10 MB; the rest is left for the
/// request's own JSON around the rows. Counted before gzip, so the real body is smaller still.
pub(super) const MAX_REQUEST_BYTES: usize = 9 * 1024 * 1024;
/// `{"insertId":"…","json":…},` around each row.
const ROW_ENVELOPE_BYTES: usize = 32;
/// Longer insert ids are refused as invalid by BigQuery (128 characters; counted in bytes here
/// to be safe with non-ASCII ids).
const MAX_INSERT_ID_BYTES: usize = 128;

/// `tenant_id:event_id`, the de-duplication key; hashed when it would be too long for BigQuery
/// (still one id per key, so de-duplication keeps working).
pub(super) fn insert_id(row: &WarehouseRow) -> String {
    let id = format!("{}:{}", row.tenant_id, row.event_id);
    if id.len() <= MAX_INSERT_ID_BYTES {
        id
    } else {
        format!("sha256:{}", hex::encode(Sha256::digest(id.as_bytes())))
    }
}

/// The `tabledata.insertAll` request.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InsertAll {
    /// Valid rows are written even when others are invalid; the invalid ones come back in
    /// `insertErrors`. (Without it BigQuery refuses the whole request and marks the valid rows
    /// `stopped`.)
    skip_invalid_rows: bool,
    rows: Vec<InsertRow>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InsertRow {
    insert_id: String,
    json: serde_json::Value,
}

/// The `tabledata.insertAll` answer: the rows it refused, by their position in the request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct InsertAllAnswer {
    #[serde(default)]
    insert_errors: Vec<InsertError>,
}

#[derive(Deserialize)]
struct InsertError {
    index: Option<i64>,
    #[serde(default)]
    errors: Vec<ErrorProto>,
}

/// One encoded row and where it came from.
struct Encoded {
    index: usize,
    row: InsertRow,
    bytes: usize,
}

/// Groups rows into requests of at most `max_rows` rows and `max_bytes` bytes (a row larger
/// than `max_bytes` alone is never passed in).
fn split(rows: Vec<Encoded>, max_rows: usize, max_bytes: usize) -> Vec<Vec<Encoded>> {
    let mut requests = Vec::new();
    let mut current: Vec<Encoded> = Vec::new();
    let mut current_bytes = 0;
    for row in rows {
        if !current.is_empty()
            && (current.len() == max_rows || current_bytes + row.bytes > max_bytes)
        {
            requests.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += row.bytes;
        current.push(row);
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

/// What one call of [`insert_rows`] did.
pub(super) struct Outcome {
    results: Vec<RowResult>,
    /// The first whole-request failure, when every request sent failed as a whole.
    all_failed: Option<Error>,
    /// BigQuery answered 404: the table (or dataset) is gone.
    table_missing: bool,
}

impl Outcome {
    /// The answers (`Err` when requests were sent and all failed as a whole: nothing was
    /// written), and whether the table is gone.
    pub(super) fn into_parts(self) -> (Result<Vec<RowResult>>, bool) {
        let results = match self.all_failed {
            Some(error) => Err(error),
            None => Ok(self.results),
        };
        (results, self.table_missing)
    }
}

/// Inserts the rows and answers for each, in order. A request that fails as a whole makes its
/// rows `Transient`; rows of other requests keep their answers (they may have been written).
pub(super) async fn insert_rows(
    rest: &Rest,
    target: &BigQueryTarget,
    rows: &[WarehouseRow],
) -> Outcome {
    let mut results: Vec<RowResult> = vec![Ok(()); rows.len()];
    // A key twice in one call (a message delivered twice into one batch) is sent once and
    // both get its answer: the worker's DONE check cannot catch that case, and insert ids
    // are only best-effort (and ignored by bqemulator).
    let mut first_of_key: HashMap<EventKey, usize> = HashMap::with_capacity(rows.len());
    let mut duplicates: Vec<(usize, usize)> = Vec::new();
    let mut encoded = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        match first_of_key.entry(row.key()) {
            Entry::Occupied(first) => {
                duplicates.push((index, *first.get()));
                continue;
            }
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
        let json = match encode(row) {
            Ok(json) => json,
            Err(e) => {
                results[index] = Err(RowError::Permanent(format!("row cannot be encoded: {e}")));
                continue;
            }
        };
        let id = insert_id(row);
        let bytes = serde_json::to_vec(&json).map_or(usize::MAX, |v| v.len())
            + id.len()
            + ROW_ENVELOPE_BYTES;
        if bytes > MAX_REQUEST_BYTES {
            results[index] = Err(RowError::Permanent(format!(
                "row is {bytes} bytes; a BigQuery insert request takes at most {MAX_REQUEST_BYTES}"
            )));
            continue;
        }
        encoded.push(Encoded {
            index,
            row: InsertRow {
                insert_id: id,
                json,
            },
            bytes,
        });
    }

    let call = format!(
        "{}/insertAll",
        path(&[
            "projects",
            &target.project,
            "datasets",
            &target.dataset,
            "tables",
            &target.table
        ])
    );
    let mut sent = 0usize;
    let mut failed: Vec<Error> = Vec::new();
    let mut table_missing = false;
    for request_rows in split(encoded, MAX_ROWS_PER_REQUEST, MAX_REQUEST_BYTES) {
        sent += 1;
        let indexes: Vec<usize> = request_rows.iter().map(|r| r.index).collect();
        let request = InsertAll {
            skip_invalid_rows: true,
            rows: request_rows.into_iter().map(|r| r.row).collect(),
        };
        match rest
            .post::<InsertAllAnswer>(&call, &request, Encoding::Gzip)
            .await
        {
            Ok(answer) => apply_insert_errors(&mut results, &indexes, answer, target),
            Err(e) => {
                table_missing |= e.status() == Some(404);
                let error = e.into_sink_error(format_args!("insertAll into {target}"));
                let message = error.chain();
                tracing::warn!(table = %target, rows = indexes.len(), error = %message, "BigQuery insertAll failed");
                mark_transient(&mut results, &indexes, &message);
                failed.push(error);
            }
        }
    }
    for (duplicate, first) in duplicates {
        results[duplicate] = results[first].clone();
    }
    let all_failed = (sent > 0 && failed.len() == sent).then(|| failed.swap_remove(0));
    Outcome {
        results,
        all_failed,
        table_missing,
    }
}

fn mark_transient(results: &mut [RowResult], indexes: &[usize], message: &str) {
    for &i in indexes {
        results[i] = Err(RowError::Transient(message.to_owned()));
    }
}

/// Maps `insertErrors[].index` (a position in the request) back to the caller's rows.
/// `invalid` means the row itself is refused and will be every time: `Permanent`. Anything
/// else (`stopped` when another row was invalid, `timeout`, `backendError`, ...) is `Transient`.
fn apply_insert_errors(
    results: &mut [RowResult],
    indexes: &[usize],
    answer: InsertAllAnswer,
    target: &BigQueryTarget,
) {
    for insert_error in answer.insert_errors {
        let position = insert_error
            .index
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < indexes.len());
        let Some(position) = position else {
            tracing::warn!(table = %target, index = ?insert_error.index, "BigQuery reported an error for a row it was not sent");
            continue;
        };
        let errors = insert_error.errors;
        let permanent = errors
            .iter()
            .any(|e| e.reason.as_deref() == Some("invalid"));
        let message = errors
            .iter()
            .map(|e| {
                format!(
                    "{}{}: {}",
                    e.reason.as_deref().unwrap_or("error"),
                    e.location
                        .as_deref()
                        .filter(|l| !l.is_empty())
                        .map(|l| format!(" at {l}"))
                        .unwrap_or_default(),
                    e.message.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let message = format!("BigQuery refused the row: {message}");
        results[indexes[position]] = Err(if permanent {
            RowError::Permanent(message)
        } else {
            RowError::Transient(message)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::bigquery::json_row::tests::test_row;
    use serde_json::json;

    fn encoded(index: usize, bytes: usize) -> Encoded {
        Encoded {
            index,
            row: InsertRow {
                insert_id: String::new(),
                json: json!({}),
            },
            bytes,
        }
    }

    fn sizes(requests: &[Vec<Encoded>]) -> Vec<Vec<usize>> {
        requests
            .iter()
            .map(|r| r.iter().map(|e| e.index).collect())
            .collect()
    }

    #[test]
    fn requests_stay_within_the_row_and_byte_limits() {
        let rows = (0..1201).map(|i| encoded(i, 10)).collect();
        let requests = split(rows, 500, 1_000_000);
        assert_eq!(
            requests.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 201]
        );

        let rows = vec![
            encoded(0, 600),
            encoded(1, 300),
            encoded(2, 200),
            encoded(3, 1000),
        ];
        assert_eq!(
            sizes(&split(rows, 500, 1000)),
            vec![vec![0, 1], vec![2], vec![3]]
        );
    }

    #[test]
    fn insert_ids_are_the_key_or_its_hash_when_too_long() {
        let mut row = test_row();
        assert_eq!(insert_id(&row), "acme:e1");
        row.event_id = "x".repeat(128);
        let long = insert_id(&row);
        assert!(long.starts_with("sha256:") && long.len() <= MAX_INSERT_ID_BYTES);
        assert_eq!(long, insert_id(&row), "the same key gives the same id");
    }

    #[test]
    fn invalid_rows_are_permanent_and_others_transient() {
        let mut results = vec![Ok(()); 4];
        // As BigQuery answers: `index` is a JSON number, the rest strings.
        let error = |index: i64, reason: &str| json!({"index": index, "errors": [{"reason": reason, "location": "", "message": "m"}]});
        let answer: InsertAllAnswer = serde_json::from_value(json!({
            "kind": "bigquery#tableDataInsertAllResponse",
            "insertErrors": [error(0, "invalid"), error(1, "stopped"), error(7, "invalid")],
        }))
        .expect("an insertAll answer");
        let target = BigQueryTarget {
            project: "p".into(),
            dataset: "d".into(),
            table: "t".into(),
            location: None,
        };
        // The request carried the caller's rows 3 and 1, in that order.
        apply_insert_errors(&mut results, &[3, 1], answer, &target);
        assert!(matches!(results[3], Err(RowError::Permanent(_))));
        assert!(matches!(results[1], Err(RowError::Transient(_))));
        assert_eq!(results[0], Ok(()));
        assert_eq!(results[2], Ok(()));
    }
}
