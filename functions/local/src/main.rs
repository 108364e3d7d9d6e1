//! `fluxgate-local`: the whole pipeline in one process, for trying it out and for development;
//! with a subcommand, the tool that manages tenants and API keys (of a deployed database too,
//! through `DATABASE_URL`). Settings: [`fluxgate_local::LocalConfig`].

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    fluxgate_local::main(fluxgate_local::LocalConfig::parse()).await
}
