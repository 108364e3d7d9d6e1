//! A row as BigQuery's JSON interfaces take it: insertAll's `json` (streaming) and the lines of
//! a newline-delimited JSON load job (load) carry the same object.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::json_object::JsonObject;
use crate::sink::{RowError, RowResult, WarehouseRow};

/// One row as the events table takes it: timestamps in RFC 3339 with microseconds (BigQuery's
/// precision), dates as `YYYY-MM-DD`. `J` is how the JSON columns go: insertAll wants strings
/// holding JSON (it parses them), while an NDJSON load job wants the JSON itself (it keeps a
/// string as a JSON string).
#[derive(Debug, Serialize)]
struct TableRow<'a, J> {
    tenant_id: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    event_ts: String,
    event_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    payload: J,
    payload_sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<J>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    received_at: String,
    ingested_at: String,
}

impl<'a, J> TableRow<'a, J> {
    /// The row's columns, its JSON columns through `json`.
    fn of(row: &'a WarehouseRow, json: impl Fn(&'a JsonObject) -> J) -> Self {
        Self {
            tenant_id: &row.tenant_id,
            event_id: &row.event_id,
            event_type: &row.event_type,
            event_ts: timestamp(&row.event_ts),
            event_date: date(&row.event_date),
            source: row.source.as_deref(),
            payload: json(&row.payload),
            payload_sha256: &row.payload_sha256,
            metadata: row.metadata.as_ref().map(&json),
            correlation_id: row.correlation_id.as_deref(),
            received_at: timestamp(&row.received_at),
            ingested_at: timestamp(&row.ingested_at),
        }
    }
}

pub(super) fn timestamp(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub(super) fn date(day: &NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// The row for insertAll: the JSON columns as their canonical text (the client's digits, not
/// an f64's).
pub(super) fn encode(row: &WarehouseRow) -> std::result::Result<Value, serde_json::Error> {
    serde_json::to_value(TableRow::of(row, |json| json.get().to_owned()))
}

/// The row as one NDJSON line (without the newline), the JSON columns as JSON.
pub(super) fn encode_line(row: &WarehouseRow) -> std::result::Result<String, serde_json::Error> {
    serde_json::to_string(&TableRow::of(row, |json| json))
}

/// BigQuery's TIMESTAMP and DATE span 0001-01-01 to 9999-12-31; a row outside is refused as
/// invalid by every write path. Checked before sending, so a batch is not sent to be refused
/// (and the answer names the column).
pub(super) fn out_of_range(row: &WarehouseRow) -> Option<String> {
    use chrono::Datelike;
    let columns = [
        ("event_ts", row.event_ts.year()),
        ("event_date", row.event_date.year()),
        ("received_at", row.received_at.year()),
        ("ingested_at", row.ingested_at.year()),
    ];
    columns
        .into_iter()
        .find(|(_, year)| !(1..=9999).contains(year))
        .map(|(column, year)| {
            format!(
                "invalid: {column} is in the year {year}; BigQuery takes 0001-01-01 to 9999-12-31"
            )
        })
}

/// Each row encoded by `encode`, unless it cannot be sent (a date BigQuery does not take, or
/// JSON that does not encode): the answers, `Permanent` for those rows and `Ok` for the rest,
/// and the encoded rows with their positions.
pub(super) fn encode_each<T, E: std::fmt::Display>(
    rows: &[WarehouseRow],
    encode: impl Fn(&WarehouseRow) -> std::result::Result<T, E>,
) -> (Vec<RowResult>, Vec<(usize, T)>) {
    let mut results: Vec<RowResult> = vec![Ok(()); rows.len()];
    let mut encoded = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        if let Some(reason) = out_of_range(row) {
            results[i] = Err(RowError::Permanent(format!(
                "BigQuery refused the row: {reason}"
            )));
            continue;
        }
        match encode(row) {
            Ok(value) => encoded.push((i, value)),
            Err(e) => {
                results[i] = Err(RowError::Permanent(format!("row cannot be encoded: {e}")));
            }
        }
    }
    (results, encoded)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_columns_are_strings_and_timestamps_have_microseconds() {
        let json = encode(&test_row()).expect("encodes");
        assert_eq!(json["payload"], json!(r#"{"a":1}"#));
        assert_eq!(json["event_ts"], json!("2026-11-22T01:02:03.456789Z"));
        assert_eq!(json["event_date"], json!("2026-11-22"));
        assert!(json.get("metadata").is_none(), "absent, so NULL");
    }

    #[test]
    fn load_lines_carry_json_columns_as_json() {
        let line = encode_line(&test_row()).expect("encodes");
        assert!(line.contains(r#""payload":{"a":1}"#), "{line}");
        assert!(!line.contains('\n'));
    }

    pub(crate) fn test_row() -> WarehouseRow {
        let at = DateTime::parse_from_rfc3339("2026-11-22T01:02:03.456789Z")
            .expect("time")
            .with_timezone(&Utc);
        WarehouseRow {
            tenant_id: "acme".into(),
            event_id: "e1".into(),
            event_type: "t".into(),
            event_ts: at,
            event_date: at.date_naive(),
            source: None,
            payload: json!({"a": 1}).as_object().cloned().expect("object").into(),
            payload_sha256: "00".into(),
            metadata: None,
            correlation_id: None,
            received_at: at,
            ingested_at: at,
        }
    }
}
