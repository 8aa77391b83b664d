//! In-order publication of appends that complete out of order.
//!
//! The writer lock only *reserves* a byte range and an index slot; the bytes
//! are copied outside the lock, so several appends to one chunk copy in
//! parallel. Each then reports completion here, and the published end moves
//! forward only over a contiguous run of completed appends. Readers, sync and
//! acks only ever see that prefix. A failed append "tears" the chunk at its
//! offset: nothing at or past it is ever published. No I/O here.

use std::collections::BTreeMap;

use parking_lot::{Condvar, Mutex};

/// Why a chunk stopped growing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// Offset of the first append that failed.
    pub at: u64,
    /// The failure was a full disk (507 and retry), not an I/O error.
    pub disk_full: bool,
    /// The error, for messages and logs.
    pub reason: String,
}

/// The published prefix of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Published {
    /// End of the contiguous completed prefix, in bytes.
    pub end: u64,
    /// Index records covering that prefix.
    pub records: u64,
}

#[derive(Debug, Default)]
struct Inner {
    published: Published,
    /// offset → (end, record number) of completed appends past `published`.
    pending: BTreeMap<u64, (u64, u64)>,
    torn: Option<Torn>,
    /// Bytes of all appends that reported, successfully or not.
    reported: u64,
}

/// Tracks completions and the published prefix of one chunk.
#[derive(Debug, Default)]
pub struct Publisher {
    inner: Mutex<Inner>,
    settled: Condvar,
}

impl Publisher {
    /// Records the outcome of the append at `[off, end)` with index record
    /// number `record`. Returns the new published prefix if it moved.
    pub fn complete(
        &self,
        off: u64,
        end: u64,
        record: u64,
        outcome: Result<(), Torn>,
    ) -> Option<Published> {
        let mut g = self.inner.lock();
        g.reported += end - off;
        match outcome {
            Ok(()) => {
                g.pending.insert(off, (end, record));
            }
            Err(t) => {
                if g.torn.as_ref().is_none_or(|old| t.at < old.at) {
                    g.torn = Some(t);
                }
            }
        }
        let before = g.published;
        let limit = g.torn.as_ref().map_or(u64::MAX, |t| t.at);
        while g.published.end < limit {
            let at = g.published.end;
            let Some((e, r)) = g.pending.remove(&at) else {
                break;
            };
            g.published = Published {
                end: e,
                records: r + 1,
            };
        }
        let after = g.published;
        drop(g);
        self.settled.notify_all();
        (after != before).then_some(after)
    }

    /// The current published prefix.
    pub fn published(&self) -> Published {
        self.inner.lock().published
    }

    /// The tear, if an append failed.
    pub fn torn(&self) -> Option<Torn> {
        self.inner.lock().torn.clone()
    }

    /// Whether every append up to `reserved_end` has reported (no write
    /// into the chunk is in flight).
    pub fn all_reported(&self, reserved_end: u64) -> bool {
        self.inner.lock().reported >= reserved_end
    }

    /// Blocks until every append up to `reserved_end` has completed or the
    /// chunk is torn before it; returns the final published prefix.
    pub fn wait_settled(&self, reserved_end: u64) -> Published {
        let mut g = self.inner.lock();
        loop {
            let torn_at = g.torn.as_ref().map(|t| t.at);
            let done = g.published.end >= reserved_end
                || torn_at.is_some_and(|at| {
                    g.published.end >= at
                        && g.pending.keys().all(|&o| o > at || o < g.published.end)
                });
            if done {
                return g.published;
            }
            self.settled.wait(&mut g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn torn(at: u64) -> Torn {
        Torn {
            at,
            disk_full: true,
            reason: "full".into(),
        }
    }

    #[test]
    fn publishes_only_contiguous_prefix() {
        let p = Publisher::default();
        assert_eq!(p.complete(10, 20, 1, Ok(())), None);
        assert_eq!(p.complete(20, 25, 2, Ok(())), None);
        assert!(!p.all_reported(25));
        assert_eq!(
            p.complete(0, 10, 0, Ok(())),
            Some(Published {
                end: 25,
                records: 3
            })
        );
        assert!(p.all_reported(25));
        assert_eq!(
            p.wait_settled(25),
            Published {
                end: 25,
                records: 3
            }
        );
    }

    #[test]
    fn a_failure_stops_publication_at_its_offset() {
        let p = Publisher::default();
        p.complete(0, 10, 0, Ok(()));
        p.complete(20, 30, 2, Ok(()));
        assert_eq!(p.complete(10, 20, 1, Err(torn(10))), None);
        assert_eq!(
            p.published(),
            Published {
                end: 10,
                records: 1
            }
        );
        assert_eq!(p.torn().map(|t| t.at), Some(10));
        // Everything reserved has reported: settled at the tear.
        assert_eq!(
            p.wait_settled(30),
            Published {
                end: 10,
                records: 1
            }
        );
    }
}
