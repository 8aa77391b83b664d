//! Kafka offsets of chunkbus messages, pure.
//!
//! A partition is one owner's chunks of a category, in index order. The
//! offset of a message is `chunk_index << 32 | n`, where `n` counts the
//! messages before it in its chunk. Nothing has to be stored to compute
//! it, it is the same on every server holding the chunk, it survives
//! restarts and deletion of older chunks, it grows strictly along the
//! partition and is never reused (chunk indexes never are). A chunk holds
//! fewer than 2³² messages: every message takes at least one byte and
//! chunks are far below 4 GiB. Lag shown by Kafka tools is exact inside a
//! chunk and jumps by 2³² minus the chunk's message count at each chunk
//! boundary (see docs/kafka.md).

/// Bits of the per-chunk message number.
const ORDINAL_BITS: u32 = 32;

/// A message position in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KafkaOffset {
    /// The chunk's index (its name's number).
    pub chunk: u64,
    /// Messages before this one in the chunk.
    pub ordinal: u64,
}

impl KafkaOffset {
    /// The first message of chunk `chunk`.
    #[must_use]
    pub const fn start_of(chunk: u64) -> Self {
        Self { chunk, ordinal: 0 }
    }

    /// Splits a Kafka offset; `None` for a negative one.
    #[must_use]
    pub fn from_i64(v: i64) -> Option<Self> {
        let v = u64::try_from(v).ok()?;
        Some(Self {
            chunk: v >> ORDINAL_BITS,
            ordinal: v & ((1 << ORDINAL_BITS) - 1),
        })
    }

    /// The Kafka offset; `None` if the chunk index or message number is
    /// out of range (not reachable with 9-digit chunk names and chunks
    /// below 4 GiB).
    #[must_use]
    pub fn to_i64(self) -> Option<i64> {
        if self.ordinal >> ORDINAL_BITS != 0 {
            return None;
        }
        let hi = self.chunk.checked_shl(ORDINAL_BITS)?;
        if hi >> ORDINAL_BITS != self.chunk {
            return None;
        }
        i64::try_from(hi | self.ordinal).ok()
    }

    /// The offset `n` messages later in the same chunk.
    #[must_use]
    pub const fn plus(self, n: u64) -> Self {
        Self {
            chunk: self.chunk,
            ordinal: self.ordinal + n,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn layout() {
        assert_eq!(KafkaOffset::start_of(0).to_i64(), Some(0));
        assert_eq!(KafkaOffset::start_of(1).to_i64(), Some(1 << 32));
        assert_eq!(
            KafkaOffset::start_of(1).plus(5).to_i64(),
            Some((1 << 32) + 5)
        );
        assert_eq!(KafkaOffset::from_i64(-1), None);
        assert_eq!(
            KafkaOffset::start_of(0).plus(1 << 32).to_i64(),
            None,
            "a message number past 32 bits has no offset"
        );
        assert_eq!(
            KafkaOffset::start_of(999_999_999).plus(7).to_i64(),
            Some((999_999_999 << 32) + 7)
        );
    }

    proptest! {
        #[test]
        fn round_trips_and_orders(a in 0u64..1_000_000_000, n in 0u64..(1 << 32), b in 0u64..1_000_000_000, m in 0u64..(1 << 32)) {
            let x = KafkaOffset { chunk: a, ordinal: n };
            let y = KafkaOffset { chunk: b, ordinal: m };
            let (ix, iy) = (x.to_i64().unwrap(), y.to_i64().unwrap());
            prop_assert_eq!(KafkaOffset::from_i64(ix), Some(x));
            prop_assert_eq!(x.cmp(&y), ix.cmp(&iy));
        }
    }
}
