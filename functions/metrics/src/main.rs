//! metrics as its own service: configured from the environment, served on `PORT`.

use clap::Parser;
use fluxgate::auth::{AuthConfig, Authenticator};
use fluxgate::config::{DatabaseConfig, ServerConfig};
use fluxgate::{runtime, store, telemetry};

#[derive(Parser)]
#[command(
    name = "fluxgate-metrics",
    about = "Outbox figures over HTTP and Prometheus",
    version
)]
struct Config {
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    server: ServerConfig,
    #[command(flatten)]
    auth: AuthConfig,
}

#[tokio::main]
async fn main() -> Result<(), fluxgate::Error> {
    telemetry::init();
    let config = Config::parse();
    let store = store::connect(config.database.required_url()?, &config.database).await?;
    let auth = Authenticator::from_config(&config.auth, store.clone()).await?;
    let app = fluxgate_metrics::service(store, auth);
    runtime::serve(app, config.server.port).await
}
