//! One partition as chunkbus sees it: the non-empty chunks of one owner
//! in one category, in index order, as this server holds them now; its
//! log start and high watermark; and where a fetch at a Kafka offset
//! starts reading. Offsets in gaps (a deleted chunk, a number past a
//! sealed chunk's last message) lead to the next record.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use super::locate::Locator;
use super::offset::KafkaOffset;
use super::read::ReadError;
use crate::names::{Category, ServerName};
use crate::storage::chunk::Chunk;
use crate::storage::Storage;

/// The chunks of one partition.
pub struct Partition {
    chunks: Vec<Arc<Chunk>>,
}

/// Where a fetch reads.
pub enum Position {
    /// The record at `offset` starts at byte `byte` of `chunk`.
    At {
        /// The chunk.
        chunk: Arc<Chunk>,
        /// Its byte offset.
        byte: u64,
        /// The record's Kafka offset.
        offset: KafkaOffset,
    },
    /// No record at or after the offset yet.
    End,
}

impl Partition {
    /// The chunks of `owner` in `category` held here.
    #[must_use]
    pub fn of(storage: &Storage, category: &Category, owner: &ServerName) -> Self {
        let mut chunks: Vec<Arc<Chunk>> = storage
            .category(category)
            .map(|log| log.chunks())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.name().owner() == owner && c.state().end > 0)
            .collect();
        chunks.sort_by_key(|c| c.name().index());
        Self { chunks }
    }

    /// The chunks, oldest first.
    #[must_use]
    pub fn chunks(&self) -> &[Arc<Chunk>] {
        &self.chunks
    }

    /// The offset of the first record held (0 when empty).
    #[must_use]
    pub fn log_start(&self) -> KafkaOffset {
        self.chunks.first().map_or(KafkaOffset::start_of(0), |c| {
            KafkaOffset::start_of(c.name().index())
        })
    }

    /// The offset the next record will have at most: one past the last
    /// record readable now (0 when empty).
    ///
    /// # Errors
    /// Read failures while counting the last chunk's messages.
    pub async fn high_watermark(
        &self,
        loc: &Locator<'_>,
        category: &Category,
    ) -> Result<KafkaOffset, ReadError> {
        let Some(last) = self.chunks.last() else {
            return Ok(KafkaOffset::start_of(0));
        };
        let n = loc.ordinal_at(category, last, last.state().end).await?;
        Ok(KafkaOffset::start_of(last.name().index()).plus(n))
    }

    /// Where a fetch at `at` (at most the high watermark) reads.
    ///
    /// # Errors
    /// Read failures while locating the record.
    pub async fn position(
        &self,
        loc: &Locator<'_>,
        category: &Category,
        at: KafkaOffset,
    ) -> Result<Position, ReadError> {
        for chunk in self.chunks.iter().filter(|c| c.name().index() >= at.chunk) {
            let index = chunk.name().index();
            if index > at.chunk {
                return Ok(Position::At {
                    chunk: Arc::clone(chunk),
                    byte: 0,
                    offset: KafkaOffset::start_of(index),
                });
            }
            let s = chunk.state();
            match loc.byte_of(category, chunk, at.ordinal).await? {
                Some(byte) if byte < s.end => {
                    return Ok(Position::At {
                        chunk: Arc::clone(chunk),
                        byte,
                        offset: at,
                    })
                }
                // At or past the end of a chunk that will not grow: the
                // next chunk's first record.
                _ if s.sealed || s.closed => {}
                _ => return Ok(Position::End),
            }
        }
        Ok(Position::End)
    }
}

/// A chunk's creation time in ms since the epoch: the log append time of
/// its records (chunkbus keeps no per-message time; the real append time
/// is at most `chunk_rotate_interval` later).
#[must_use]
pub fn timestamp_ms(chunk: &Chunk) -> i64 {
    chunk
        .created()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
