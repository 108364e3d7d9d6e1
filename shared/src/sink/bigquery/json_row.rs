//! A row as BigQuery's JSON interfaces take it: insertAll's `json` (streaming) and the lines of
//! a newline-delimited JSON load job (load) carry the same object.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::json_object::JsonObject;
use crate::sink::WarehouseRow;

/// One row as the events table takes it through insertAll and NDJSON loads: JSON columns as strings holding
/// JSON (what the streaming API expects for the JSON type), timestamps in RFC 3339 with
/// microseconds (BigQuery's precision), dates as `YYYY-MM-DD`.
#[derive(Debug, Serialize)]
struct TableRow<'a> {
    tenant_id: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    event_ts: String,
    event_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    payload: String,
    payload_sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    received_at: String,
    ingested_at: String,
}

pub(super) fn timestamp(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub(super) fn date(day: &NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

pub(super) fn encode(row: &WarehouseRow) -> std::result::Result<Value, serde_json::Error> {
    let table_row = TableRow {
        tenant_id: &row.tenant_id,
        event_id: &row.event_id,
        event_type: &row.event_type,
        event_ts: timestamp(&row.event_ts),
        event_date: date(&row.event_date),
        source: row.source.as_deref(),
        // The canonical text as it is: the client's digits, not an f64's.
        payload: row.payload.get().to_owned(),
        payload_sha256: &row.payload_sha256,
        metadata: row.metadata.as_ref().map(|m| m.get().to_owned()),
        correlation_id: row.correlation_id.as_deref(),
        received_at: timestamp(&row.received_at),
        ingested_at: timestamp(&row.ingested_at),
    };
    serde_json::to_value(table_row)
}

/// One line of a newline-delimited JSON load job: the same columns as [`TableRow`], but the
/// JSON columns as the JSON itself. (A load job keeps a string given for a JSON column as a
/// JSON string; insertAll parses it.)
#[derive(Debug, Serialize)]
struct LoadLine<'a> {
    tenant_id: &'a str,
    event_id: &'a str,
    event_type: &'a str,
    event_ts: String,
    event_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    payload: &'a JsonObject,
    payload_sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a JsonObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    received_at: String,
    ingested_at: String,
}

/// The row as one NDJSON line (without the newline).
pub(super) fn encode_line(row: &WarehouseRow) -> std::result::Result<String, serde_json::Error> {
    serde_json::to_string(&LoadLine {
        tenant_id: &row.tenant_id,
        event_id: &row.event_id,
        event_type: &row.event_type,
        event_ts: timestamp(&row.event_ts),
        event_date: date(&row.event_date),
        source: row.source.as_deref(),
        payload: &row.payload,
        payload_sha256: &row.payload_sha256,
        metadata: row.metadata.as_ref(),
        correlation_id: row.correlation_id.as_deref(),
        received_at: timestamp(&row.received_at),
        ingested_at: timestamp(&row.ingested_at),
    })
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
