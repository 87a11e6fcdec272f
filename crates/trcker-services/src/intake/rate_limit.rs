//! Each integration's rate limit, per receiver process: at most its number of
//! postbacks a minute, a burst of them at once and then one each sixtieth of
//! the minute (GCRA, from the `governor` crate). Behind a load balancer with N
//! receivers an integration may get up to N times its limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

/// Integrations whose state a limiter keeps before it forgets idle ones.
const MAX_KEYS: usize = 100_000;

/// One keyed limiter per limit in use (limits are few; integrations many).
#[derive(Default)]
pub(super) struct RateLimiter {
    by_limit: Mutex<HashMap<u32, Arc<DefaultKeyedRateLimiter<String>>>>,
}

impl RateLimiter {
    /// Counts a postback of `integration_id`; when it is over its limit of
    /// `per_minute`, the whole seconds until it may send again.
    pub(super) fn check(&self, integration_id: &str, per_minute: u32) -> Result<(), u64> {
        let Some(limit) = NonZeroU32::new(per_minute) else {
            return Ok(());
        };
        let limiter = {
            let mut by_limit = self.by_limit.lock().unwrap_or_else(|e| e.into_inner());
            by_limit
                .entry(per_minute)
                .or_insert_with(|| {
                    Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_minute(limit)))
                })
                .clone()
        };
        if limiter.len() > MAX_KEYS {
            limiter.retain_recent();
        }
        limiter
            .check_key(&integration_id.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(limiter.clock().now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_within_the_minute_and_says_when_to_retry() {
        let limiter = RateLimiter::default();
        assert_eq!(limiter.check("int_a", 2), Ok(()));
        assert_eq!(limiter.check("int_a", 2), Ok(()));
        let retry = limiter.check("int_a", 2).expect_err("over the limit");
        assert!((1..=30).contains(&retry), "{retry}");
        // Other integrations have their own.
        assert_eq!(limiter.check("int_b", 2), Ok(()));
        // No limit: everything passes.
        assert_eq!(limiter.check("int_c", 0), Ok(()));
    }
}
