//! Test support shared by every fluxgate integration test.
//!
//! - [`TestDb`]: a fresh, private database per test on PostgreSQL, MariaDB or SQLite, reached
//!   through the real `fluxgate::store::connect`, with the migrations applied. Tests that each
//!   make their own `TestDb` can run in parallel without seeing each other's rows.
//!   [`per_database!`] runs one check as one test per database.
//! - [`event`], [`event_with_payload`], [`event_at`]: valid events with a correct canonical
//!   payload hash, and small helpers for keys and claims.
//! - [`tenant_key`], [`authenticator`], [`ADMIN_KEY`]: real API keys and authenticators.
//! - [`TestBigQuery`]: a dataset of its own per test on the bqemulator that `scripts/test.sh`
//!   starts (`FLUXGATE_TEST_BIGQUERY_URL`), with rows and table metadata read back;
//!   [`in_each_write_mode`] runs one check in each of its [`WRITE_MODES`].
//! - [`pubsub_server`]: a Pub/Sub gRPC test server (the one mock of the suite; see there why).
//! - [`FlakySink`]: the one declared fake — a real warehouse that fails chosen rows on demand.
//! - [`CapturedLog`]: everything a test logs, at every level, in a buffer.
//! - [`router`]: a request through an axum router in-process, its answer read back whole.
//! - [`free_port`], [`Deadline`]: a loopback port for a process to serve on, and a time limit
//!   for waiting on what it does.
//! - [`lambda`]: a function binary under cargo-lambda's Lambda Runtime API, invoked as Lambda
//!   invokes it.
//! - [`bench`]: what the benchmarks share (settings, rates, `fluxgate-local` as a process).
//! - [`aws`]: AWS SDK clients on the moto server (`FLUXGATE_TEST_MOTO_URL`), a queue or a
//!   secret of its own per test.
//!
//! A database server or emulator that cannot be reached makes the test panic with the URL it
//! tried and the command that starts it: a test that needs a service never skips quietly.

mod auth;
pub mod aws;
pub mod bench;
pub mod bigquery;
mod db;
mod events;
mod files;
mod flaky_sink;
pub mod lambda;
mod logs;
mod process;
pub mod pubsub_server;
pub mod router;

pub use auth::{ADMIN_KEY, auth_config, authenticator, authenticator_with, tenant_key};
pub use bigquery::{
    BIGQUERY_PROJECT, BIGQUERY_URL_ENV, TestBigQuery, WRITE_MODES, in_each_write_mode,
};
pub use db::{
    DbKind, MYSQL_URL_ENV, POSTGRES_URL_ENV, TEST_DB_ENV, TEST_DB_PREFIX, TestDb, database_config,
    database_exists,
};
pub use events::{
    EVENT_TYPE, LEASE_TTL, carried_by, claim_request, event, event_at, event_of_type,
    event_with_payload, far_deadline, key, keys, payload_hash, unpack,
};
pub use files::{
    files_under, is_warehouse_part, repository_root, warehouse_file_rows, warehouse_row_count,
};
pub use flaky_sink::{FlakySink, OutcomeEvents, one_event_and_file_warehouse, outcome_events};
pub use logs::CapturedLog;
pub use process::{Deadline, free_port};

/// One test per database for a check that takes the database's kind:
/// `per_database!(#[tokio::test] check: postgres, sqlite);` makes `mod check` with
/// `#[tokio::test] async fn postgres() { super::check(DbKind::Postgres).await }` and the same
/// for `sqlite`, so each database passes or fails on its own line (`check::postgres`).
#[macro_export]
macro_rules! per_database {
    (#[$test:meta] $check:ident: $($db:ident),+ $(,)?) => {
        mod $check {
            $(
                #[$test]
                async fn $db() {
                    super::$check($crate::per_database!(@kind $db)).await;
                }
            )+
        }
    };
    (@kind postgres) => { $crate::DbKind::Postgres };
    (@kind mariadb) => { $crate::DbKind::MariaDb };
    (@kind sqlite) => { $crate::DbKind::Sqlite };
}
