//! API key secrets: generation, parsing, hashing and constant-time comparison.
//!
//! A key reads `kiln-<id>-<secret>`: `id` is 12 hex digits (public, shown by `kiln keys list`,
//! used to find the row), `secret` is 256 random bits from the operating system's CSPRNG in
//! hex. Only SHA-256 of the whole key is stored. A fast hash is enough here because the key is
//! high-entropy: a slow password hash (argon2, bcrypt) protects guessable human passwords from
//! brute force, but 2^256 candidates cannot be enumerated at any hashing speed, and a fast hash
//! keeps the check cheap on every request.

use crate::StoreError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every key, so that a leaked key is recognizable in logs and secret scanners.
const PREFIX: &str = "kiln-";
/// Random bytes in the public id.
const ID_BYTES: usize = 6;
/// Random bytes in the secret part (256 bits).
const SECRET_BYTES: usize = 32;

/// The public id of a key (12 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(pub String);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A full API key as the client sends it; shown once at creation, never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret by accident.
        write!(f, "ApiKeySecret(kiln-{}-…)", self.id().map_or("?", |i| i))
    }
}

fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

impl ApiKeySecret {
    /// Draws a new key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, StoreError> {
        let id = random_hex(ID_BYTES)?;
        let secret = random_hex(SECRET_BYTES)?;
        Ok(Self(format!("{PREFIX}{id}-{secret}")))
    }

    /// Wraps a key presented by a client (any string; malformed keys simply never verify).
    pub fn from_presented(key: &str) -> Self {
        Self(key.to_string())
    }

    /// The key as text, to show once to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The id part, if the key has the `kiln-<id>-<secret>` shape.
    pub fn id(&self) -> Option<&str> {
        let rest = self.0.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('-')?;
        let well_formed = id.len() == 2 * ID_BYTES
            && secret.len() == 2 * SECRET_BYTES
            && id.bytes().all(|b| b.is_ascii_hexdigit());
        well_formed.then_some(id)
    }

    /// SHA-256 of the whole key, in hex: what the database stores.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// Whether this key hashes to `stored_hash`, compared in constant time so that the time
    /// taken does not tell an attacker how many leading characters matched.
    pub fn matches(&self, stored_hash: &str) -> bool {
        let ours = self.hash();
        ours.as_bytes().ct_eq(stored_hash.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_well_formed_and_match_only_their_hash() {
        let a = ApiKeySecret::generate().unwrap();
        let b = ApiKeySecret::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), PREFIX.len() + 12 + 1 + 64);
        assert!(a.id().is_some());
        assert!(a.matches(&a.hash()));
        assert!(!b.matches(&a.hash()));
        assert!(!format!("{a:?}").contains(&a.expose()[20..]));
    }

    #[test]
    fn malformed_keys_have_no_id() {
        for k in [
            "",
            "kiln-",
            "sk-abc",
            "kiln-zzzzzzzzzzzz-00",
            "kiln-0123456789ab-short",
        ] {
            assert_eq!(ApiKeySecret::from_presented(k).id(), None, "{k}");
        }
    }
}
