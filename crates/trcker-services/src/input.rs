//! Parsing of inputs that several areas take alike.

use trcker_storage::entities::Activity;

/// `active` or `paused`.
pub(crate) fn activity(s: &str) -> Result<Activity, &'static str> {
    s.parse().map_err(|_| "must be active or paused")
}
