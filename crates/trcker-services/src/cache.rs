//! Lookups kept in memory for a few seconds on the hot paths (a click's link,
//! a postback's program and integration), emptied whenever this process's
//! admin API changes something. Other processes see a change within the
//! entries' lifetime.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a cached lookup is trusted without asking the database.
pub const TTL: Duration = Duration::from_secs(5);
const MAX_ENTRIES: u64 = 100_000;

/// The changes made through this process's admin API: each one empties every
/// [`Cache`] before its next lookup.
#[derive(Debug, Clone, Default)]
pub struct Changes(Arc<AtomicU64>);

impl Changes {
    /// Something a cache may hold changed.
    pub fn record(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A lookup cache whose entries live [`TTL`], emptied on every change.
pub struct Cache<K, V> {
    entries: moka::sync::Cache<K, V>,
    changes: Changes,
    /// The change the entries were made after.
    seen: AtomicU64,
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(changes: Changes) -> Self {
        Cache {
            entries: moka::sync::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(TTL)
                .build(),
            seen: AtomicU64::new(changes.current()),
            changes,
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // A load on the hot path; a write only after a change.
        let now = self.changes.current();
        if self.seen.load(Ordering::Acquire) != now {
            self.seen.store(now, Ordering::Release);
            self.entries.invalidate_all();
            return None;
        }
        self.entries.get(key)
    }

    pub fn put(&self, key: K, value: V) {
        self.entries.insert(key, value);
    }
}

impl<K, V> std::fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cache")
    }
}
