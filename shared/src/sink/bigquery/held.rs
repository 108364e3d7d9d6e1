//! Which rows the table already holds: one query (`jobs.query`) for a redelivered batch, so a
//! crash between the warehouse's commit and the outbox's DONE does not make a second row.
//!
//! The keys go in as query parameters (never spliced into the SQL: tenant and event ids are
//! the client's text), and the rows' dates and tenants narrow the scan to their partitions and
//! clusters: the table is partitioned by `event_date` and clustered by `tenant_id`, so the
//! query reads (and bills) the few blocks those rows can be in, not the table.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::BigQueryTarget;
use super::json_row::date;
use super::rest::{Encoding, Rest, path};
use crate::error::{Error, Result};
use crate::event::EventKey;
use crate::sink::WarehouseRow;

/// Keys per query; a worker batch is at most a few hundred events.
const KEYS_PER_QUERY: usize = 1_000;
/// How long BigQuery may take to answer before the call counts as failed (the batch is
/// retried; nothing is written meanwhile).
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

/// The `jobs.query` request.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryRequest {
    query: String,
    use_legacy_sql: bool,
    parameter_mode: &'static str,
    query_parameters: Vec<Value>,
    timeout_ms: u64,
    use_query_cache: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<String>,
}

/// The part of a `jobs.query` answer read here: whether it finished, the column names, and
/// the rows as `{"f": [{"v": …}, …]}` in column order.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryAnswer {
    job_complete: Option<bool>,
    schema: Option<Schema>,
    #[serde(default)]
    rows: Vec<Row>,
}

#[derive(Deserialize)]
struct Schema {
    fields: Vec<Column>,
}

#[derive(Deserialize)]
struct Column {
    name: String,
}

#[derive(Deserialize)]
struct Row {
    f: Vec<Cell>,
}

#[derive(Deserialize)]
struct Cell {
    v: Value,
}

impl QueryAnswer {
    /// `(tenant_id, event_id)` of each row.
    fn keys(&self) -> Vec<EventKey> {
        let position = |name: &str| {
            self.schema
                .as_ref()
                .and_then(|s| s.fields.iter().position(|c| c.name == name))
        };
        let (Some(tenant), Some(event)) = (position("tenant_id"), position("event_id")) else {
            return Vec::new();
        };
        let text =
            |row: &Row, at: usize| row.f.get(at).and_then(|c| c.v.as_str()).map(str::to_owned);
        self.rows
            .iter()
            .filter_map(|row| {
                Some(EventKey {
                    tenant_id: text(row, tenant)?,
                    event_id: text(row, event)?,
                })
            })
            .collect()
    }
}

/// The keys of `rows` the table holds.
pub(super) async fn held(
    rest: &Rest,
    target: &BigQueryTarget,
    rows: &[WarehouseRow],
) -> Result<HashSet<EventKey>> {
    let call = format!("{}/queries", path(&["projects", &target.project]));
    let mut found = HashSet::new();
    for chunk in rows.chunks(KEYS_PER_QUERY) {
        let wanted: HashSet<EventKey> = chunk.iter().map(WarehouseRow::key).collect();
        let answer: QueryAnswer = rest
            .post(&call, &request(target, chunk), Encoding::Identity)
            .await
            .map_err(|e| e.into_sink_error(format_args!("query of held rows in {target}")))?;
        if answer.job_complete == Some(false) {
            return Err(Error::sink(format!(
                "BigQuery query of held rows in {target} did not finish within {QUERY_TIMEOUT:?}"
            )));
        }
        // The filter is per column, so it may match keys that were not asked for.
        found.extend(answer.keys().into_iter().filter(|key| wanted.contains(key)));
    }
    Ok(found)
}

/// `SELECT DISTINCT tenant_id, event_id … WHERE event_date IN … AND tenant_id IN … AND
/// event_id IN …`: a superset of the keys (each column is filtered on its own), trimmed to the
/// keys by the caller.
fn request(target: &BigQueryTarget, rows: &[WarehouseRow]) -> QueryRequest {
    let dates: BTreeSet<String> = rows.iter().map(|r| date(&r.event_date)).collect();
    let tenants: BTreeSet<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
    let events: BTreeSet<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    let query = format!(
        "SELECT DISTINCT tenant_id, event_id FROM `{}.{}.{}` \
         WHERE event_date IN UNNEST(@dates) AND tenant_id IN UNNEST(@tenants) \
         AND event_id IN UNNEST(@events)",
        target.project, target.dataset, target.table
    );
    QueryRequest {
        query,
        use_legacy_sql: false,
        parameter_mode: "NAMED",
        query_parameters: vec![
            array_parameter("dates", "DATE", dates.iter().map(String::as_str)),
            array_parameter("tenants", "STRING", tenants.into_iter()),
            array_parameter("events", "STRING", events.into_iter()),
        ],
        timeout_ms: u64::try_from(QUERY_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
        use_query_cache: false,
        location: target.location.clone(),
    }
}

/// A named `ARRAY<element_type>` query parameter.
fn array_parameter<'a>(
    name: &str,
    element_type: &str,
    values: impl Iterator<Item = &'a str>,
) -> Value {
    let values: Vec<Value> = values.map(|v| json!({ "value": v })).collect();
    json!({
        "name": name,
        "parameterType": { "type": "ARRAY", "arrayType": { "type": element_type } },
        "parameterValue": { "arrayValues": values },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::bigquery::json_row::tests::test_row;

    #[test]
    fn keys_travel_as_parameters_not_in_the_sql() {
        let mut evil = test_row();
        evil.tenant_id = "x' OR 1=1 --".into();
        let target = BigQueryTarget {
            project: "p".into(),
            dataset: "d".into(),
            table: "t".into(),
            location: None,
        };
        let request = request(&target, &[evil, test_row()]);
        assert!(!request.query.contains("OR 1=1"));
        let tenants = &request.query_parameters[1]["parameterValue"]["arrayValues"];
        assert_eq!(
            tenants,
            &json!([{"value": "acme"}, {"value": "x' OR 1=1 --"}])
        );
    }

    #[test]
    fn answers_are_read_by_column_name() {
        let answer: QueryAnswer = serde_json::from_value(json!({
            "jobComplete": true,
            "schema": {"fields": [{"name": "event_id", "type": "STRING"}, {"name": "tenant_id", "type": "STRING"}]},
            "rows": [{"f": [{"v": "e1"}, {"v": "acme"}]}, {"f": [{"v": "e2"}, {"v": null}]}],
        }))
        .expect("a jobs.query answer");
        assert_eq!(
            answer.keys(),
            vec![EventKey {
                tenant_id: "acme".into(),
                event_id: "e1".into()
            }]
        );
    }
}
