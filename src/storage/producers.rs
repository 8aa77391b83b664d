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

/// Where a producer's last batch is stored, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The chunk.
    pub chunk: ChunkName,
    /// Offset of the batch in the chunk.
    pub offset: u64,
    /// Batch length.
    pub size: u64,
    /// CRC32C of the batch's bytes (as in its index record).
    pub crc: u32,
}

/// What a write carries, to tell a repeat from another batch sent under
/// the same tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    /// Body length.
    pub size: u64,
    /// CRC32C of the body.
    pub crc: u32,
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
    /// A [`Sequence::Records`] batch that does not start right after the
    /// last stored one (a gap, or an overlap with it).
    OutOfOrder {
        /// The number the batch should have started with (as sent:
        /// modulo the wrap).
        expected: u64,
    },
    /// The tag of the last stored batch, with other content: a reused tag
    /// (two producers sharing an id, or a client bug), never a repeat.
    Mismatch(Position),
}

/// How a tagged write numbers its batch, and which number must follow the
/// producer's last stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// One number per batch (`tag.seq`), any above the last stored one
    /// (HTTP producers: a gap is a batch the producer gave up on).
    Batch(ProducerTag),
    /// Kafka's rule: the batch holds `count` consecutive record numbers
    /// from `first`, as sent (modulo `wrap`: Kafka's are 31-bit and wrap),
    /// and must start right after the last stored one; no gaps. The
    /// stored tag's `seq` is the batch's last number, unwrapped (it only
    /// grows). A producer not in the table may start anywhere.
    Records {
        /// The producer.
        producer: u64,
        /// First record's number, below `wrap`.
        first: u64,
        /// Records in the batch (at least 1).
        count: u64,
        /// Numbers are taken modulo this (at least 2).
        wrap: u64,
    },
}

impl Sequence {
    fn producer(&self) -> u64 {
        match self {
            Self::Batch(t) => t.producer,
            Self::Records { producer, .. } => *producer,
        }
    }
}

/// The dedup table of one category.
#[derive(Debug, Default)]
pub struct Producers {
    by_id: HashMap<u64, ProducerState>,
    /// Producers admitted but not stored yet (no position to remember).
    fresh: HashMap<u64, watch::Sender<bool>>,
}

impl Producers {
    /// Decides about a write tagged `tag` (`tag.producer != 0`) carrying
    /// `content` (`None`: a probe, which only asks). An
    /// [`Admission::Append`] must be followed by [`Producers::finish`].
    pub fn admit(&mut self, tag: ProducerTag, content: Option<Content>) -> Admission {
        self.admit_sequence(Sequence::Batch(tag), content).1
    }

    /// [`Producers::admit`] for a write numbered as `seq` says; also the
    /// tag to store it under (and to [`Producers::finish`] it with).
    pub fn admit_sequence(
        &mut self,
        seq: Sequence,
        content: Option<Content>,
    ) -> (ProducerTag, Admission) {
        let producer = seq.producer();
        if let Some(done) = self.fresh.get(&producer) {
            let tag = resolve(seq, None);
            return (tag, Admission::Wait(done.subscribe()));
        }
        let Some(st) = self.by_id.get_mut(&producer) else {
            self.fresh.insert(producer, watch::Sender::new(false));
            return (resolve(seq, None), Admission::Append);
        };
        st.used = Instant::now();
        let tag = resolve(seq, Some(st.last_seq));
        if let Some(done) = &st.pending {
            return (tag, Admission::Wait(done.subscribe()));
        }
        if let Sequence::Records { count, wrap, .. } = seq {
            // The batch covers `first ..= tag.seq`; one ending at or below
            // the last stored number is a repeat (or older: stale).
            let next = st.last_seq.saturating_add(1);
            let first = tag.seq.saturating_sub(count.max(1) - 1);
            if tag.seq > st.last_seq && first != next {
                return (
                    tag,
                    Admission::OutOfOrder {
                        expected: next % wrap.max(1),
                    },
                );
            }
        }
        (tag, self.admit_known(tag, content))
    }

    /// The admission of `tag` for a producer in the table, not pending.
    fn admit_known(&mut self, tag: ProducerTag, content: Option<Content>) -> Admission {
        let Some(st) = self.by_id.get_mut(&tag.producer) else {
            return Admission::Append;
        };
        if tag.seq == st.last_seq {
            let same = content.is_none_or(|c| c.size == st.last.size && c.crc == st.last.crc);
            return if same {
                Admission::Duplicate(st.last.clone())
            } else {
                Admission::Mismatch(st.last.clone())
            };
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

    /// Forgets every producer whose last batch is in `chunk` (a copy this
    /// server dropped, e.g. because it diverged from its owner's).
    pub fn forget_chunk(&mut self, chunk: &ChunkName) {
        self.by_id
            .retain(|_, st| st.pending.is_some() || &st.last.chunk != chunk);
    }

    /// Rebuilds from tagged batches in the order they were stored
    /// (`tagged`: tag and position), keeping each producer's highest
    /// sequence number and, when there are more producers than
    /// [`MAX_PRODUCERS`], the ones stored last. Linear in the records.
    pub fn rebuild(tagged: impl IntoIterator<Item = (ProducerTag, Position)>) -> Self {
        let mut last: HashMap<u64, (u64, Position, u64)> = HashMap::new();
        for (order, (tag, pos)) in (0u64..).zip(tagged) {
            if !tag.is_tagged() {
                continue;
            }
            let e = last
                .entry(tag.producer)
                .or_insert((tag.seq, pos.clone(), order));
            if tag.seq >= e.0 {
                *e = (tag.seq, pos, order);
            }
            if last.len() > 4 * MAX_PRODUCERS {
                keep_newest(&mut last, MAX_PRODUCERS);
            }
        }
        keep_newest(&mut last, MAX_PRODUCERS);
        let mut by_order: Vec<(u64, u64, u64, Position)> = last
            .into_iter()
            .map(|(p, (seq, pos, order))| (order, p, seq, pos))
            .collect();
        by_order.sort_unstable_by_key(|e| e.0);
        let mut table = Self::default();
        for (_, producer, seq, pos) in by_order {
            table.remember(ProducerTag { producer, seq }, pos);
        }
        table
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

/// The tag a write numbered `seq` is stored under, given the producer's
/// last stored number (`None`: unknown).
fn resolve(seq: Sequence, last: Option<u64>) -> ProducerTag {
    match seq {
        Sequence::Batch(tag) => tag,
        Sequence::Records {
            producer,
            first,
            count,
            wrap,
        } => {
            let count = count.max(1);
            let wrap = wrap.max(1);
            let first = match last {
                None => first % wrap,
                Some(last) => unwrap_near(first % wrap, last.saturating_add(1), wrap),
            };
            ProducerTag {
                producer,
                seq: first.saturating_add(count - 1),
            }
        }
    }
}

/// The number `raw + k * wrap` (k ≥ 0) closest to `near`.
fn unwrap_near(raw: u64, near: u64, wrap: u64) -> u64 {
    let base = (near - near % wrap).saturating_add(raw);
    [base.checked_sub(wrap), Some(base), base.checked_add(wrap)]
        .into_iter()
        .flatten()
        .min_by_key(|c| c.abs_diff(near))
        .unwrap_or(base)
}

/// Keeps the `n` entries of `m` stored last (highest order).
fn keep_newest(m: &mut HashMap<u64, (u64, Position, u64)>, n: usize) {
    if m.len() <= n {
        return;
    }
    let mut orders: Vec<u64> = m.values().map(|e| e.2).collect();
    orders.sort_unstable_by(|a, b| b.cmp(a));
    let cut = orders[n - 1];
    m.retain(|_, e| e.2 >= cut);
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
            crc: 7,
        }
    }

    impl Producers {
        /// `admit` with the content of every test batch.
        fn admit_plain(&mut self, tag: ProducerTag) -> Admission {
            self.admit(tag, Some(Content { size: 10, crc: 7 }))
        }
    }

    #[test]
    fn the_same_tag_with_other_content_is_a_mismatch_and_a_probe_matches_any() {
        let mut p = Producers::default();
        assert!(matches!(p.admit_plain(tag(7, 1)), Admission::Append));
        p.finish(tag(7, 1), Some(pos(0)));
        let other = Content { size: 10, crc: 8 };
        assert!(matches!(
            p.admit(tag(7, 1), Some(other)),
            Admission::Mismatch(_)
        ));
        assert!(matches!(p.admit(tag(7, 1), None), Admission::Duplicate(_)));
    }

    #[test]
    fn a_rebuild_keeps_each_producers_highest_batch_and_the_newest_producers() {
        // 3 records each of 10,000 producers, interleaved: linear time,
        // bounded table, highest sequence number per producer.
        let records = (0..3u64).flat_map(|round| {
            (1..=10_000u64).map(move |id| (tag(id, round + 1), pos(round * 100_000 + id)))
        });
        let t0 = std::time::Instant::now();
        let mut p = Producers::rebuild(records);
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(p.len(), MAX_PRODUCERS);
        // The last-stored producers are kept, at their highest batch.
        assert!(
            matches!(p.admit_plain(tag(10_000, 3)), Admission::Duplicate(x) if x == pos(210_000))
        );
        assert!(matches!(
            p.admit_plain(tag(10_000, 2)),
            Admission::Stale { last: 3 }
        ));
        assert!(
            matches!(p.admit_plain(tag(1, 1)), Admission::Append),
            "forgotten"
        );
    }

    #[test]
    fn dropping_a_copy_forgets_the_producers_whose_last_batch_it_held() {
        let mut p = Producers::default();
        p.remember(tag(1, 1), pos(0));
        let other = Position {
            chunk: ChunkName::parse("n2-chunk000000001").unwrap(),
            ..pos(5)
        };
        p.remember(tag(2, 1), other);
        p.forget_chunk(&ChunkName::parse("n1-chunk000000001").unwrap());
        assert!(matches!(p.admit_plain(tag(1, 1)), Admission::Append));
        assert!(matches!(p.admit_plain(tag(2, 1)), Admission::Duplicate(_)));
    }

    #[test]
    fn a_new_seq_appends_the_same_is_a_duplicate_a_lower_is_stale() {
        let mut p = Producers::default();
        assert!(matches!(p.admit_plain(tag(7, 1)), Admission::Append));
        // A retry while the first is still being appended waits.
        assert!(matches!(p.admit_plain(tag(7, 1)), Admission::Wait(_)));
        p.finish(tag(7, 1), Some(pos(0)));
        assert!(matches!(p.admit_plain(tag(7, 1)), Admission::Duplicate(x) if x == pos(0)));
        // Gaps are allowed (batches the producer dropped).
        assert!(matches!(p.admit_plain(tag(7, 5)), Admission::Append));
        assert!(matches!(p.admit_plain(tag(7, 6)), Admission::Wait(_)));
        p.finish(tag(7, 5), Some(pos(10)));
        assert!(matches!(
            p.admit_plain(tag(7, 1)),
            Admission::Stale { last: 5 }
        ));
        assert!(matches!(p.admit_plain(tag(7, 5)), Admission::Duplicate(x) if x == pos(10)));
        // Another producer is independent.
        assert!(matches!(p.admit_plain(tag(8, 1)), Admission::Append));
    }

    #[test]
    fn record_numbered_batches_follow_each_other_without_gaps_across_the_wrap() {
        const WRAP: u64 = 1 << 31;
        let rec = |first, count| Sequence::Records {
            producer: 9,
            first,
            count,
            wrap: WRAP,
        };
        let c = Some(Content { size: 10, crc: 7 });
        let mut p = Producers::default();
        let (t, a) = p.admit_sequence(rec(0, 5), c);
        assert!(matches!(a, Admission::Append));
        assert_eq!(t, tag(9, 4), "stored under its last record's number");
        p.finish(t, Some(pos(0)));
        let (t, a) = p.admit_sequence(rec(0, 5), c);
        assert_eq!(t, tag(9, 4));
        assert!(matches!(a, Admission::Duplicate(x) if x == pos(0)));
        for (first, count) in [(6, 1), (3, 4)] {
            assert!(matches!(
                p.admit_sequence(rec(first, count), c).1,
                Admission::OutOfOrder { expected: 5 }
            ));
        }
        let (t, a) = p.admit_sequence(rec(5, 2), c);
        assert!(matches!(a, Admission::Append));
        p.finish(t, Some(pos(10)));
        assert!(matches!(
            p.admit_sequence(rec(0, 5), c).1,
            Admission::Stale { last: 6 }
        ));
        // Kafka's numbers wrap at 2^31; the stored ones keep growing.
        p.remember(tag(9, WRAP - 1), pos(20));
        let (t, a) = p.admit_sequence(rec(0, 3), c);
        assert!(matches!(a, Admission::Append));
        assert_eq!(t, tag(9, WRAP + 2));
        p.finish(t, Some(pos(30)));
        assert!(matches!(
            p.admit_sequence(rec(WRAP - 1, 1), c).1,
            Admission::Stale { .. }
        ));
        // A producer the table does not know may start anywhere.
        let (t, a) = p.admit_sequence(
            Sequence::Records {
                producer: 10,
                first: 77,
                count: 1,
                wrap: WRAP,
            },
            c,
        );
        assert!(matches!(a, Admission::Append));
        assert_eq!(t, tag(10, 77));
    }

    #[test]
    fn a_write_that_was_not_stored_can_be_sent_again() {
        let mut p = Producers::default();
        assert!(matches!(p.admit_plain(tag(7, 1)), Admission::Append));
        p.finish(tag(7, 1), None);
        assert!(matches!(p.admit_plain(tag(7, 1)), Admission::Append));
        p.finish(tag(7, 1), Some(pos(0)));
        assert!(matches!(p.admit_plain(tag(7, 2)), Admission::Append));
        p.finish(tag(7, 2), None);
        assert!(matches!(p.admit_plain(tag(7, 2)), Admission::Append));
    }

    #[test]
    fn learned_positions_never_go_back_and_the_table_is_bounded() {
        let mut p = Producers::default();
        p.remember(tag(1, 9), pos(90));
        p.remember(tag(1, 3), pos(30));
        assert!(matches!(p.admit_plain(tag(1, 9)), Admission::Duplicate(x) if x == pos(90)));
        p.remember(tag(0, 3), pos(0));
        assert_eq!(p.len(), 1, "untagged batches are not remembered");
        for id in 2..=(MAX_PRODUCERS as u64 + 10) {
            p.remember(tag(id, 1), pos(id));
        }
        assert_eq!(p.len(), MAX_PRODUCERS);
        // The most recent ones stay.
        let last = MAX_PRODUCERS as u64 + 10;
        assert!(matches!(
            p.admit_plain(tag(last, 1)),
            Admission::Duplicate(_)
        ));
    }

    #[tokio::test]
    async fn waiters_wake_when_the_pending_write_finishes() {
        let mut p = Producers::default();
        assert!(matches!(p.admit_plain(tag(3, 1)), Admission::Append));
        let Admission::Wait(mut done) = p.admit_plain(tag(3, 1)) else {
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
