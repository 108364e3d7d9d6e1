//! The BigQuery Storage Write API (`FLUXGATE_BIGQUERY_WRITE_MODE=storage-write`, the default):
//! exactly once per batch.
//!
//! Each worker batch gets a PENDING write stream of its own (`CreateWriteStream`); its rows
//! are appended as protocol-buffer rows with explicit offsets (`AppendRows`), the stream is
//! finalized (`FinalizeWriteStream`) and committed (`BatchCommitWriteStreams`). Nothing of a
//! pending stream is visible until the commit, and the commit is atomic: a batch is in the
//! table entirely or not at all, and an append retried at an offset already written is
//! refused (`ALREADY_EXISTS`) instead of adding rows. A batch that fails before its commit
//! leaves an uncommitted stream that BigQuery discards. What a commit cannot protect against
//! by itself is a crash after it and before the outbox's DONE: the worker's `held` check on
//! redeliveries covers that (see `mod.rs`). Four calls per batch in all.
//!
//! Rows are the `infra/bigquery/events_schema.json` columns as a flat proto message
//! ([`EventRow`], described to BigQuery by [`descriptor`]): STRING columns as strings, the JSON
//! columns as strings holding the JSON, TIMESTAMP as INT64 microseconds since the epoch, DATE
//! as INT32 days since the epoch (BigQuery's documented proto conversions). Every field is
//! `optional` so that a zero value is still sent (proto3's implicit fields would drop an empty
//! string or a 0, which a REQUIRED column would refuse).
//!
//! Per-row verdicts: rows BigQuery names in `row_errors` are refused (`Permanent`, with its
//! message) and the rest of that request is appended again; a request refused as a whole as
//! invalid without naming rows (bqemulator does that) is split in halves until the row it
//! refuses is alone. Other gRPC failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
//! INTERNAL, …) fail the call: nothing was committed and every row is worth a redelivery.
//!
//! Which client: gcp-bigquery-client's `storage` module writes only to the default stream,
//! with no offsets and no pending streams (so no exactly-once), from flat scalar descriptors.
//! The official `google-cloud-bigquery` crate (googleapis/google-cloud-rust) has the pending
//! and committed writers and offsets on the same gax/auth stack as google-cloud-pubsub, but at
//! the workspace's versions it brings a second generation of its gRPC and auth dependencies
//! for four calls. These four calls are what the generated client of the published protos
//! (`googleapis-tonic-google-cloud-bigquery-storage-v1`, the family of the Pub/Sub protos
//! the workspace already uses, on the same tonic and prost) gives directly, with Google's
//! credentials from `google-cloud-auth` as everywhere else.

use std::collections::VecDeque;
use std::time::Duration;

use googleapis_tonic_google_cloud_bigquery_storage_v1::google::cloud::bigquery::storage::v1::{
    AppendRowsRequest, AppendRowsResponse, BatchCommitWriteStreamsRequest,
    CreateWriteStreamRequest, FinalizeWriteStreamRequest, ProtoRows, ProtoSchema, WriteStream,
    append_rows_request, append_rows_response, big_query_write_client::BigQueryWriteClient,
    write_stream,
};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;

use super::auth::GoogleAuth;
use super::json_row::encode_each;
use super::{BigQueryTarget, events_schema};
use crate::error::{Error, Result};
use crate::grpc::{GrpcStatus, lazy_channel};
use crate::sink::{RowError, RowResult, WarehouseRow};

/// Google's Storage API endpoint.
const GOOGLE_ENDPOINT: &str = "https://bigquerystorage.googleapis.com";
/// Serialized row bytes per AppendRows request: BigQuery (and bqemulator) take 10 MB a
/// request; the rest is left for the request around the rows.
const MAX_APPEND_BYTES: usize = 8 * 1024 * 1024;
/// Deadline of each unary call, and of each append's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One row of the events table as the Storage Write API takes it: the table's columns, each
/// tagged with its place in the table's schema, as [`descriptor`] numbers them.
#[derive(Clone, PartialEq, Message)]
pub(super) struct EventRow {
    #[prost(string, optional, tag = "1")]
    tenant_id: Option<String>,
    #[prost(string, optional, tag = "2")]
    event_id: Option<String>,
    #[prost(string, optional, tag = "3")]
    event_type: Option<String>,
    #[prost(int64, optional, tag = "4")]
    event_ts: Option<i64>,
    #[prost(int32, optional, tag = "5")]
    event_date: Option<i32>,
    #[prost(string, optional, tag = "6")]
    source: Option<String>,
    #[prost(string, optional, tag = "7")]
    payload: Option<String>,
    #[prost(string, optional, tag = "8")]
    payload_sha256: Option<String>,
    #[prost(string, optional, tag = "9")]
    metadata: Option<String>,
    #[prost(string, optional, tag = "10")]
    correlation_id: Option<String>,
    #[prost(int64, optional, tag = "11")]
    received_at: Option<i64>,
    #[prost(int64, optional, tag = "12")]
    ingested_at: Option<i64>,
}

/// The writer schema sent with the first append of each stream, read from the table's own
/// schema (`infra/bigquery/events_schema.json`): the column names are the table's, and each
/// column's number is its place there, which [`EventRow`]'s tags follow.
pub(super) fn descriptor() -> Result<DescriptorProto> {
    let field = events_schema()?
        .into_iter()
        .zip(1..)
        .map(|(column, number)| {
            Ok(FieldDescriptorProto {
                number: Some(number),
                label: Some(Label::Optional as i32),
                r#type: Some(proto_type(&column.kind)? as i32),
                name: Some(column.name),
                ..Default::default()
            })
        })
        .collect::<Result<_>>()?;
    Ok(DescriptorProto {
        name: Some("EventRow".into()),
        field,
        ..Default::default()
    })
}

/// How a column of a BigQuery type travels in a row: TIMESTAMP as microseconds since the
/// epoch, DATE as days since it, JSON as its text.
fn proto_type(kind: &str) -> Result<Type> {
    match kind {
        "STRING" | "JSON" => Ok(Type::String),
        "TIMESTAMP" | "INT64" => Ok(Type::Int64),
        "DATE" => Ok(Type::Int32),
        other => Err(Error::internal(format!(
            "no Storage Write encoding for the BigQuery type {other}"
        ))),
    }
}

fn encode(row: &WarehouseRow) -> Vec<u8> {
    let days = row
        .event_date
        .signed_duration_since(chrono::NaiveDate::default())
        .num_days();
    EventRow {
        tenant_id: Some(row.tenant_id.clone()),
        event_id: Some(row.event_id.clone()),
        event_type: Some(row.event_type.clone()),
        event_ts: Some(row.event_ts.timestamp_micros()),
        // In range: `out_of_range` kept years outside 1..=9999 away.
        event_date: Some(i32::try_from(days).unwrap_or(i32::MAX)),
        source: row.source.clone(),
        // The canonical text as it is: the client's digits, not an f64's.
        payload: Some(row.payload.get().to_owned()),
        payload_sha256: Some(row.payload_sha256.clone()),
        metadata: row.metadata.as_ref().map(|m| m.get().to_owned()),
        correlation_id: row.correlation_id.clone(),
        received_at: Some(row.received_at.timestamp_micros()),
        ingested_at: Some(row.ingested_at.timestamp_micros()),
    }
    .encode_to_vec()
}

pub(super) struct StorageWriter {
    client: BigQueryWriteClient<Channel>,
    auth: GoogleAuth,
    descriptor: DescriptorProto,
}

/// A gRPC failure as the sink reports it, keeping the status as the cause.
fn grpc_error(what: String, status: tonic::Status) -> Error {
    Error::sink_caused(what, GrpcStatus(status))
}

impl StorageWriter {
    /// `endpoint` is an emulator's `http://host:port` (no credentials) or a `https://…`
    /// endpoint; Google's when `None`. Connects lazily, at the first write.
    pub(super) fn connect(endpoint: Option<&str>, auth: GoogleAuth) -> Result<Self> {
        let endpoint = endpoint.unwrap_or(GOOGLE_ENDPOINT);
        let bad = |e: tonic::transport::Error| {
            Error::setting_caused(
                "FLUXGATE_BIGQUERY_GRPC_ENDPOINT",
                format!("not a usable endpoint: {endpoint}"),
                e,
            )
        };
        Ok(Self {
            client: BigQueryWriteClient::new(lazy_channel(endpoint, bad)?),
            auth,
            descriptor: descriptor()?,
        })
    }

    /// A request with credentials, the routing header Google's front end wants, and a
    /// deadline.
    async fn request<T>(&self, message: T, routing: (&str, &str)) -> Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        let mut metadata = MetadataMap::from_headers(self.auth.headers().await?);
        let params = format!(
            "{}={}",
            routing.0,
            utf8_percent_encode(routing.1, NON_ALPHANUMERIC)
        );
        if let Ok(value) = MetadataValue::try_from(params) {
            metadata.insert("x-goog-request-params", value);
        }
        *request.metadata_mut() = metadata;
        request.set_timeout(CALL_TIMEOUT);
        Ok(request)
    }

    /// One unary call (`what` names it in errors) with the request's credentials and routing
    /// header; a NOT_FOUND answer says the table is gone.
    async fn unary<T, R, F, A>(
        &self,
        what: String,
        message: T,
        routing: (&str, &str),
        call: F,
    ) -> std::result::Result<R, Failure>
    where
        F: FnOnce(BigQueryWriteClient<Channel>, tonic::Request<T>) -> A,
        A: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        let request = self.request(message, routing).await?;
        call(self.client.clone(), request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| Failure::from_status(what, status))
    }

    /// Writes the rows (distinct keys) in one pending stream and answers for each; also
    /// whether the table is gone.
    pub(super) async fn write(
        &self,
        target: &BigQueryTarget,
        rows: &[WarehouseRow],
    ) -> (Result<Vec<RowResult>>, bool) {
        let (mut results, encoded) =
            encode_each(rows, |row| Ok::<_, std::convert::Infallible>(encode(row)));
        if encoded.is_empty() {
            return (Ok(results), false);
        }
        match self.write_stream(target, encoded, &mut results).await {
            Ok(()) => (Ok(results), false),
            Err(Failure {
                error,
                table_missing,
            }) => (Err(error), table_missing),
        }
    }

    async fn write_stream(
        &self,
        target: &BigQueryTarget,
        rows: Vec<(usize, Vec<u8>)>,
        results: &mut [RowResult],
    ) -> std::result::Result<(), Failure> {
        let table = format!(
            "projects/{}/datasets/{}/tables/{}",
            target.project, target.dataset, target.table
        );
        let create = CreateWriteStreamRequest {
            parent: table.clone(),
            write_stream: Some(WriteStream {
                r#type: write_stream::Type::Pending as i32,
                ..Default::default()
            }),
        };
        let stream = self
            .unary(
                format!("BigQuery CreateWriteStream on {target}"),
                create,
                ("parent", &table),
                |mut client, request| async move { client.create_write_stream(request).await },
            )
            .await?
            .name;

        self.append_all(target, &stream, rows, results).await?;

        let finalize = FinalizeWriteStreamRequest {
            name: stream.clone(),
        };
        self.unary(
            format!("BigQuery FinalizeWriteStream {stream}"),
            finalize,
            ("name", &stream),
            |mut client, request| async move { client.finalize_write_stream(request).await },
        )
        .await?;
        let commit = BatchCommitWriteStreamsRequest {
            parent: table.clone(),
            write_streams: vec![stream.clone()],
        };
        let committed = self
            .unary(
                format!("BigQuery BatchCommitWriteStreams {stream}"),
                commit,
                ("parent", &table),
                |mut client, request| async move { client.batch_commit_write_streams(request).await },
            )
            .await?;
        if let Some(error) = committed.stream_errors.first() {
            return Err(Failure::plain(Error::sink(format!(
                "BigQuery BatchCommitWriteStreams {stream}: {} (code {})",
                error.error_message, error.code
            ))));
        }
        Ok(())
    }

    /// Appends every row at its offset, one request at a time (so a refused request can be
    /// sent again without the refused rows before the next one goes).
    async fn append_all(
        &self,
        target: &BigQueryTarget,
        stream: &str,
        rows: Vec<(usize, Vec<u8>)>,
        results: &mut [RowResult],
    ) -> std::result::Result<(), Failure> {
        let (sender, receiver) = tokio::sync::mpsc::channel::<AppendRowsRequest>(1);
        let call = self
            .request(ReceiverStream::new(receiver), ("write_stream", stream))
            .await?;
        // The call starts once its first request is ready, so that request goes first.
        let mut pending: VecDeque<Vec<(usize, Vec<u8>)>> = split(rows).into();
        let mut offset: i64 = 0;
        let mut with_schema = true;
        let mut responses = None;
        let mut call = Some(call);
        let what = || format!("BigQuery AppendRows into {target}");
        while let Some(chunk) = pending.pop_front() {
            let request = AppendRowsRequest {
                // The schema only in the first request of the connection; the stream in every
                // one (BigQuery takes it repeated, and bqemulator needs it).
                write_stream: stream.to_owned(),
                offset: Some(offset),
                rows: Some(append_rows_request::Rows::ProtoRows(
                    append_rows_request::ProtoData {
                        writer_schema: with_schema.then(|| ProtoSchema {
                            proto_descriptor: Some(self.descriptor.clone()),
                        }),
                        rows: Some(ProtoRows {
                            serialized_rows: chunk.iter().map(|(_, bytes)| bytes.clone()).collect(),
                        }),
                    },
                )),
                ..Default::default()
            };
            with_schema = false;
            if sender.send(request).await.is_err() {
                return Err(Failure::plain(Error::sink(format!(
                    "{}: the call ended early",
                    what()
                ))));
            }
            if let Some(call) = call.take() {
                let started = self
                    .client
                    .clone()
                    .append_rows(call)
                    .await
                    .map_err(|status| Failure::from_status(what(), status))?;
                responses = Some(started.into_inner());
            }
            let Some(stream_of_answers) = responses.as_mut() else {
                return Err(Failure::plain(Error::internal(
                    "AppendRows has no answer stream",
                )));
            };
            let answer: AppendRowsResponse =
                match tokio::time::timeout(CALL_TIMEOUT, stream_of_answers.message()).await {
                    Ok(Ok(Some(answer))) => answer,
                    Ok(Ok(None)) => {
                        return Err(Failure::plain(Error::sink(format!(
                            "{}: the call ended without an answer",
                            what()
                        ))));
                    }
                    Ok(Err(status)) => return Err(Failure::from_status(what(), status)),
                    Err(_) => {
                        return Err(Failure::plain(Error::sink(format!(
                            "{}: no answer within {CALL_TIMEOUT:?}",
                            what()
                        ))));
                    }
                };
            match verdict(&answer, chunk.len()) {
                Append::Done => offset += chunk.len() as i64,
                Append::RowsRefused(refused) => {
                    // The request wrote nothing; the others go again at the same offset.
                    let mut rest = Vec::with_capacity(chunk.len());
                    for (position, row) in chunk.into_iter().enumerate() {
                        match refused.iter().find(|(p, _)| *p == position) {
                            Some((_, message)) => {
                                results[row.0] = Err(RowError::Permanent(format!(
                                    "BigQuery refused the row: {message}"
                                )));
                            }
                            None => rest.push(row),
                        }
                    }
                    if !rest.is_empty() {
                        pending.push_front(rest);
                    }
                }
                Append::Invalid(message) if chunk.len() == 1 => {
                    results[chunk[0].0] = Err(RowError::Permanent(format!(
                        "BigQuery refused the row: {message}"
                    )));
                }
                Append::Invalid(message) => {
                    tracing::info!(table = %target, rows = chunk.len(), %message, "append refused as a whole; sending the halves on their own");
                    let mut first = chunk;
                    let second = first.split_off(first.len() / 2);
                    pending.push_front(second);
                    pending.push_front(first);
                }
                Append::Failed(status) => return Err(Failure::from_status(what(), status)),
            }
        }
        Ok(())
    }
}

/// Why a stream's write failed, and whether because the table is gone.
struct Failure {
    error: Error,
    table_missing: bool,
}

impl Failure {
    fn plain(error: Error) -> Self {
        Self {
            error,
            table_missing: false,
        }
    }

    fn from_status(what: String, status: tonic::Status) -> Self {
        Self {
            table_missing: status.code() == tonic::Code::NotFound,
            error: grpc_error(what, status),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::plain(error)
    }
}

/// What one append's answer means.
#[derive(Debug)]
enum Append {
    Done,
    /// The request was refused for these rows (position in the request, BigQuery's message).
    RowsRefused(Vec<(usize, String)>),
    /// Refused as invalid as a whole, without naming rows.
    Invalid(String),
    /// Anything else: fail the batch (nothing is committed).
    Failed(tonic::Status),
}

fn verdict(answer: &AppendRowsResponse, rows: usize) -> Append {
    let status = match &answer.response {
        Some(append_rows_response::Response::AppendResult(_)) | None => return Append::Done,
        Some(append_rows_response::Response::Error(status)) => status,
    };
    let refused: Vec<(usize, String)> = answer
        .row_errors
        .iter()
        .filter_map(|e| {
            let position = usize::try_from(e.index).ok().filter(|p| *p < rows)?;
            Some((position, e.message.clone()))
        })
        .collect();
    if !refused.is_empty() {
        return Append::RowsRefused(refused);
    }
    match tonic::Code::from_i32(status.code) {
        tonic::Code::InvalidArgument => Append::Invalid(status.message.clone()),
        // Rows at this offset are already in the stream: this request was written before.
        tonic::Code::AlreadyExists => Append::Done,
        code => Append::Failed(tonic::Status::new(code, status.message.clone())),
    }
}

/// Rows grouped into requests of at most [`MAX_APPEND_BYTES`] (a larger row goes alone).
fn split(rows: Vec<(usize, Vec<u8>)>) -> Vec<Vec<(usize, Vec<u8>)>> {
    let mut requests = Vec::new();
    let mut current: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut bytes = 0;
    for row in rows {
        if !current.is_empty() && bytes + row.1.len() > MAX_APPEND_BYTES {
            requests.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += row.1.len();
        current.push(row);
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sink::bigquery::json_row::tests::test_row;
    use googleapis_tonic_google_cloud_bigquery_storage_v1::google::cloud::bigquery::storage::v1::RowError as ProtoRowError;
    use googleapis_tonic_google_cloud_bigquery_storage_v1::google::rpc::Status;

    /// What a row's bytes carry, by field number: a varint as a number, a string as text.
    fn sent_fields(mut bytes: &[u8]) -> HashMap<u32, serde_json::Value> {
        use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, string};
        let mut sent = HashMap::new();
        while !bytes.is_empty() {
            let (number, wire_type) = decode_key(&mut bytes).expect("field key");
            let value = match wire_type {
                WireType::Varint => (decode_varint(&mut bytes).expect("varint") as i64).into(),
                WireType::LengthDelimited => {
                    let mut text = String::new();
                    string::merge(wire_type, &mut text, &mut bytes, DecodeContext::default())
                        .expect("string");
                    text.into()
                }
                other => panic!("field {number} sent as {other:?}"),
            };
            sent.insert(number, value);
        }
        sent
    }

    #[test]
    fn each_column_travels_under_its_descriptor_number_and_type() {
        let row = WarehouseRow {
            source: Some("web".into()),
            metadata: Some(
                serde_json::json!({"m": 2})
                    .as_object()
                    .cloned()
                    .expect("object")
                    .into(),
            ),
            correlation_id: Some("c-1".into()),
            ..test_row()
        };
        let sent = sent_fields(&encode(&row));
        // The same row as insertAll takes it, keyed by column name.
        let named = crate::sink::bigquery::json_row::encode(&row).expect("json row");
        let descriptor = descriptor().expect("descriptor");
        assert_eq!(descriptor.field.len(), 12);
        for field in &descriptor.field {
            let (name, number) = (field.name(), field.number() as u32);
            let expected = match (field.r#type(), named.get(name)) {
                (_, None) => None,
                (Type::String, Some(text)) => Some(text.clone()),
                (Type::Int64, Some(text)) => {
                    let at = chrono::DateTime::parse_from_rfc3339(text.as_str().expect(name));
                    Some(at.expect(name).timestamp_micros().into())
                }
                (Type::Int32, Some(text)) => {
                    let day =
                        chrono::NaiveDate::parse_from_str(text.as_str().expect(name), "%Y-%m-%d");
                    let days = day.expect(name) - chrono::NaiveDate::default();
                    Some(days.num_days().into())
                }
                (other, _) => panic!("{name}: unexpected type {other:?}"),
            };
            assert_eq!(
                sent.get(&number),
                expected.as_ref(),
                "{name} (field {number})"
            );
        }
    }

    #[test]
    fn rows_decode_with_the_descriptor_numbers() {
        let row = test_row();
        let decoded = EventRow::decode(encode(&row).as_slice()).expect("decodes");
        assert_eq!(decoded.event_ts, Some(row.event_ts.timestamp_micros()));
        assert_eq!(
            decoded.event_date,
            Some(20_779),
            "2026-11-22 in days since 1970-01-01"
        );
        assert_eq!(decoded.payload.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(decoded.metadata, None);
    }

    #[test]
    fn named_rows_are_refused_and_whole_refusals_split() {
        let error = |code: tonic::Code| {
            Some(append_rows_response::Response::Error(Status {
                code: code as i32,
                message: "bad".into(),
                details: Vec::new(),
            }))
        };
        let named = AppendRowsResponse {
            response: error(tonic::Code::InvalidArgument),
            row_errors: vec![ProtoRowError {
                index: 1,
                code: 1,
                message: "field x".into(),
            }],
            ..Default::default()
        };
        assert!(
            matches!(verdict(&named, 3), Append::RowsRefused(r) if r == vec![(1, "field x".to_owned())])
        );
        let whole = AppendRowsResponse {
            response: error(tonic::Code::InvalidArgument),
            ..Default::default()
        };
        assert!(matches!(verdict(&whole, 3), Append::Invalid(_)));
        let busy = AppendRowsResponse {
            response: error(tonic::Code::Unavailable),
            ..Default::default()
        };
        assert!(
            matches!(verdict(&busy, 3), Append::Failed(s) if s.code() == tonic::Code::Unavailable)
        );
    }
}
