//! The events table: its schema (kept in `infra/bigquery/events_schema.json`, the same file the
//! deploy scripts give to `bq mk`), and creating dataset and table when they are missing.

use gcp_bigquery_client::Client;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::clustering::Clustering;
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use gcp_bigquery_client::model::time_partitioning::TimePartitioning;

use super::BigQueryTarget;
use crate::error::{Error, Result};

/// The table's columns in `bq mk --schema` form.
const SCHEMA_JSON: &str = include_str!("../../../../infra/bigquery/events_schema.json");

/// The DATE column the table is partitioned by (one partition per day).
pub const PARTITION_FIELD: &str = "event_date";
/// The columns the table is clustered by, in order: most queries filter by tenant, then type.
pub const CLUSTERING_FIELDS: [&str; 2] = ["tenant_id", "event_type"];

/// The events table's schema, from `infra/bigquery/events_schema.json`.
pub fn events_schema() -> Result<TableSchema> {
    let fields: Vec<TableFieldSchema> = serde_json::from_str(SCHEMA_JSON)
        .map_err(|e| Error::internal_caused("infra/bigquery/events_schema.json", e))?;
    Ok(TableSchema::new(fields))
}

fn events_table(target: &BigQueryTarget) -> Result<Table> {
    Ok(Table::new(
        &target.project,
        &target.dataset,
        &target.table,
        events_schema()?,
    )
    .description("fluxgate events, one row per (tenant_id, event_id)")
    .time_partitioning(TimePartitioning::per_day().field(PARTITION_FIELD))
    .clustering(Clustering {
        fields: Some(CLUSTERING_FIELDS.iter().map(|f| (*f).to_owned()).collect()),
    }))
}

/// The HTTP status of an error answer from BigQuery, if it was one.
pub(super) fn status_code(error: &BQError) -> Option<i64> {
    match error {
        BQError::ResponseError { error } => Some(error.error.code),
        _ => None,
    }
}

fn sink_error(what: &str, target: &BigQueryTarget, error: BQError) -> Error {
    Error::sink_caused(format!("BigQuery {what} for {target}"), error)
}

/// Makes sure the table exists: one `tables.get` when it does (the usual case), else creates
/// the dataset and the table. "Already exists" is success: another instance was quicker.
pub(super) async fn ensure(client: &Client, target: &BigQueryTarget) -> Result<()> {
    match client
        .table()
        .get(&target.project, &target.dataset, &target.table, None)
        .await
    {
        Ok(table) => {
            let partitioned_by = table
                .time_partitioning
                .as_ref()
                .and_then(|p| p.field.as_deref());
            if partitioned_by != Some(PARTITION_FIELD) {
                // Someone else made it; rows still load, but queries scan more than they need.
                tracing::warn!(table = %target, ?partitioned_by, "BigQuery table is not partitioned by {PARTITION_FIELD}");
            }
            return Ok(());
        }
        Err(e) if status_code(&e) == Some(404) => {}
        Err(e) => return Err(sink_error("tables.get", target, e)),
    }

    let mut dataset = Dataset::new(&target.project, &target.dataset);
    if let Some(location) = &target.location {
        dataset = dataset.location(location);
    }
    match client.dataset().create(dataset).await {
        Ok(_) => {
            tracing::info!(project = %target.project, dataset = %target.dataset, "created BigQuery dataset")
        }
        Err(e) if status_code(&e) == Some(409) => {}
        Err(e) => return Err(sink_error("datasets.insert", target, e)),
    }
    match client.table().create(events_table(target)?).await {
        Ok(_) => tracing::info!(table = %target, "created BigQuery table"),
        Err(e) if status_code(&e) == Some(409) => {}
        Err(e) => return Err(sink_error("tables.insert", target, e)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_file_names_the_partition_and_clustering_columns() {
        let schema = events_schema().expect("the schema file parses");
        let fields = schema.fields().as_ref().expect("fields");
        let kind = |name: &str| {
            fields
                .iter()
                .find(|f| f.name == name)
                .map(|f| serde_json::to_value(&f.r#type).expect("type serializes"))
        };
        assert_eq!(kind(PARTITION_FIELD), Some(serde_json::json!("DATE")));
        for field in CLUSTERING_FIELDS {
            assert_eq!(kind(field), Some(serde_json::json!("STRING")), "{field}");
        }
    }
}
