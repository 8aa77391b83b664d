//! Kafka offsets ⇄ consumer-group positions of one partition, from the
//! chunks of it held here: what committing an offset stores, and which
//! offset stored positions stand for. OffsetCommit and OffsetFetch use it
//! for partitions this server holds (`offsets.rs`); `GET
//! /peer/kafka/offsets` answers it for a group coordinator that holds no
//! copy (`cluster/kafka_offsets.rs`, `docs/kafka.md`).
//!
//! Committing offset `O` (the next record to read) puts the group at the
//! byte where record `O` starts in `O`'s chunk, and at the end of every
//! older chunk of the owner. The committed offset of stored positions is
//! that of the position in the newest chunk held here that has one (the
//! next chunk's first record when that chunk is finished and a newer one
//! exists).
//!
//! Reads chunks (through the locator), never stores positions.

use std::collections::BTreeMap;

use super::locate::Locator;
use super::offset::KafkaOffset;
use super::partition::Partition;
use super::read::ReadError;
use crate::names::{Category, ChunkName, ServerName};
use crate::storage::Storage;

/// Where committing a Kafka offset puts a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitPlan {
    /// The positions to store, oldest chunk first.
    Positions(Vec<(ChunkName, u64)>),
    /// The offset is past the end of its chunk as held here.
    PastEnd(ChunkName),
}

/// The positions committing `at` in `owner`'s chunks of `category` stores.
///
/// # Errors
/// Read failures while locating the record.
pub async fn commit_plan(
    storage: &Storage,
    loc: &Locator<'_>,
    category: &Category,
    owner: &ServerName,
    at: KafkaOffset,
) -> Result<CommitPlan, ReadError> {
    let part = Partition::of(storage, category, owner);
    let mut out = Vec::new();
    for chunk in part.chunks() {
        let index = chunk.name().index();
        if index < at.chunk {
            out.push((chunk.name().clone(), chunk.state().end));
        } else if index == at.chunk {
            match loc.byte_of(category, chunk, at.ordinal).await? {
                Some(byte) => out.push((chunk.name().clone(), byte)),
                None => return Ok(CommitPlan::PastEnd(chunk.name().clone())),
            }
        }
    }
    Ok(CommitPlan::Positions(out))
}

/// The Kafka offset of a group at `positions` in `owner`'s chunks of
/// `category`: None when no chunk of them held here has a position.
///
/// # Errors
/// Read failures while counting messages.
pub async fn committed(
    storage: &Storage,
    loc: &Locator<'_>,
    category: &Category,
    owner: &ServerName,
    positions: &BTreeMap<ChunkName, u64>,
) -> Result<Option<KafkaOffset>, ReadError> {
    let part = Partition::of(storage, category, owner);
    let chunks = part.chunks();
    let Some(i) = chunks
        .iter()
        .rposition(|c| positions.contains_key(c.name()))
    else {
        return Ok(None);
    };
    let chunk = &chunks[i];
    let pos = positions.get(chunk.name()).copied().unwrap_or(0);
    let s = chunk.state();
    let at = match chunks.get(i + 1) {
        Some(next) if pos >= s.end && (s.sealed || s.closed) => {
            KafkaOffset::start_of(next.name().index())
        }
        _ => {
            let n = loc.ordinal_at(category, chunk, pos.min(s.end)).await?;
            KafkaOffset::start_of(chunk.name().index()).plus(n)
        }
    };
    Ok(Some(at))
}
