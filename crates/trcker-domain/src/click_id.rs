//! Click ids: what a customer's browser carries from the click to the order.
//!
//! 32 characters of lower-case Crockford base32 (URL-safe, case-insensitive on
//! input): the first 10 encode the click's milliseconds since the Unix epoch
//! (so ids sort by time and index well), the last 22 carry 110 random bits
//! (unguessable: far above the 96 bits the contract asks for).

use std::fmt;

use rand::Rng;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const TIME_CHARS: usize = 10;
const RANDOM_CHARS: usize = 22;
pub const CLICK_ID_LEN: usize = TIME_CHARS + RANDOM_CHARS;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClickId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClickIdError {
    #[error("a click id has {CLICK_ID_LEN} characters, this one has {0}")]
    Length(usize),
    #[error("a click id uses only the characters 0-9 and a-z except i, l, o and u")]
    Alphabet,
}

impl ClickId {
    /// A fresh click id for a click made at `unix_millis`.
    pub fn generate(unix_millis: u64) -> Self {
        let mut out = String::with_capacity(CLICK_ID_LEN);
        for i in (0..TIME_CHARS).rev() {
            out.push(ALPHABET[((unix_millis >> (5 * i)) & 31) as usize] as char);
        }
        let mut rng = rand::rng();
        for _ in 0..RANDOM_CHARS {
            out.push(ALPHABET[rng.random_range(0..32)] as char);
        }
        ClickId(out)
    }

    pub fn now() -> Self {
        Self::generate(chrono::Utc::now().timestamp_millis().max(0) as u64)
    }

    /// Parses a click id as a merchant sends it back (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, ClickIdError> {
        let s = s.trim();
        if s.len() != CLICK_ID_LEN {
            return Err(ClickIdError::Length(s.chars().count()));
        }
        let lower = s.to_ascii_lowercase();
        if !lower.bytes().all(|b| ALPHABET.contains(&b)) {
            return Err(ClickIdError::Alphabet);
        }
        Ok(ClickId(lower))
    }

    /// The time the click was made, in milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> u64 {
        self.0.bytes().take(TIME_CHARS).fold(0u64, |acc, b| {
            let v = ALPHABET.iter().position(|&a| a == b).unwrap_or(0) as u64;
            (acc << 5) | v
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ClickId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn click_ids_are_time_ordered_and_round_trip() {
        let a = ClickId::generate(1_700_000_000_000);
        let b = ClickId::generate(1_700_000_000_001);
        assert!(a < b);
        assert_eq!(a.unix_millis(), 1_700_000_000_000);
        assert_eq!(ClickId::parse(&a.as_str().to_uppercase()), Ok(a.clone()));
        assert_eq!(a.as_str().len(), 32);
    }

    #[test]
    fn malformed_click_ids_are_rejected_with_a_reason() {
        assert_eq!(ClickId::parse("abc123"), Err(ClickIdError::Length(6)));
        assert_eq!(
            ClickId::parse("0000000000iiiiiiiiiiiiiiiiiiiiii"),
            Err(ClickIdError::Alphabet)
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = ClickId::parse(&s);
        }

        #[test]
        fn time_survives_the_encoding(ms in 0u64..(1u64 << 48)) {
            prop_assert_eq!(ClickId::generate(ms).unix_millis(), ms);
        }
    }
}
