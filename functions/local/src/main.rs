//! `fluxgate-local`: the whole pipeline in one process, for trying it out and for development;
//! with a subcommand, the tool that manages tenants and API keys (of a deployed database too,
//! through `DATABASE_URL`).

use clap::Parser;
use fluxgate::{store, telemetry};
use fluxgate_local::LocalConfig;
use fluxgate_local::cli::{self, Command};

#[tokio::main]
async fn main() -> Result<(), fluxgate::Error> {
    let config = LocalConfig::parse();
    match &config.command {
        None | Some(Command::Serve) => {
            telemetry::init();
            fluxgate_local::run(config, fluxgate::runtime::shutdown_signal()).await
        }
        Some(command) => {
            if let Err(e) = manage(&config, command).await {
                // A person reads this: the message, not the enum.
                eprintln!("error: {e}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

async fn manage(config: &LocalConfig, command: &Command) -> Result<(), fluxgate::Error> {
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir)?;
    }
    let store = store::connect(&url, &config.database).await?;
    cli::run(command, store.as_ref(), &mut std::io::stdout()).await
}
