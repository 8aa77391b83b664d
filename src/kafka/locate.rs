//! Kafka offsets ⇄ byte offsets in chunks.
//!
//! A message's number inside its chunk is the count of newlines before
//! it, so mapping needs a scan. [`Positions`] keeps, per chunk, a few
//! recently seen (byte offset, message number) pairs — where the last
//! fetch or produce ended — and scans forward from the nearest one, so a
//! consumer reading in order or a producer appending scans only the new
//! bytes. The cache is bounded (chunks × points) and holds nothing that
//! cannot be recomputed: after a restart or an eviction the scan starts
//! at the chunk's beginning (a 64 MiB chunk is a few ms of `memchr`).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::read::{self, ReadError};
use crate::names::{Category, ChunkName};
use crate::storage::chunk::{Chunk, ReadOutcome};
use crate::tier::Tiering;

/// Chunks with remembered points; past this the cache starts over.
const MAX_CHUNKS: usize = 4096;
/// Points remembered per chunk (the newest ones).
const PER_CHUNK: usize = 8;

type Key = (Category, ChunkName);

/// The bounded cache of (byte offset, message number) points per chunk.
#[derive(Debug, Default)]
pub struct Positions {
    points: Mutex<HashMap<Key, Vec<(u64, u64)>>>,
}

/// What a scan looks for.
#[derive(Clone, Copy)]
enum Target {
    /// The message number at this byte offset (a message boundary).
    Byte(u64),
    /// The byte offset of this message number.
    Ordinal(u64),
}

impl Positions {
    /// Remembers that message number `ordinal` of the chunk starts at
    /// byte `byte`.
    pub fn note(&self, category: &Category, chunk: &ChunkName, byte: u64, ordinal: u64) {
        let mut map = self.points.lock();
        if map.len() >= MAX_CHUNKS && !map.contains_key(&(category.clone(), chunk.clone())) {
            map.clear();
        }
        let v = map.entry((category.clone(), chunk.clone())).or_default();
        if v.iter().any(|p| p.0 == byte) {
            return;
        }
        if v.len() >= PER_CHUNK {
            v.remove(0);
        }
        v.push((byte, ordinal));
    }

    /// The best starting point at or before `target`.
    fn start(&self, key: &Key, target: Target) -> (u64, u64) {
        let map = self.points.lock();
        map.get(key)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&(b, o)| match target {
                Target::Byte(t) => b <= t,
                Target::Ordinal(t) => o <= t,
            })
            .max()
            .unwrap_or((0, 0))
    }
}

/// Reads chunks to map offsets, with a shared [`Positions`] cache.
pub struct Locator<'a> {
    /// The cache.
    pub positions: &'a Positions,
    /// Tiering, for tiered chunks.
    pub tiering: Option<&'a Tiering>,
    /// Bytes read per step (at least `max_message_size`).
    pub window: u64,
}

impl Locator<'_> {
    /// Messages before byte `byte` (a message boundary, at most the
    /// chunk's end).
    ///
    /// # Errors
    /// Read failures.
    pub async fn ordinal_at(
        &self,
        category: &Category,
        chunk: &Chunk,
        byte: u64,
    ) -> Result<u64, ReadError> {
        let (b, o) = self.scan(category, chunk, Target::Byte(byte)).await?;
        debug_assert!(b <= byte);
        Ok(o)
    }

    /// Byte offset of message number `ordinal`, or `None` when the chunk
    /// (as published now) holds fewer messages. `Some(end)` when
    /// `ordinal` is exactly its message count.
    ///
    /// # Errors
    /// Read failures.
    pub async fn byte_of(
        &self,
        category: &Category,
        chunk: &Chunk,
        ordinal: u64,
    ) -> Result<Option<u64>, ReadError> {
        let (b, o) = self.scan(category, chunk, Target::Ordinal(ordinal)).await?;
        Ok((o == ordinal).then_some(b))
    }

    /// Scans forward from the best cached point until `target` or the
    /// chunk's published end; returns the point reached and caches it.
    async fn scan(
        &self,
        category: &Category,
        chunk: &Chunk,
        target: Target,
    ) -> Result<(u64, u64), ReadError> {
        let key = (category.clone(), chunk.name().clone());
        let (mut b, mut o) = self.positions.start(&key, target);
        let reached = |b: u64, o: u64| match target {
            Target::Byte(t) => b >= t,
            Target::Ordinal(t) => o >= t,
        };
        while !reached(b, o) {
            let bytes = match read::read(self.tiering, category, chunk, b, self.window).await? {
                ReadOutcome::Data(d) => d,
                ReadOutcome::Empty { .. } => break,
            };
            let (base, before) = (b, o);
            for nl in memchr::memchr_iter(b'\n', &bytes) {
                let next = base + nl as u64 + 1;
                if matches!(target, Target::Byte(t) if next > t) {
                    break;
                }
                (b, o) = (next, o + 1);
                if reached(b, o) {
                    break;
                }
            }
            if o == before {
                break;
            }
        }
        self.positions.note(category, chunk.name(), b, o);
        Ok((b, o))
    }
}
