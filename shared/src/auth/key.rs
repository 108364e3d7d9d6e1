//! The API key format, `fgk_<key id>_<secret>`, and how a key is checked against its stored
//! hash.
//!
//! The key id (12 hex characters) is public: it names the key in listings, logs and
//! `keys revoke`, and finds its row. The secret is 32 bytes from the operating system's
//! random source, base64url without padding (43 characters).
//!
//! Stored is the SHA-256 of the whole key. A password KDF (argon2, bcrypt) exists to make
//! guessing low-entropy secrets slow; a 256-bit random secret cannot be guessed at any speed,
//! so a plain SHA-256 is the right hash here and keeps authentication cheap on the hot path.
//! Hashes are compared in constant time all the same.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::store::NewApiKey;

pub const PREFIX: &str = "fgk";
const KEY_ID_BYTES: usize = 6;
/// An admin key shorter than this is refused at start: it is compared by a fast hash, which
/// is only safe for secrets too long to guess.
pub const MIN_ADMIN_KEY_CHARS: usize = 32;
const SECRET_BYTES: usize = 32;

/// A whole key as made, to be shown once. Its `Debug` shows the key id only, so it cannot
/// reach a log by accident.
pub struct IssuedKey {
    pub record: NewApiKey,
    secret: String,
}

impl IssuedKey {
    /// The key a client sends: print it once, never log it.
    pub fn expose(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key_id", &self.record.key_id)
            .field("tenant_id", &self.record.tenant_id)
            .field("secret", &"***")
            .finish()
    }
}

/// Makes a new key for `tenant_id`; the caller stores `record` and shows `expose()` once.
pub fn generate(tenant_id: &str, name: Option<&str>, now: DateTime<Utc>) -> Result<IssuedKey> {
    let mut id = [0u8; KEY_ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut id)
        .and_then(|()| getrandom::fill(&mut secret))
        .map_err(|e| Error::dependency_caused("the system random source failed", e))?;
    let key_id = hex::encode(id);
    let full = format!("{PREFIX}_{key_id}_{}", URL_SAFE_NO_PAD.encode(secret));
    Ok(IssuedKey {
        record: NewApiKey {
            key_id,
            tenant_id: tenant_id.to_owned(),
            name: name.map(str::to_owned),
            secret_sha256: hash_hex(&full),
            created_at: now,
        },
        secret: full,
    })
}

/// A new random admin key (256 bits, URL-safe base64: 43 characters), for a local setup that
/// has none configured; deployments bring their own (`openssl rand -base64 32`).
pub fn generate_admin_key() -> Result<String> {
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret)
        .map_err(|e| Error::dependency_caused("the system random source failed", e))?;
    Ok(URL_SAFE_NO_PAD.encode(secret))
}

/// The key record of an existing key (one made by [`generate`], shown once and kept by its
/// holder), so another database can learn the same key; `None` when it has no key's shape.
pub fn record_of(
    presented: &str,
    tenant_id: &str,
    name: Option<&str>,
    now: DateTime<Utc>,
) -> Option<NewApiKey> {
    Some(NewApiKey {
        key_id: key_id(presented)?.to_owned(),
        tenant_id: tenant_id.to_owned(),
        name: name.map(str::to_owned),
        secret_sha256: hash_hex(presented),
        created_at: now,
    })
}

/// The key id of something that has the shape of a fluxgate key (the secret may itself hold
/// `_`, so only the first two separators count).
pub fn key_id(presented: &str) -> Option<&str> {
    let mut parts = presented.splitn(3, '_');
    let (prefix, id, secret) = (parts.next()?, parts.next()?, parts.next()?);
    let id_ok = id.len() == KEY_ID_BYTES * 2 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (prefix == PREFIX && id_ok && !secret.is_empty()).then_some(id)
}

pub fn hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

pub fn hash_hex(text: &str) -> String {
    hex::encode(hash(text))
}

/// Whether `presented` hashes to `stored_hex`, compared in constant time.
pub fn matches(presented: &str, stored_hex: &str) -> bool {
    let Ok(stored) = hex::decode(stored_hex) else {
        return false;
    };
    bool::from(hash(presented).as_slice().ct_eq(stored.as_slice()))
}

/// Whether two digests are equal, in constant time.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_long_random_and_stored_only_as_its_hash() {
        let issued = generate("acme", Some("ci"), crate::now()).expect("random source");
        let key = issued.expose();
        let id = key_id(key).expect("own format");
        assert_eq!(id, issued.record.key_id);
        assert_eq!(key.len(), PREFIX.len() + 1 + 12 + 1 + 43);
        assert!(
            !issued
                .record
                .secret_sha256
                .contains(&key[PREFIX.len() + 14..])
        );
        assert!(matches(key, &issued.record.secret_sha256));
        assert!(!matches(&format!("{key}x"), &issued.record.secret_sha256));
        assert!(!format!("{issued:?}").contains(key));
        let other = generate("acme", None, crate::now()).expect("random source");
        assert_ne!(other.expose(), key);
    }

    #[test]
    fn only_the_own_format_has_a_key_id() {
        assert_eq!(key_id("fgk_0123456789ab_a_b-c"), Some("0123456789ab"));
        assert_eq!(key_id("fgk_0123456789ab_"), None);
        assert_eq!(key_id("fgk_0123_secret"), None);
        assert_eq!(key_id("xyz_0123456789ab_secret"), None);
        assert_eq!(key_id("just-a-token"), None);
    }
}
