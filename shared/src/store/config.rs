//! The store's settings: which database, how the pool connects, and how MySQL claims. The
//! store owns them, as [`super::connect`] is what reads them.

use clap::{ArgAction, Args};

use super::MySqlClaimSetting;
use crate::error::{Error, Result};
use crate::platform::on_lambda;

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// Where events and the outbox live: `postgres://…`, `mysql://…` or `sqlite://path`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// An AWS Secrets Manager secret (name or ARN) holding the database URL, or an RDS-style
    /// JSON secret (username, password, host, port, dbname, engine); wins over DATABASE_URL.
    #[arg(long, env = "FLUXGATE_DATABASE_SECRET_ID")]
    pub database_secret_id: Option<String>,
    /// Connect to this host instead of the one in the URL or secret, keeping the rest: the
    /// endpoint of an RDS Proxy in front of the database the secret describes.
    #[arg(long, env = "FLUXGATE_DATABASE_HOST")]
    pub database_host: Option<String>,
    /// Largest connection pool of one process; default 10, or 2 on Lambda, where one
    /// instance serves one request at a time and thousands of instances share the database.
    #[arg(long, env = "FLUXGATE_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// Open database connections at the first query instead of at start-up; default on Lambda
    /// (a cold start makes no connection it may not need), off elsewhere (a bad URL fails fast).
    #[arg(long, env = "FLUXGATE_DB_LAZY", action = ArgAction::Set)]
    pub db_lazy: Option<bool>,
    /// Apply the SQL migrations at start-up.
    #[arg(long, env = "FLUXGATE_DB_MIGRATE", default_value_t = true, action = ArgAction::Set)]
    pub db_migrate: bool,
    /// How MySQL/MariaDB claims outbox rows: `skip-locked` (MySQL >= 8.0.1, MariaDB >= 10.6),
    /// `claim-then-fetch` (older servers), or `auto` to choose by the server's version.
    #[arg(
        long,
        env = "FLUXGATE_MYSQL_CLAIM_MODE",
        value_enum,
        default_value = "auto"
    )]
    pub mysql_claim_mode: MySqlClaimSetting,
}

impl DatabaseConfig {
    pub fn max_connections(&self) -> u32 {
        self.db_max_connections
            .unwrap_or(if on_lambda() { 2 } else { 10 })
            .max(1)
    }

    pub fn lazy(&self) -> bool {
        self.db_lazy.unwrap_or_else(on_lambda)
    }

    pub fn required_url(&self) -> Result<&str> {
        self.database_url.as_deref().ok_or_else(|| {
            Error::setting(
                "DATABASE_URL",
                "is required (postgres://, mysql:// or sqlite://), or FLUXGATE_DATABASE_SECRET_ID",
            )
        })
    }
}
