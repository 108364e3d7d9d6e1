//! Batch load jobs (`FLUXGATE_BIGQUERY_WRITE_MODE=load`): each worker batch is uploaded as one
//! newline-delimited JSON file to the upload endpoint (`uploadType=multipart`) and appended by
//! a load job (`WRITE_APPEND`). Loading is free and the BigQuery sandbox allows it (it refuses
//! streaming); rows are queryable once the job is done (seconds), and a table takes at most
//! 1,500 load jobs a day, so batches must be large (see docs/CONFIGURATION.md).
//!
//! Exactly once: the job id is derived from the batch (a hash of the table and its sorted
//! keys), so a batch tried again finds its job ("409 already exists") and reads that job's
//! outcome instead of loading twice. A job id is kept forever by BigQuery, including a failed
//! job's, so a batch whose job failed for a passing reason takes the next id of its series
//! (`…_1`, `…_2`, …). A load job is all or nothing; when BigQuery refuses the file as invalid,
//! the batch is split in halves and each loaded on its own, until the refused row is alone and
//! answered `Permanent` with BigQuery's reason (extra jobs only when a row is bad).
//!
//! The upload is one `multipart/related` request (no Cloud Storage bucket needed), and the
//! job is then read with `jobs.get` (`rest.rs`).

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::BigQueryTarget;
use super::json_row::{encode_each, encode_line};
use super::rest::{ApiError, ErrorProto, Rest, path};
use crate::error::{Error, Result};
use crate::sink::{RowError, RowResult, WarehouseRow};

/// Ids of one batch's series tried before giving up (each failed job uses one up).
const JOB_IDS_PER_BATCH: u32 = 8;
/// How long a job may run before the call gives up on it; the batch is delivered again and
/// finds the job by its id.
const JOB_WAIT: Duration = Duration::from_secs(60);

/// The part of a job resource read here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Job {
    job_reference: Option<JobReference>,
    status: Option<JobStatus>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobReference {
    job_id: Option<String>,
    location: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobStatus {
    state: Option<String>,
    error_result: Option<ErrorProto>,
    errors: Option<Vec<ErrorProto>>,
}

/// What became of one group of rows.
enum JobOutcome {
    Loaded,
    /// BigQuery refused the file's content as invalid (`invalid` reason).
    Invalid(String),
    /// Worth trying again later (backend errors, quota, a job still running).
    Transient(String),
    /// The request itself failed (network, authentication, 5xx).
    Failed(Error),
    /// The dataset or table is gone.
    TableMissing(String),
}

/// Loads batches; one per sink, sharing its REST client.
pub(super) struct Loader<'a> {
    pub(super) rest: &'a Rest,
}

impl Loader<'_> {
    /// Loads the rows (distinct keys) and answers for each; also whether the table is gone.
    pub(super) async fn load(
        &self,
        target: &BigQueryTarget,
        rows: &[WarehouseRow],
    ) -> (Result<Vec<RowResult>>, bool) {
        let (mut results, encoded) = encode_each(rows, encode_line);
        let mut lines: Vec<Option<String>> = vec![None; rows.len()];
        for (i, line) in encoded {
            lines[i] = Some(line);
        }

        let mut groups: Vec<Vec<usize>> =
            vec![(0..rows.len()).filter(|i| lines[*i].is_some()).collect()];
        let (mut jobs, mut failed_requests) = (0usize, Vec::new());
        let mut table_missing = false;
        while let Some(group) = groups.pop() {
            if group.is_empty() {
                continue;
            }
            jobs += 1;
            match self.run(target, rows, &lines, &group).await {
                JobOutcome::Loaded => {}
                JobOutcome::Invalid(reason) if group.len() == 1 => {
                    results[group[0]] = Err(RowError::Permanent(format!(
                        "BigQuery refused the row: {reason}"
                    )));
                }
                JobOutcome::Invalid(reason) => {
                    tracing::info!(table = %target, rows = group.len(), %reason, "load job refused; loading the halves on their own");
                    let (first, second) = group.split_at(group.len() / 2);
                    groups.push(second.to_vec());
                    groups.push(first.to_vec());
                }
                JobOutcome::Transient(reason) => mark(&mut results, &group, &reason),
                JobOutcome::TableMissing(reason) => {
                    table_missing = true;
                    mark(&mut results, &group, &reason);
                }
                JobOutcome::Failed(error) => {
                    mark(&mut results, &group, &error.chain());
                    failed_requests.push(error);
                }
            }
        }
        if jobs > 0 && failed_requests.len() == jobs {
            return (Err(failed_requests.swap_remove(0)), table_missing);
        }
        (Ok(results), table_missing)
    }

    /// Loads one group under its series of job ids.
    async fn run(
        &self,
        target: &BigQueryTarget,
        rows: &[WarehouseRow],
        lines: &[Option<String>],
        group: &[usize],
    ) -> JobOutcome {
        let series = job_id_series(target, group.iter().map(|i| &rows[*i]));
        let mut body = String::new();
        for line in group.iter().filter_map(|i| lines[*i].as_deref()) {
            body.push_str(line);
            body.push('\n');
        }
        for n in 0..JOB_IDS_PER_BATCH {
            let job_id = format!("{series}_{n}");
            let job = match self.upload(target, &job_id, &body).await {
                Ok(Upload::Started(job)) => job,
                // This batch was loaded (or tried) before: its job tells.
                Ok(Upload::Exists) => {
                    match self
                        .get_job(target, &job_id, target.location.as_deref())
                        .await
                    {
                        Ok(job) => Box::new(job),
                        Err(e) => {
                            return JobOutcome::Failed(
                                e.into_sink_error(format_args!("jobs.get {job_id}")),
                            );
                        }
                    }
                }
                Ok(Upload::TableMissing(reason)) => return JobOutcome::TableMissing(reason),
                Err(error) => return JobOutcome::Failed(error),
            };
            match self.wait(target, *job).await {
                // A failed job keeps its id: a passing failure moves on to the next id.
                JobOutcome::Transient(reason) => {
                    tracing::warn!(table = %target, %job_id, %reason, "load job failed; trying the batch's next job id");
                }
                outcome => return outcome,
            }
        }
        JobOutcome::Transient(format!(
            "the batch's {JOB_IDS_PER_BATCH} load job ids ({series}_*) are used up by failed jobs"
        ))
    }

    /// `POST /upload/bigquery/v2/projects/P/jobs?uploadType=multipart`: the job resource and
    /// the NDJSON file in one request.
    async fn upload(&self, target: &BigQueryTarget, job_id: &str, ndjson: &str) -> Result<Upload> {
        let mut job_reference = json!({ "projectId": target.project, "jobId": job_id });
        if let Some(location) = &target.location {
            job_reference["location"] = json!(location);
        }
        let job = json!({
            "jobReference": job_reference,
            "configuration": { "load": {
                "destinationTable": {
                    "projectId": target.project,
                    "datasetId": target.dataset,
                    "tableId": target.table,
                },
                "sourceFormat": "NEWLINE_DELIMITED_JSON",
                "writeDisposition": "WRITE_APPEND",
                "createDisposition": "CREATE_NEVER",
                "ignoreUnknownValues": false,
                "maxBadRecords": 0,
            }},
        });
        let call = format!("{}/jobs", path(&["projects", &target.project]));
        match self.rest.upload::<Job>(&call, &job, ndjson).await {
            Ok(job) => Ok(Upload::Started(Box::new(job))),
            Err(e) if e.status() == Some(409) => Ok(Upload::Exists),
            Err(e) if e.status() == Some(404) => Ok(Upload::TableMissing(format!(
                "BigQuery load into {target}: {e}"
            ))),
            Err(e) => Err(e.into_sink_error(format_args!("load upload into {target}"))),
        }
    }

    /// `GET projects/P/jobs/J?location=L`.
    async fn get_job(
        &self,
        target: &BigQueryTarget,
        job_id: &str,
        location: Option<&str>,
    ) -> Result<Job, ApiError> {
        let call = path(&["projects", &target.project, "jobs", job_id]);
        let query: Vec<(&str, &str)> = location.map(|l| ("location", l)).into_iter().collect();
        self.rest.get(&call, &query).await
    }

    /// Polls the job until it is done (or [`JOB_WAIT`] passed) and says how it ended.
    async fn wait(&self, target: &BigQueryTarget, mut job: Job) -> JobOutcome {
        let started = Instant::now();
        let mut pause = Duration::from_millis(200);
        loop {
            let state = job.status.as_ref().and_then(|s| s.state.as_deref());
            if state == Some("DONE") {
                return outcome_of(&job);
            }
            let Some(JobReference {
                job_id: Some(job_id),
                location,
            }) = job.job_reference.clone()
            else {
                return JobOutcome::Transient("BigQuery answered a load job without its id".into());
            };
            if started.elapsed() > JOB_WAIT {
                return JobOutcome::Transient(format!(
                    "BigQuery load job {job_id} still running after {JOB_WAIT:?}; the redelivery finds it by its id"
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            job = match self.get_job(target, &job_id, location.as_deref()).await {
                Ok(job) => job,
                Err(e) if e.status() == Some(404) => {
                    return JobOutcome::Transient(format!("BigQuery load job {job_id} not found"));
                }
                Err(e) => {
                    return JobOutcome::Failed(
                        e.into_sink_error(format_args!("jobs.get {job_id}")),
                    );
                }
            };
        }
    }
}

enum Upload {
    Started(Box<Job>),
    Exists,
    TableMissing(String),
}

/// A done job: loaded, refused as invalid, or failed for a passing reason.
fn outcome_of(job: &Job) -> JobOutcome {
    let Some(status) = &job.status else {
        return JobOutcome::Loaded;
    };
    let Some(error) = &status.error_result else {
        return JobOutcome::Loaded;
    };
    let mut reasons: Vec<String> = status
        .errors
        .iter()
        .flatten()
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.as_deref().unwrap_or("error"),
                e.message.as_deref().unwrap_or("")
            )
        })
        .collect();
    if reasons.is_empty() {
        reasons.push(format!(
            "{}: {}",
            error.reason.as_deref().unwrap_or("error"),
            error.message.as_deref().unwrap_or("")
        ));
    }
    let reason = reasons.join("; ");
    match error.reason.as_deref() {
        Some("invalid") => JobOutcome::Invalid(reason),
        Some("notFound") => JobOutcome::TableMissing(reason),
        _ => JobOutcome::Transient(format!("BigQuery load job failed: {reason}")),
    }
}

fn mark(results: &mut [RowResult], group: &[usize], reason: &str) {
    for i in group {
        results[*i] = Err(RowError::Transient(reason.to_owned()));
    }
}

/// `fluxgate_<hash>`: the same table and keys give the same series whatever their order.
/// (Job ids take letters, digits, `_` and `-`, up to 1,024 characters.)
fn job_id_series<'a>(
    target: &BigQueryTarget,
    rows: impl Iterator<Item = &'a WarehouseRow>,
) -> String {
    let mut keys: Vec<String> = rows
        .map(|r| format!("{}\u{1f}{}", r.tenant_id, r.event_id))
        .collect();
    keys.sort_unstable();
    let mut hash = Sha256::new();
    hash.update(target.to_string().as_bytes());
    for key in keys {
        hash.update(b"\n");
        hash.update(key.as_bytes());
    }
    format!("fluxgate_{}", hex::encode(hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::bigquery::json_row::tests::test_row;

    fn target() -> BigQueryTarget {
        BigQueryTarget {
            project: "p".into(),
            dataset: "d".into(),
            table: "t".into(),
            location: None,
        }
    }

    #[test]
    fn the_job_id_depends_on_the_keys_not_their_order() {
        let a = test_row();
        let mut b = test_row();
        b.event_id = "e2".into();
        let one = job_id_series(&target(), [&a, &b].into_iter());
        let other = job_id_series(&target(), [&b, &a].into_iter());
        assert_eq!(one, other);
        assert_ne!(one, job_id_series(&target(), [&a].into_iter()));
        assert!(one.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn invalid_is_refused_and_other_failures_pass() {
        let failed = |reason: &str| {
            serde_json::from_value::<Job>(json!({
                "status": {"state": "DONE", "errorResult": {"reason": reason, "message": "m"}}
            }))
            .expect("job")
        };
        assert!(matches!(
            outcome_of(&failed("invalid")),
            JobOutcome::Invalid(_)
        ));
        assert!(matches!(
            outcome_of(&failed("backendError")),
            JobOutcome::Transient(_)
        ));
        let done =
            serde_json::from_value::<Job>(json!({"status": {"state": "DONE"}})).expect("job");
        assert!(matches!(outcome_of(&done), JobOutcome::Loaded));
    }
}
