//! Dedup state of idempotent producers in one category: for each producer
//! id, the sequence number of its last stored batch and where that batch
//! is. A write tagged `(producer, seq)` is stored only if `seq` is above
//! the last one; the same `seq` again is a duplicate, answered with the
//! original position; a lower one is a conflict. Writes of one producer
//! are admitted one at a time (a retry that arrives while its original is
//! still being appended waits for it, then is a duplicate).
//!
//! The state is rebuilt from the producer tags in the newest index records
//! (`CategoryLog::producers`), learned from copies of peers' chunks as
//! they arrive, and bounded: at most [`MAX_PRODUCERS`] producers per
//! category, the least recently used forgotten first. Pure bookkeeping: no
//! I/O here.

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::watch;

use super::chunk::index::ProducerTag;
use crate::names::ChunkName;

/// Most producers remembered per category; the least recently used one is
/// forgotten when a new one arrives at a full table.
pub const MAX_PRODUCERS: usize = 4096;

/// Where a producer's last batch is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The chunk.
    pub chunk: ChunkName,
    /// Offset of the batch in the chunk.
    pub offset: u64,
    /// Batch length.
    pub size: u64,
}

#[derive(Debug)]
struct ProducerState {
    /// Sequence number of the last stored batch.
    last_seq: u64,
    /// Where that batch is.
    last: Position,
    /// A write of this producer being appended now (its sequence number),
    /// and how waiters learn that it finished.
    pending: Option<watch::Sender<bool>>,
    used: Instant,
}

/// What to do with a tagged write.
#[derive(Debug)]
pub enum Admission {
    /// Append it; report the outcome with [`Producers::finish`].
    Append,
    /// Already stored, here.
    Duplicate(Position),
    /// Another write of this producer is being appended: wait until this
    /// says `true` (or its sender is gone), then ask again.
    Wait(watch::Receiver<bool>),
    /// `seq` is below the last stored batch's.
    Stale {
        /// The last stored sequence number.
        last: u64,
    },
}

/// The dedup table of one category.
#[derive(Debug, Default)]
pub struct Producers {
    by_id: HashMap<u64, ProducerState>,
    /// Producers admitted but not stored yet (no position to remember).
    fresh: HashMap<u64, watch::Sender<bool>>,
}

impl Producers {
    /// Decides about a write tagged `tag` (`tag.producer != 0`). An
    /// [`Admission::Append`] must be followed by [`Producers::finish`].
    pub fn admit(&mut self, tag: ProducerTag) -> Admission {
        if let Some(done) = self.fresh.get(&tag.producer) {
            return Admission::Wait(done.subscribe());
        }
        let Some(st) = self.by_id.get_mut(&tag.producer) else {
            self.fresh.insert(tag.producer, watch::Sender::new(false));
            return Admission::Append;
        };
        st.used = Instant::now();
        if let Some(done) = &st.pending {
            return Admission::Wait(done.subscribe());
        }
        if tag.seq == st.last_seq {
            return Admission::Duplicate(st.last.clone());
        }
        if tag.seq < st.last_seq {
            return Admission::Stale { last: st.last_seq };
        }
        st.pending = Some(watch::Sender::new(false));
        Admission::Append
    }

    /// Reports the outcome of an admitted write: `Some(position)` when it
    /// was stored, `None` when it was not (it may be sent again). Wakes
    /// the writes of the same producer that waited.
    pub fn finish(&mut self, tag: ProducerTag, stored: Option<Position>) {
        let done = match self.fresh.remove(&tag.producer) {
            Some(done) => Some(done),
            None => self
                .by_id
                .get_mut(&tag.producer)
                .and_then(|st| st.pending.take()),
        };
        if let Some(pos) = stored {
            self.remember(tag, pos);
        }
        if let Some(done) = done {
            done.send_replace(true);
        }
    }

    /// Records that `tag`'s batch is stored at `pos` (an own write, or one
    /// learned from a copy or from the index at startup), unless a later
    /// batch of the producer is known already.
    pub fn remember(&mut self, tag: ProducerTag, pos: Position) {
        if !tag.is_tagged() {
            return;
        }
        if let Some(st) = self.by_id.get_mut(&tag.producer) {
            if tag.seq >= st.last_seq {
                st.last_seq = tag.seq;
                st.last = pos;
            }
            st.used = Instant::now();
            return;
        }
        if self.by_id.len() >= MAX_PRODUCERS {
            self.forget_least_recent();
        }
        self.by_id.insert(
            tag.producer,
            ProducerState {
                last_seq: tag.seq,
                last: pos,
                pending: None,
                used: Instant::now(),
            },
        );
    }

    /// Number of producers remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no producer is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn forget_least_recent(&mut self) {
        let oldest = self
            .by_id
            .iter()
            .filter(|(_, st)| st.pending.is_none())
            .min_by_key(|(_, st)| st.used)
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.by_id.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(producer: u64, seq: u64) -> ProducerTag {
        ProducerTag { producer, seq }
    }

    fn pos(offset: u64) -> Position {
        Position {
            chunk: ChunkName::parse("n1-chunk000000001").unwrap(),
            offset,
            size: 10,
        }
    }

    #[test]
    fn a_new_seq_appends_the_same_is_a_duplicate_a_lower_is_stale() {
        let mut p = Producers::default();
        assert!(matches!(p.admit(tag(7, 1)), Admission::Append));
        // A retry while the first is still being appended waits.
        assert!(matches!(p.admit(tag(7, 1)), Admission::Wait(_)));
        p.finish(tag(7, 1), Some(pos(0)));
        assert!(matches!(p.admit(tag(7, 1)), Admission::Duplicate(x) if x == pos(0)));
        // Gaps are allowed (batches the producer dropped).
        assert!(matches!(p.admit(tag(7, 5)), Admission::Append));
        assert!(matches!(p.admit(tag(7, 6)), Admission::Wait(_)));
        p.finish(tag(7, 5), Some(pos(10)));
        assert!(matches!(p.admit(tag(7, 1)), Admission::Stale { last: 5 }));
        assert!(matches!(p.admit(tag(7, 5)), Admission::Duplicate(x) if x == pos(10)));
        // Another producer is independent.
        assert!(matches!(p.admit(tag(8, 1)), Admission::Append));
    }

    #[test]
    fn a_write_that_was_not_stored_can_be_sent_again() {
        let mut p = Producers::default();
        assert!(matches!(p.admit(tag(7, 1)), Admission::Append));
        p.finish(tag(7, 1), None);
        assert!(matches!(p.admit(tag(7, 1)), Admission::Append));
        p.finish(tag(7, 1), Some(pos(0)));
        assert!(matches!(p.admit(tag(7, 2)), Admission::Append));
        p.finish(tag(7, 2), None);
        assert!(matches!(p.admit(tag(7, 2)), Admission::Append));
    }

    #[test]
    fn learned_positions_never_go_back_and_the_table_is_bounded() {
        let mut p = Producers::default();
        p.remember(tag(1, 9), pos(90));
        p.remember(tag(1, 3), pos(30));
        assert!(matches!(p.admit(tag(1, 9)), Admission::Duplicate(x) if x == pos(90)));
        p.remember(tag(0, 3), pos(0));
        assert_eq!(p.len(), 1, "untagged batches are not remembered");
        for id in 2..=(MAX_PRODUCERS as u64 + 10) {
            p.remember(tag(id, 1), pos(id));
        }
        assert_eq!(p.len(), MAX_PRODUCERS);
        // The most recent ones stay.
        let last = MAX_PRODUCERS as u64 + 10;
        assert!(matches!(p.admit(tag(last, 1)), Admission::Duplicate(_)));
    }

    #[tokio::test]
    async fn waiters_wake_when_the_pending_write_finishes() {
        let mut p = Producers::default();
        assert!(matches!(p.admit(tag(3, 1)), Admission::Append));
        let Admission::Wait(mut done) = p.admit(tag(3, 1)) else {
            panic!("expected a wait")
        };
        // Finished before the waiter looks: nothing is lost.
        p.finish(tag(3, 1), Some(pos(0)));
        tokio::time::timeout(std::time::Duration::from_secs(5), done.wait_for(|d| *d))
            .await
            .unwrap()
            .unwrap();
    }
}
