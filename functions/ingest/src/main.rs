//! ingest as its own function: configured from the environment; on Lambda behind API
//! Gateway, elsewhere served on `PORT`.

use clap::Parser;
use fluxgate::auth::{AuthConfig, Authenticator};
use fluxgate::config::{DatabaseConfig, Limits, ServerConfig};
use fluxgate::{runtime, secrets, store, telemetry};

#[derive(Parser)]
#[command(name = "fluxgate-ingest", about = "Takes events in over HTTP", version)]
struct Config {
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    server: ServerConfig,
    #[command(flatten)]
    auth: AuthConfig,
}

#[tokio::main]
async fn main() -> Result<(), fluxgate::Error> {
    telemetry::init();
    let config = Config::parse();
    let database_url = secrets::database_url(&config.database).await?;
    let store = store::connect(database_url.expose(), &config.database).await?;
    let auth = Authenticator::from_config(&config.auth, store.clone()).await?;
    let app = fluxgate_ingest::service(store, config.limits, auth);
    runtime::serve_http(app, config.server.port).await
}
