//! Workspace keys. Keys are 192 random bits, so a fast hash (SHA-256) is enough to store them: a
//! slow password hash protects low-entropy secrets, which these are not, and ingestion checks a
//! key on every request.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Which of a workspace's two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// Public-safe key for Segment ingestion and the web widget.
    Write,
    /// Secret key for the REST API.
    Api,
}

impl KeyKind {
    /// The prefix a key of this kind starts with, so a leaked key is recognisable.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Write => "wk",
            KeyKind::Api => "sk",
        }
    }

    /// The name used in storage and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Write => "write",
            KeyKind::Api => "api",
        }
    }
}

/// A new key of the given kind, to be shown once and stored only as [`hash_key`].
pub fn generate_key(kind: KeyKind) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{}_{}", kind.prefix(), hex::encode(bytes))
}

/// A new random token of 256 bits, `prefix_` + hex: session ids and other one-off secrets.
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Constant-time comparison for secrets such as the operator token.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_unique_and_hash_stably() {
        let a = generate_key(KeyKind::Write);
        let b = generate_key(KeyKind::Write);
        assert!(a.starts_with("wk_") && a.len() == 3 + 48);
        assert_ne!(a, b);
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
        assert!(generate_key(KeyKind::Api).starts_with("sk_"));
    }

    #[test]
    fn secret_comparison() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
    }
}
