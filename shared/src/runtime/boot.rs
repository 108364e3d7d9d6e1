//! The start-up every function shares: the database URL (from Secrets Manager or the
//! environment), the store, and for the API functions the authenticator.

use std::sync::Arc;

use clap::Args;

use crate::auth::{AuthConfig, Authenticator};
use crate::config::ServerConfig;
use crate::error::Result;
use crate::secrets;
use crate::store::{self, DatabaseConfig, Store};

/// The store a function works on: the URL from `FLUXGATE_DATABASE_SECRET_ID` or
/// `DATABASE_URL`, connected (and migrated) as `config` says.
pub async fn open_store(config: &DatabaseConfig) -> Result<Arc<dyn Store>> {
    let url = secrets::database_url(config).await?;
    store::connect(url.expose(), config).await
}

/// The settings of a function that serves an API to tenants or admins (ingest, replay,
/// metrics): its database, its port and how its callers authenticate.
#[derive(Clone, Args)]
pub struct ApiConfig {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
}

impl ApiConfig {
    /// The store and the authenticator that reads its keys.
    pub async fn open(&self) -> Result<(Arc<dyn Store>, Authenticator)> {
        let store = open_store(&self.database).await?;
        let auth = Authenticator::from_config(&self.auth, store.clone()).await?;
        Ok((store, auth))
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }
}
