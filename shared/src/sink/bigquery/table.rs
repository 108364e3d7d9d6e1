//! The events table: its schema (kept in `infra/bigquery/events_schema.json`, the same file the
//! deploy scripts give to `bq mk`), and creating dataset and table when they are missing.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::BigQueryTarget;
use super::rest::{ApiError, Encoding, Rest, path};
use crate::error::{Error, Result};

/// The table's columns in `bq mk --schema` form.
const SCHEMA_JSON: &str = include_str!("../../../../infra/bigquery/events_schema.json");

/// The DATE column the table is partitioned by (one partition per day).
pub const PARTITION_FIELD: &str = "event_date";
/// The columns the table is clustered by, in order: most queries filter by tenant, then type.
pub const CLUSTERING_FIELDS: [&str; 2] = ["tenant_id", "event_type"];

/// One column of the events table, as `bq mk --schema` and the REST API both write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaField {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The events table's columns, from `infra/bigquery/events_schema.json`.
pub fn events_schema() -> Result<Vec<SchemaField>> {
    serde_json::from_str(SCHEMA_JSON)
        .map_err(|e| Error::internal_caused("infra/bigquery/events_schema.json", e))
}

/// The `tables.insert` resource: the schema, one partition per day, clustered.
fn events_table(target: &BigQueryTarget) -> Result<serde_json::Value> {
    Ok(json!({
        "tableReference": {
            "projectId": target.project,
            "datasetId": target.dataset,
            "tableId": target.table,
        },
        "description": "fluxgate events, one row per (tenant_id, event_id)",
        "schema": { "fields": events_schema()? },
        "timePartitioning": { "type": "DAY", "field": PARTITION_FIELD },
        "clustering": { "fields": CLUSTERING_FIELDS },
    }))
}

/// The part of a `tables.get` answer the sink reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TableInfo {
    time_partitioning: Option<TimePartitioning>,
}

#[derive(Deserialize)]
struct TimePartitioning {
    field: Option<String>,
}

fn sink_error(what: &str, target: &BigQueryTarget, error: ApiError) -> Error {
    error.into_sink_error(format_args!("{what} for {target}"))
}

/// Makes sure the table exists: one `tables.get` when it does (the usual case), else creates
/// the dataset and the table. "Already exists" is success: another instance was quicker.
pub(super) async fn ensure(rest: &Rest, target: &BigQueryTarget) -> Result<()> {
    let project = path(&["projects", &target.project]);
    let datasets = format!("{project}/datasets");
    let tables = format!("{datasets}/{}/tables", path(&[&target.dataset]));
    match rest
        .get::<TableInfo>(&format!("{tables}/{}", path(&[&target.table])), &[])
        .await
    {
        Ok(table) => {
            let partitioned_by = table.time_partitioning.and_then(|p| p.field);
            if partitioned_by.as_deref() != Some(PARTITION_FIELD) {
                // Someone else made it; rows still load, but queries scan more than they need.
                tracing::warn!(table = %target, ?partitioned_by, "BigQuery table is not partitioned by {PARTITION_FIELD}");
            }
            return Ok(());
        }
        Err(e) if e.status() == Some(404) => {}
        Err(e) => return Err(sink_error("tables.get", target, e)),
    }

    let mut dataset = json!({
        "datasetReference": { "projectId": target.project, "datasetId": target.dataset },
    });
    if let Some(location) = &target.location {
        dataset["location"] = json!(location);
    }
    match rest
        .post::<serde::de::IgnoredAny>(&datasets, &dataset, Encoding::Identity)
        .await
    {
        Ok(_) => {
            tracing::info!(project = %target.project, dataset = %target.dataset, "created BigQuery dataset")
        }
        Err(e) if e.status() == Some(409) => {}
        Err(e) => return Err(sink_error("datasets.insert", target, e)),
    }
    match rest
        .post::<serde::de::IgnoredAny>(&tables, &events_table(target)?, Encoding::Identity)
        .await
    {
        Ok(_) => tracing::info!(table = %target, "created BigQuery table"),
        Err(e) if e.status() == Some(409) => {}
        Err(e) => return Err(sink_error("tables.insert", target, e)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_file_names_the_partition_and_clustering_columns() {
        let fields = events_schema().expect("the schema file parses");
        let kind = |name: &str| {
            fields
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.kind.as_str())
        };
        assert_eq!(kind(PARTITION_FIELD), Some("DATE"));
        for field in CLUSTERING_FIELDS {
            assert_eq!(kind(field), Some("STRING"), "{field}");
        }
    }
}
