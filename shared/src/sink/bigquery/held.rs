//! Which rows the table already holds: one query (`jobs.query`) for a redelivered batch, so a
//! crash between the warehouse's commit and the outbox's DONE does not make a second row.
//!
//! The keys go in as query parameters (never spliced into the SQL: tenant and event ids are
//! the client's text), and the rows' dates and tenants narrow the scan to their partitions and
//! clusters: the table is partitioned by `event_date` and clustered by `tenant_id`, so the
//! query reads (and bills) the few blocks those rows can be in, not the table.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use gcp_bigquery_client::Client;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_parameter_type::QueryParameterType;
use gcp_bigquery_client::model::query_parameter_value::QueryParameterValue;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::ResultSet;

use super::BigQueryTarget;
use super::json_row::date;
use crate::error::{Error, Result};
use crate::event::EventKey;
use crate::sink::WarehouseRow;

/// Keys per query; a worker batch is at most a few hundred events.
const KEYS_PER_QUERY: usize = 1_000;
/// How long BigQuery may take to answer before the call counts as failed (the batch is
/// retried; nothing is written meanwhile).
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

/// The keys of `rows` the table holds.
pub(super) async fn held(
    client: &Client,
    target: &BigQueryTarget,
    rows: &[WarehouseRow],
) -> Result<HashSet<EventKey>> {
    let mut found = HashSet::new();
    for chunk in rows.chunks(KEYS_PER_QUERY) {
        let wanted: HashSet<EventKey> = chunk.iter().map(WarehouseRow::key).collect();
        let response = client
            .job()
            .query(&target.project, request(target, chunk))
            .await
            .map_err(|e| {
                Error::sink_caused(format!("BigQuery query of held rows in {target}"), e)
            })?;
        if response.job_complete == Some(false) {
            return Err(Error::sink(format!(
                "BigQuery query of held rows in {target} did not finish within {QUERY_TIMEOUT:?}"
            )));
        }
        let mut results = ResultSet::new_from_query_response(response);
        while results.next_row() {
            let column = |name: &str| results.get_string_by_name(name).ok().flatten();
            if let (Some(tenant_id), Some(event_id)) = (column("tenant_id"), column("event_id")) {
                let key = EventKey {
                    tenant_id,
                    event_id,
                };
                // The filter is per column, so it may match keys that were not asked for.
                if wanted.contains(&key) {
                    found.insert(key);
                }
            }
        }
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
    let sql = format!(
        "SELECT DISTINCT tenant_id, event_id FROM `{}.{}.{}` \
         WHERE event_date IN UNNEST(@dates) AND tenant_id IN UNNEST(@tenants) \
         AND event_id IN UNNEST(@events)",
        target.project, target.dataset, target.table
    );
    let mut request = QueryRequest::new(sql);
    request.parameter_mode = Some("NAMED".into());
    request.query_parameters = Some(vec![
        array_parameter("dates", "DATE", dates.iter().map(String::as_str)),
        array_parameter("tenants", "STRING", tenants.into_iter()),
        array_parameter("events", "STRING", events.into_iter()),
    ]);
    request.timeout_ms = i32::try_from(QUERY_TIMEOUT.as_millis()).ok();
    request.use_query_cache = Some(false);
    if let Some(location) = &target.location {
        request.location = Some(location.clone());
    }
    request
}

fn array_parameter<'a>(
    name: &str,
    element_type: &str,
    values: impl Iterator<Item = &'a str>,
) -> QueryParameter {
    QueryParameter {
        name: Some(name.to_owned()),
        parameter_type: Some(QueryParameterType {
            r#type: "ARRAY".into(),
            array_type: Some(Box::new(QueryParameterType {
                r#type: element_type.into(),
                array_type: None,
                struct_types: None,
            })),
            struct_types: None,
        }),
        parameter_value: Some(QueryParameterValue {
            array_values: Some(
                values
                    .map(|v| QueryParameterValue {
                        array_values: None,
                        struct_values: None,
                        value: Some(v.to_owned()),
                    })
                    .collect(),
            ),
            struct_values: None,
            value: None,
        }),
    }
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
        let parameters = request.query_parameters.expect("parameters");
        let tenants = parameters[1]
            .parameter_value
            .as_ref()
            .and_then(|v| v.array_values.as_ref())
            .expect("tenants");
        assert_eq!(tenants.len(), 2);
    }
}
