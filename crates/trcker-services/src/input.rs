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

/// How long an old secret (an integration's, a webhook's) keeps working
/// after a rotation, unless the rotation says otherwise: a day covers a
/// merchant's deploy.
pub const DEFAULT_OVERLAP_HOURS: i64 = 24;
/// The longest overlap a rotation may ask for: a week.
pub const MAX_OVERLAP_HOURS: i64 = 168;

/// The end of a rotation's overlap asked for in hours (default
/// [`DEFAULT_OVERLAP_HOURS`]; 0: none, the old secret stops at once).
pub(crate) fn overlap_until(
    overlap_hours: Option<i64>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, crate::Invalid> {
    match overlap_hours.unwrap_or(DEFAULT_OVERLAP_HOURS) {
        0 => Ok(None),
        h if (1..=MAX_OVERLAP_HOURS).contains(&h) => Ok(Some(now + chrono::Duration::hours(h))),
        _ => Err(crate::Invalid::field(
            "overlap_hours",
            format!("must be 0 to {MAX_OVERLAP_HOURS} hours"),
        )),
    }
}
