//! `fluxgate-local tenants …` and `fluxgate-local keys …`: manage tenants and API keys in
//! the database of `DATABASE_URL` (a deployed one too), or the local SQLite file.
//!
//! A new key is printed once, on stdout, and never again: only its hash is stored.

use clap::Subcommand;

use fluxgate::auth::key;
use fluxgate::config::Limits;
use fluxgate::error::{Error, Result};
use fluxgate::event::check_tenant_id;
use fluxgate::store::ApiKeys;

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the whole pipeline (what runs without a subcommand).
    Serve,
    /// Create and list tenants.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant (nothing changes if it exists).
    Create { tenant: String },
    /// List the tenants.
    List,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create an API key for a tenant and print it (once).
    Create {
        #[arg(long)]
        tenant: String,
        /// A label for the key, such as where it is used.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (ids, tenants, names, when made and revoked; never the keys).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by its id; running instances stop accepting it within
    /// FLUXGATE_AUTH_CACHE_TTL.
    Revoke { key_id: String },
}

/// Runs one management command; what it prints goes to `out`.
pub async fn run(
    command: &Command,
    keys: &dyn ApiKeys,
    out: &mut (dyn std::io::Write + Send),
) -> Result<()> {
    let now = fluxgate::now();
    match command {
        Command::Serve => Ok(()),
        Command::Tenants(TenantsCommand::Create { tenant }) => {
            check_tenant_id(tenant, &Limits::default()).map_err(Error::InvalidField)?;
            let created = keys.create_tenant(tenant, now).await?;
            let what = if created { "created" } else { "already exists" };
            writeln!(out, "tenant {tenant} {what}")?;
            Ok(())
        }
        Command::Tenants(TenantsCommand::List) => {
            for tenant in keys.list_tenants().await? {
                writeln!(
                    out,
                    "{}\tcreated {}",
                    tenant.id,
                    tenant.created_at.to_rfc3339()
                )?;
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Create { tenant, name }) => {
            let issued = key::generate(tenant, name.as_deref(), now)?;
            keys.create_key(&issued.record).await.map_err(|e| match e {
                // One sentence with what to do; `NotFound` would append "not found" after
                // the hint. The command is the one a newcomer has: fluxgate-local is not on
                // the PATH, scripts/dev.sh passes its arguments on.
                Error::NotFound(_) => Error::WrongState(format!(
                    "tenant {tenant} does not exist; create it first with \
                     `scripts/dev.sh tenants create {tenant}`"
                )),
                other => other,
            })?;
            writeln!(
                out,
                "key {} for tenant {tenant} (shown once; only its hash is stored):\n{}",
                issued.record.key_id,
                issued.expose()
            )?;
            Ok(())
        }
        Command::Keys(KeysCommand::List { tenant }) => {
            for key in keys.list_keys(tenant.as_deref()).await? {
                let state = match key.revoked_at {
                    Some(at) => format!("revoked {}", at.to_rfc3339()),
                    None => "active".to_owned(),
                };
                writeln!(
                    out,
                    "{}\t{}\t{}\tcreated {}\t{state}",
                    key.key_id,
                    key.tenant_id,
                    key.name.as_deref().unwrap_or("-"),
                    key.created_at.to_rfc3339()
                )?;
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Revoke { key_id }) => {
            let what = if keys.revoke_key(key_id, now).await? {
                "revoked"
            } else {
                "was already revoked"
            };
            writeln!(out, "key {key_id} {what}")?;
            Ok(())
        }
    }
}
