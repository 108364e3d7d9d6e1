//! The development tenant and its key: made on the first start of the local mode, printed
//! once, and kept in `<data-dir>/dev-api-key` (mode 0600) so scripts and curl can use it.
//! Later starts reuse the key in the file while the database still knows it.

use std::path::{Path, PathBuf};

use fluxgate::auth::key;
use fluxgate::error::Result;
use fluxgate::store::ApiKeys;

pub const FILE_NAME: &str = "dev-api-key";

/// Makes sure `tenant` exists and `<data_dir>/dev-api-key` holds one of its active keys.
pub async fn ensure(keys: &dyn ApiKeys, data_dir: &Path, tenant: &str) -> Result<PathBuf> {
    let path = data_dir.join(FILE_NAME);
    if let Ok(text) = tokio::fs::read_to_string(&path).await {
        let existing = text.trim();
        if let Some(key_id) = key::key_id(existing)
            && let Some(active) = keys.find_active_key(key_id).await?
            && active.tenant_id == tenant
            && key::matches(existing, &active.secret_sha256)
        {
            tracing::info!(
                tenant,
                key_id,
                file = %path.display(),
                "development API key reused"
            );
            return Ok(path);
        }
        // A key the database does not know (a new database, a revoked key, another dev
        // tenant): replace it.
    }
    let now = fluxgate::now();
    keys.create_tenant(tenant, now).await?;
    let issued = key::generate(tenant, Some("local development"), now)?;
    keys.create_key(&issued.record).await?;
    write_private(&path, issued.expose())?;
    // Printed for the person at the terminal, on stderr beside (not inside) the log stream.
    eprintln!(
        "\nfluxgate local: development tenant `{tenant}`, API key {} (shown once, kept in {}):\n\n  {}\n\n  curl -H \"Authorization: Bearer $(cat {})\" …\n",
        issued.record.key_id,
        path.display(),
        issued.expose(),
        path.display()
    );
    tracing::info!(tenant, key_id = %issued.record.key_id, file = %path.display(), "development API key created");
    Ok(path)
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
