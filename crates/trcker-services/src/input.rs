//! Parsing of inputs that several areas take alike.

use trcker_storage::entities::Activity;

/// `active` or `paused`.
pub(crate) fn activity(s: &str) -> Result<Activity, &'static str> {
    s.parse().map_err(|_| "must be active or paused")
}

/// A reason, reference or other short text a person types: at most `max`
/// characters as sent, kept trimmed, no control characters inside; `None`
/// when blank.
pub(crate) fn note(s: &str, max: usize) -> Result<Option<String>, String> {
    if s.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(Some(s.to_owned()))
}

/// A [`note`] that must be given.
pub(crate) fn required_note(s: &str, max: usize) -> Result<String, String> {
    note(s, max)?.ok_or_else(|| "must not be empty".to_owned())
}
