//! What each replica reported holding of this server's chunks, and the
//! waits of `min_sync_replicas` writes on those reports.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::protocol::Held;

/// Key of a chunk: (category, chunk name).
type Key = (String, String);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Pos {
    written: u64,
    synced: u64,
}

/// Replica reports and the writes waiting on them.
#[derive(Debug)]
pub struct Progress {
    /// peer name → chunk → position.
    held: Mutex<HashMap<String, HashMap<Key, Pos>>>,
    /// Bumped on every report.
    reported: watch::Sender<u64>,
    /// Writes waiting for replicas to fdatasync.
    sync_waiters: AtomicUsize,
    /// Bumped when a write needs replicas to fdatasync (wakes their polls).
    sync_asked: watch::Sender<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
            reported: watch::Sender::new(0),
            sync_waiters: AtomicUsize::new(0),
            sync_asked: watch::Sender::new(0),
        }
    }
}

/// What a `min_sync_replicas` write waits for.
#[derive(Debug, Clone, Copy)]
pub struct Need<'a> {
    /// Category of the chunk.
    pub category: &'a str,
    /// Chunk written to.
    pub chunk: &'a str,
    /// End of the write: replicas must hold `[0, end)`.
    pub end: u64,
    /// How many replicas (`K`).
    pub replicas: usize,
    /// Held means fdatasync'd (`sync=1`).
    pub durable: bool,
}

/// Keeps a write counted among the sync waiters while it lives.
#[derive(Debug)]
pub struct SyncWaiter<'a> {
    progress: &'a Progress,
}

impl Drop for SyncWaiter<'_> {
    fn drop(&mut self) {
        self.progress.sync_waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Progress {
    /// Records a replica's report.
    pub fn report(&self, peer: &str, held: &[Held]) {
        if held.is_empty() {
            return;
        }
        let mut g = self.held.lock();
        let map = g.entry(peer.to_owned()).or_default();
        for h in held {
            let p = map
                .entry((h.category.clone(), h.chunk.clone()))
                .or_default();
            p.written = p.written.max(h.written);
            p.synced = p.synced.max(h.synced.min(h.written));
        }
        drop(g);
        self.reported.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Forgets a deleted chunk.
    pub fn forget(&self, category: &str, chunk: &str) {
        let key = (category.to_owned(), chunk.to_owned());
        for map in self.held.lock().values_mut() {
            map.remove(&key);
        }
    }

    /// Whether replicas should fdatasync what they hold now.
    #[must_use]
    pub fn sync_wanted(&self) -> bool {
        self.sync_waiters.load(Ordering::Acquire) > 0
    }

    /// A receiver woken when a write asks replicas to sync.
    #[must_use]
    pub fn subscribe_sync(&self) -> watch::Receiver<u64> {
        self.sync_asked.subscribe()
    }

    /// Whether `peer` reported bytes it has not synced yet.
    #[must_use]
    pub fn has_unsynced(&self, peer: &str) -> bool {
        self.held
            .lock()
            .get(peer)
            .is_some_and(|m| m.values().any(|p| p.synced < p.written))
    }

    /// Counts this write among those that need replicas to sync; call
    /// before appending so replicas see the request in their next poll.
    #[must_use]
    pub fn sync_waiter(&self) -> SyncWaiter<'_> {
        self.sync_waiters.fetch_add(1, Ordering::AcqRel);
        SyncWaiter { progress: self }
    }

    /// Number of peers holding `[0, end)` of the chunk (fdatasync'd if `durable`).
    #[must_use]
    pub fn holders(&self, category: &str, chunk: &str, end: u64, durable: bool) -> usize {
        let key = (category.to_owned(), chunk.to_owned());
        self.held
            .lock()
            .values()
            .filter(|m| {
                m.get(&key).is_some_and(|p| {
                    if durable {
                        p.synced >= end
                    } else {
                        p.written >= end
                    }
                })
            })
            .count()
    }

    /// Waits until `need.replicas` peers hold `[0, need.end)` of the chunk,
    /// at most `limit` or until `stop` resolves.
    ///
    /// # Errors
    /// How many peers held it when the wait ended unsatisfied.
    pub async fn wait_for(
        &self,
        need: &Need<'_>,
        limit: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), usize> {
        let Need {
            category,
            chunk,
            end,
            replicas: k,
            durable,
        } = *need;
        let deadline = tokio::time::Instant::now() + limit;
        let mut rx = self.reported.subscribe();
        tokio::pin!(stop);
        loop {
            rx.borrow_and_update();
            let have = self.holders(category, chunk, end, durable);
            if have >= k {
                return Ok(());
            }
            if durable && self.holders(category, chunk, end, false) > have {
                // Some replica has the bytes but not on disk: ask again.
                self.sync_asked.send_modify(|v| *v = v.wrapping_add(1));
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Err(have) },
                () = tokio::time::sleep_until(deadline) => return Err(self.holders(category, chunk, end, durable)),
                () = &mut stop => return Err(have),
            }
        }
    }

    /// Per peer: number of chunks reported and bytes written/synced
    /// (for the status endpoint).
    #[must_use]
    pub fn summary(&self) -> HashMap<String, (usize, u64, u64)> {
        self.held
            .lock()
            .iter()
            .map(|(peer, m)| {
                let (w, s) = m
                    .values()
                    .fold((0, 0), |(w, s), p| (w + p.written, s + p.synced));
                (peer.clone(), (m.len(), w, s))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(chunk: &str, written: u64, synced: u64) -> Held {
        Held {
            category: "c".into(),
            chunk: chunk.into(),
            written,
            synced,
        }
    }

    #[tokio::test]
    async fn waits_until_enough_replicas_hold_the_bytes() {
        let p = std::sync::Arc::new(Progress::default());
        p.report("n2", &[held("x", 10, 0)]);
        assert_eq!(p.holders("c", "x", 10, false), 1);
        assert_eq!(p.holders("c", "x", 10, true), 0);
        let need = |durable| Need {
            category: "c",
            chunk: "x",
            end: 10,
            replicas: 2,
            durable,
        };
        let timed_out = p
            .wait_for(
                &need(false),
                Duration::from_millis(20),
                std::future::pending(),
            )
            .await;
        assert_eq!(timed_out, Err(1));
        let p2 = std::sync::Arc::clone(&p);
        let waiter = tokio::spawn(async move {
            p2.wait_for(&need(true), Duration::from_secs(5), std::future::pending())
                .await
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        p.report("n3", &[held("x", 12, 12)]);
        p.report("n2", &[held("x", 10, 10)]);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }
}
