//! Refusing addresses that keep failing to authenticate: an address that
//! sent [`MAX_FAILURES`] (or the operator's `auth_failures_per_minute`)
//! wrong API keys or postback secrets within a minute is refused (429 with `Retry-After`) until that minute is over,
//! whatever it sends; other addresses are not affected. Counted per
//! process, so N web processes behind a balancer allow N times as many
//! tries; a 256-bit secret needs far more than any of them allows.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Failures an address may have in one window, unless configured otherwise.
pub const MAX_FAILURES: u32 = 20;
/// The window, counted from an address's first failure.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; a spray of addresses evicts the least used.
const MAX_ADDRESSES: u64 = 100_000;

struct Window {
    started: Instant,
    failures: AtomicU32,
}

/// Failures counted per key (an address, an account) in a window that starts
/// at the key's first failure: a key with `max` of them is refused until its
/// window is over.
pub struct Failures<K> {
    windows: moka::sync::Cache<K, Arc<Window>>,
    max: u32,
    window: Duration,
}

impl<K: Hash + Eq + Send + Sync + 'static> Failures<K> {
    /// Refuses a key once it has `max` failures (at least one) within
    /// `window`; `capacity` keys are tracked at once.
    pub fn new(max: u32, window: Duration, capacity: u64) -> Self {
        Failures {
            windows: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(window)
                .build(),
            max: max.max(1),
            window,
        }
    }

    /// `Err(seconds)` while `key` is refused: when to retry.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        let Some(w) = self.windows.get(key) else {
            return Ok(());
        };
        if w.failures.load(Ordering::Relaxed) < self.max {
            return Ok(());
        }
        let left = self.window.saturating_sub(w.started.elapsed());
        Err(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    /// Counts a failure of `key`.
    pub fn failed(&self, key: K)
    where
        K: Clone,
    {
        let w = self.windows.get_with(key, || {
            Arc::new(Window {
                started: Instant::now(),
                failures: AtomicU32::new(0),
            })
        });
        w.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets `key`'s failures (it proved itself).
    pub fn forget(&self, key: &K) {
        self.windows.invalidate(key);
    }
}

/// Failed authentications per client address.
pub struct AuthFailures(Failures<IpAddr>);

impl Default for AuthFailures {
    fn default() -> Self {
        AuthFailures::new(MAX_FAILURES)
    }
}

impl AuthFailures {
    /// Refuses an address once it has `max` failures in a window (at least one).
    pub fn new(max: u32) -> Self {
        AuthFailures(Failures::new(max, WINDOW, MAX_ADDRESSES))
    }

    /// `Err(seconds)` while `ip` is refused: when to retry.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), u64> {
        ip.map_or(Ok(()), |ip| self.0.check(&ip))
    }

    /// Counts a failed authentication from `ip`.
    pub fn failed(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.0.failed(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_and_others_are_not() {
        let guard = AuthFailures::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..MAX_FAILURES - 1 {
            guard.failed(Some(a));
        }
        assert_eq!(guard.check(Some(a)), Ok(()));
        guard.failed(Some(a));
        let retry = guard.check(Some(a)).expect_err("refused");
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(guard.check(Some(b)), Ok(()));
        assert_eq!(guard.check(None), Ok(()));
    }

    #[test]
    fn the_operator_sets_how_many_failures_an_address_may_make() {
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let strict = AuthFailures::new(2);
        strict.failed(Some(a));
        assert_eq!(strict.check(Some(a)), Ok(()));
        strict.failed(Some(a));
        assert!(strict.check(Some(a)).is_err());
        let lenient = AuthFailures::new(MAX_FAILURES * 10);
        for _ in 0..MAX_FAILURES * 5 {
            lenient.failed(Some(a));
        }
        assert_eq!(lenient.check(Some(a)), Ok(()));
        // Zero would refuse every address at once: one is the least.
        let zero = AuthFailures::new(0);
        assert_eq!(zero.check(Some(a)), Ok(()));
    }
}
