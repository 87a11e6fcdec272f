//! Secrets we hand out (API keys, integration secrets, invite tokens) and how we
//! keep them: only a SHA-256 hash is stored. These secrets carry 190+ random bits,
//! so a fast hash is enough to make a stolen database useless for authentication
//! while letting each request find its key by an index lookup.

use rand::Rng;
use sha2::{Digest, Sha256};

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `len` random alphanumeric characters (about 5.95 bits each).
pub fn random_alnum(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

/// A tenant API key: `trk_` and 40 random characters (~238 bits).
pub fn new_api_key() -> String {
    format!("trk_{}", random_alnum(40))
}

/// An integration's postback secret: 64 random characters (~381 bits).
pub fn new_postback_secret() -> String {
    random_alnum(64)
}

/// The stored form of a secret: lower-case hex SHA-256.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two secrets in constant time.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_their_shape_and_hash_stably() {
        let s = new_postback_secret();
        assert_eq!(s.len(), 64);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(s, new_postback_secret());
        assert_eq!(hash_secret("x"), hash_secret("x"));
        assert_eq!(hash_secret("x").len(), 64);
        assert!(new_api_key().starts_with("trk_"));
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
    }
}
