//! fluxgate: the common crate of the fluxgate functions.
//!
//! `event` (the event, its validation and hash), `json_object` (payloads kept in the client's
//! digits), `config` (settings from the environment),
//! `error` (one error type, rendered as problem+json), `store` (events + outbox on
//! PostgreSQL / SQLite), `queue` (hand-off to the worker), `sink` (the warehouse),
//! `tenant` (who a request acts for), `auth` (API keys and admin access), `http`,
//! `telemetry` and `emf` (logs and CloudWatch metric lines) and `runtime` (running a function
//! on Lambda or on a port), `aws` and `tls` (the AWS SDK's configuration, the one crypto
//! provider).
//!
//! The cloud clients are cargo features, so each binary links only those it calls: `sqs`,
//! `secrets-manager`, `pubsub`, `bigquery` (the functions' `aws` / `gcp` features pick them).

pub mod api;
pub mod auth;
#[cfg(feature = "aws-sdk")]
pub mod aws;
pub mod config;
pub mod dead_letters;
pub mod emf;
pub mod error;
pub mod event;
#[cfg(any(feature = "pubsub", feature = "bigquery-storage-write"))]
pub mod grpc;
pub mod http;
pub mod json_object;
pub mod platform;
pub mod query;
pub mod queue;
pub mod runtime;
pub mod secrets;
pub mod sink;
pub mod store;
pub mod telemetry;
pub mod tenant;
pub mod tls;

pub use error::{Error, Result};

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};

/// The current time at the precision every store keeps (microseconds), so that a timestamp
/// written and read back compares equal on PostgreSQL, MySQL and SQLite alike.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A timestamp as clients write them: RFC 3339 (`2024-01-15T10:30:00Z`, `…+02:00`), or an ISO
/// 8601 date-time without an offset (`2024-01-15T10:30:00`), which is UTC. At the precision
/// every store keeps (microseconds).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|ts| ts.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|ts| ts.and_utc())
        })
        .ok()
        .map(|ts| ts.trunc_subsecs(6))
}
