//! Slugs: the human-chosen names in public URLs (`/api/r/{brand}/{offer}?via={partner}`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("must be 1 to 64 characters long")]
    Length,
    #[error(
        "may contain only lower-case letters a-z, digits and '-', and must start with a letter or digit"
    )]
    Characters,
}

impl Slug {
    pub fn parse(s: &str) -> Result<Self, SlugError> {
        if s.is_empty() || s.len() > 64 {
            return Err(SlugError::Length);
        }
        let ok = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.as_bytes()[0] != b'-';
        if !ok {
            return Err(SlugError::Characters);
        }
        Ok(Slug(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(Slug::parse("acme").is_ok());
        assert!(Slug::parse("pro-plan-2").is_ok());
        assert_eq!(Slug::parse(""), Err(SlugError::Length));
        assert_eq!(Slug::parse("Acme"), Err(SlugError::Characters));
        assert_eq!(Slug::parse("-acme"), Err(SlugError::Characters));
        assert_eq!(Slug::parse("a/b"), Err(SlugError::Characters));
    }
}
