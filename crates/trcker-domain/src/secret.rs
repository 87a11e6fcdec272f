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

/// Lower-case hex SHA-256 of bytes (a request's fingerprint).
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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

/// Tokens that let a tenant's test-fire authenticate one test postback at the
/// public receiver without the integration's secret (which we only keep hashed).
/// The token names the integration and an expiry, and is an HMAC-SHA256 under a
/// key all nodes of an installation share.
pub mod test_fire {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    fn mac(key: &[u8], integration_id: &str, expires_unix: i64) -> Option<String> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).ok()?;
        m.update(format!("test-fire\0{integration_id}\0{expires_unix}").as_bytes());
        Some(hex::encode(m.finalize().into_bytes()))
    }

    /// `<integration id>.<expiry>.<mac>`
    pub fn token(key: &[u8], integration_id: &str, expires_unix: i64) -> String {
        format!(
            "{integration_id}.{expires_unix}.{}",
            mac(key, integration_id, expires_unix).unwrap_or_default()
        )
    }

    /// The integration a token names, if it is genuine and not expired.
    pub fn verify(key: &[u8], token: &str, now_unix: i64) -> Option<String> {
        let mut parts = token.splitn(3, '.');
        let (id, exp, given) = (parts.next()?, parts.next()?, parts.next()?);
        let exp: i64 = exp.parse().ok()?;
        if exp < now_unix {
            return None;
        }
        let expected = mac(key, id, exp)?;
        super::secrets_equal(&expected, given).then(|| id.to_owned())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn tokens_verify_until_they_expire() {
            let t = token(b"k", "int_1", 100);
            assert_eq!(verify(b"k", &t, 99), Some("int_1".into()));
            assert_eq!(verify(b"k", &t, 101), None);
            assert_eq!(verify(b"other", &t, 99), None);
            assert_eq!(verify(b"k", &t.replace("int_1", "int_2"), 99), None);
            assert_eq!(verify(b"k", "garbage", 0), None);
        }
    }
}
