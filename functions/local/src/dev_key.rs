//! The development keys: made on the first start of the local mode and kept in the data
//! folder (mode 0600) so scripts and curl can use them.
//!
//! - `<data-dir>/dev-api-key`: an API key of the development tenant, printed once. Later starts
//!   reuse it; a database that has not seen it yet (another `DATABASE_URL`) learns the same
//!   key, so one file serves every database and no key is left behind active.
//! - `<data-dir>/admin-key`: the admin key (replay, metrics of every tenant), when neither
//!   `FLUXGATE_ADMIN_KEY` nor `FLUXGATE_ADMIN_KEY_SECRET_ID` gives one.

use std::path::{Path, PathBuf};

use fluxgate::auth::key;
use fluxgate::error::Result;
use fluxgate::store::ApiKeys;

pub const FILE_NAME: &str = "dev-api-key";
pub const ADMIN_FILE_NAME: &str = "admin-key";
const KEY_NAME: &str = "local development";

/// Makes sure `tenant` exists and `<data_dir>/dev-api-key` holds one of its active keys.
pub async fn ensure(keys: &dyn ApiKeys, data_dir: &Path, tenant: &str) -> Result<PathBuf> {
    let path = data_dir.join(FILE_NAME);
    let now = fluxgate::now();
    if let Ok(text) = tokio::fs::read_to_string(&path).await {
        let existing = text.trim();
        if let Some(key_id) = key::key_id(existing) {
            if let Some(active) = keys.find_active_key(key_id).await?
                && active.tenant_id == tenant
                && key::matches(existing, &active.secret_sha256)
            {
                tracing::info!(tenant, key_id, file = %path.display(), "development API key reused");
                return Ok(path);
            }
            if learn(keys, existing, tenant).await? {
                tracing::info!(tenant, key_id, file = %path.display(), "development API key added to this database");
                return Ok(path);
            }
        }
        // A key this database revoked, or one of another tenant: replace it.
    }
    keys.create_tenant(tenant, now).await?;
    let issued = key::generate(tenant, Some(KEY_NAME), now)?;
    keys.create_key(&issued.record).await?;
    write_private(&path, issued.expose())?;
    // Printed for the person at the terminal, on stderr beside (not inside) the log stream.
    eprintln!(
        "\nfluxgate local: development tenant `{tenant}`, API key {} (shown once, kept in {}):\n\n  {}\n",
        issued.record.key_id,
        path.display(),
        issued.expose(),
    );
    tracing::info!(tenant, key_id = %issued.record.key_id, file = %path.display(), "development API key created");
    Ok(path)
}

/// Stores the key of the file in a database that has never seen its key id; false when the
/// database knows that id already (revoked, or another tenant's).
async fn learn(keys: &dyn ApiKeys, existing: &str, tenant: &str) -> Result<bool> {
    let now = fluxgate::now();
    let Some(record) = key::record_of(existing, tenant, Some(KEY_NAME), now) else {
        return Ok(false);
    };
    let known = keys
        .list_keys(None)
        .await?
        .iter()
        .any(|k| k.key_id == record.key_id);
    if known {
        return Ok(false);
    }
    keys.create_tenant(tenant, now).await?;
    keys.create_key(&record).await?;
    Ok(true)
}

/// The admin key kept in `<data_dir>/admin-key`, made on the first call.
pub fn ensure_admin(data_dir: &Path) -> Result<(String, PathBuf)> {
    let path = data_dir.join(ADMIN_FILE_NAME);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let existing = text.trim();
        if existing.chars().count() >= key::MIN_ADMIN_KEY_CHARS {
            return Ok((existing.to_owned(), path));
        }
    }
    let made = key::generate_admin_key()?;
    write_private(&path, &made)?;
    tracing::info!(file = %path.display(), "local admin key created");
    Ok((made, path))
}

/// Writes the key readable by its owner only, replacing the file whole (write, then rename).
/// Plain blocking I/O: one tiny file, once, at start-up.
fn write_private(path: &Path, key: &str) -> Result<()> {
    use std::io::Write;
    let temp = path.with_extension("tmp");
    // A leftover temp file would keep its old mode; start from none.
    let _ = std::fs::remove_file(&temp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temp)?;
    file.write_all(format!("{key}\n").as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    Ok(())
}
