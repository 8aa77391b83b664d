//! The bounded cache of open chunk resources: which categories hold their
//! open chunk's files and mapping (and a spare), and which chunks hold a
//! mapping for reads. A holder registers itself when it opens something and
//! stamps its last use on every append or read; when more than
//! `max_open_chunks` are registered, the least recently used are closed,
//! and anything unused for [`IDLE_CLOSE`] is closed too. Closing is the
//! holder's job ([`Holder::close_idle`]: park the open chunk, drop the
//! mapping); the next append or read reopens transparently. So the open
//! file descriptors and mappings of the storage layer are bounded by the
//! cache, not by the number of categories or chunks.
//!
//! This module never opens or closes a file itself and never holds its
//! lock while calling a holder.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::task::TaskTracker;

/// A registered holder unused for this long is closed (its data synced
/// first), even while the cache has room.
pub(crate) const IDLE_CLOSE: Duration = Duration::from_secs(60);

/// Something that holds open files or a mapping of a chunk.
pub(crate) trait Holder: Send + Sync + 'static {
    /// Its key and last use in the cache.
    fn usage(&self) -> &Usage;
    /// Closes what it holds open, if nothing is using it now (blocking).
    /// Returns `false` when it is busy and stays open.
    fn close_idle(&self) -> bool;
}

/// What a holder embeds: its key in the cache and when it was last used.
#[derive(Debug)]
pub(crate) struct Usage {
    key: u64,
    /// Milliseconds since the cache's epoch.
    last: AtomicU64,
}

/// The registry of open holders, bounded by `capacity`.
pub(crate) struct OpenCache {
    capacity: usize,
    epoch: Instant,
    next_key: AtomicU64,
    entries: Mutex<HashMap<u64, Weak<dyn Holder>>>,
    tasks: TaskTracker,
}

impl std::fmt::Debug for OpenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCache")
            .field("capacity", &self.capacity)
            .field("open", &self.entries.lock().len())
            .finish_non_exhaustive()
    }
}

impl OpenCache {
    /// A cache of at most `capacity` (≥ 1) open holders; closing runs on
    /// the blocking pool, tracked by `tasks`.
    pub(crate) fn new(capacity: usize, tasks: TaskTracker) -> Self {
        Self {
            capacity: capacity.max(1),
            epoch: Instant::now(),
            next_key: AtomicU64::new(1),
            entries: Mutex::new(HashMap::new()),
            tasks,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A fresh key for a new holder, used now.
    pub(crate) fn usage(&self) -> Usage {
        Usage {
            key: self.next_key.fetch_add(1, Ordering::Relaxed),
            last: AtomicU64::new(self.now()),
        }
    }

    /// Stamps a use (an append or a read): one clock read and a store.
    pub(crate) fn touch(&self, usage: &Usage) {
        usage.last.store(self.now(), Ordering::Relaxed);
    }

    /// Registers `holder` as holding open files or a mapping, then closes
    /// the least recently used holders if the cache is over capacity.
    pub(crate) fn opened<H: Holder>(self: &Arc<Self>, holder: &Arc<H>) {
        self.touch(holder.usage());
        let weak: Weak<dyn Holder> = Arc::downgrade(holder) as Weak<dyn Holder>;
        let victims = {
            let mut e = self.entries.lock();
            e.insert(holder.usage().key, weak);
            self.over_capacity(&mut e)
        };
        self.close_later(victims);
    }

    /// Number of registered holders.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Closes holders unused for [`IDLE_CLOSE`] (and any over capacity).
    pub(crate) fn close_idle(self: &Arc<Self>) {
        let cutoff = self
            .now()
            .saturating_sub(u64::try_from(IDLE_CLOSE.as_millis()).unwrap_or(u64::MAX));
        let victims = {
            let mut e = self.entries.lock();
            let mut victims = Vec::new();
            e.retain(|_, w| match w.upgrade() {
                None => false,
                Some(h) if h.usage().last.load(Ordering::Relaxed) < cutoff => {
                    victims.push(h);
                    false
                }
                Some(_) => true,
            });
            victims.extend(self.over_capacity(&mut e));
            victims
        };
        self.close_later(victims);
    }

    /// Removes and returns the least recently used holders while the cache
    /// is over capacity, down to 7/8 of it (so a full cache does not pay a
    /// scan per open).
    fn over_capacity(&self, e: &mut HashMap<u64, Weak<dyn Holder>>) -> Vec<Arc<dyn Holder>> {
        if e.len() <= self.capacity {
            return Vec::new();
        }
        e.retain(|_, w| w.strong_count() > 0);
        let target = self.capacity - self.capacity / 8;
        let Some(excess) = e.len().checked_sub(target).filter(|&n| n > 0) else {
            return Vec::new();
        };
        let mut by_age: Vec<(u64, u64)> = e
            .iter()
            .filter_map(|(&k, w)| {
                w.upgrade()
                    .map(|h| (h.usage().last.load(Ordering::Relaxed), k))
            })
            .collect();
        let excess = excess.min(by_age.len());
        if excess < by_age.len() {
            by_age.select_nth_unstable(excess);
        }
        by_age[..excess]
            .iter()
            .filter_map(|&(_, k)| e.remove(&k).and_then(|w| w.upgrade()))
            .collect()
    }

    /// Closes `victims` on the blocking pool (inline without a runtime);
    /// busy ones register again.
    fn close_later(self: &Arc<Self>, victims: Vec<Arc<dyn Holder>>) {
        if victims.is_empty() {
            return;
        }
        let me = Arc::clone(self);
        let job = move || {
            for h in victims {
                if !h.close_idle() {
                    me.entries.lock().insert(h.usage().key, Arc::downgrade(&h));
                }
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            self.tasks.spawn_blocking(job);
        } else {
            job();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    struct Fake {
        usage: Usage,
        open: AtomicBool,
        busy: AtomicBool,
    }

    impl Holder for Fake {
        fn usage(&self) -> &Usage {
            &self.usage
        }
        fn close_idle(&self) -> bool {
            if self.busy.load(Ordering::Relaxed) {
                return false;
            }
            self.open.store(false, Ordering::Relaxed);
            true
        }
    }

    fn fake(cache: &OpenCache) -> Arc<Fake> {
        Arc::new(Fake {
            usage: cache.usage(),
            open: AtomicBool::new(true),
            busy: AtomicBool::new(false),
        })
    }

    #[test]
    fn closes_the_least_recently_used_past_capacity() {
        let cache = Arc::new(OpenCache::new(8, TaskTracker::new()));
        let holders: Vec<_> = (0..8).map(|_| fake(&cache)).collect();
        for (i, h) in holders.iter().enumerate() {
            h.usage.last.store(i as u64, Ordering::Relaxed);
            let weak: Weak<dyn Holder> = Arc::downgrade(h) as Weak<dyn Holder>;
            cache.entries.lock().insert(h.usage.key, weak);
        }
        holders[1].busy.store(true, Ordering::Relaxed);
        // Used later than all of them.
        std::thread::sleep(Duration::from_millis(20));
        let newer = fake(&cache);
        cache.opened(&newer);
        // 9 > 8: down to 7, the two oldest (0 and 1); 1 is busy and stays.
        assert!(!holders[0].open.load(Ordering::Relaxed));
        assert!(holders[1].open.load(Ordering::Relaxed));
        assert!(holders[2..].iter().all(|h| h.open.load(Ordering::Relaxed)));
        assert!(newer.open.load(Ordering::Relaxed));
        assert_eq!(cache.len(), 8);
        // Dropped holders leave the cache without being closed.
        drop(holders);
        cache.opened(&fake(&cache));
        assert!(cache.len() <= 2);
    }
}
