//! The one TLS crypto provider of every binary: rustls on ring.
//!
//! sqlx, the BigQuery client and the AWS SDK (see [`crate::aws`]) name ring themselves; the
//! Google clients (Pub/Sub, its credentials) are built without their own provider (theirs is
//! aws-lc-rs) and take the process's default one, which must then be installed before they
//! are built: their constructors here call [`install_crypto_provider`] first.

/// Installs ring as the process's default rustls provider, unless one is installed already.
pub fn install_crypto_provider() {
    // `Err` only says a default is in place already (an earlier call): that one stays, and
    // with only ring compiled into rustls it can only be ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
