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
//! The owner holds every chunk it wrote, so its answer is final. A
//! replica's copy can lag behind or lack chunks, so it answers only what
//! its copies decide ([`Copies::Replica`]): a commit when it holds
//! offset `O`'s chunk with record `O` in it and every older chunk it
//! reports complete (closed or sealed: the replicator closes a copy only
//! once it holds the owner's final size), a committed offset when the
//! position lies within its copy. Otherwise it does not decide
//! ([`CommitPlan::NotHere`], `None`), and the coordinator asks another
//! holder.
//!
//! Reads chunks (through the locator), never stores positions.

use std::collections::BTreeMap;

use super::locate::Locator;
use super::offset::KafkaOffset;
use super::partition::Partition;
use super::read::ReadError;
use crate::names::{Category, ChunkName, ServerName};
use crate::storage::Storage;

/// Whose chunks are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    /// The owner's own chunks: every chunk it wrote, at its real end.
    Owner,
    /// A replica's copies, which may lag behind the owner or lack chunks.
    Replica,
}

impl Copies {
    /// [`Copies::Owner`] when `me` is `owner`.
    #[must_use]
    pub fn of(me: &ServerName, owner: &ServerName) -> Self {
        if me == owner {
            Self::Owner
        } else {
            Self::Replica
        }
    }
}

/// Where committing a Kafka offset puts a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitPlan {
    /// The positions to store, oldest chunk first.
    Positions(Vec<(ChunkName, u64)>),
    /// The offset is past the end of its chunk (owner only: final).
    PastEnd(ChunkName),
    /// A replica's copies do not decide it: the offset's chunk is not held
    /// here, the offset is past its copy, or an older chunk's copy is
    /// not complete.
    NotHere,
}

/// The positions committing `at` in `owner`'s chunks of `category` stores,
/// as `copies` held here decide it.
///
/// # Errors
/// Read failures while locating the record.
pub async fn commit_plan(
    storage: &Storage,
    loc: &Locator<'_>,
    category: &Category,
    owner: &ServerName,
    at: KafkaOffset,
    copies: Copies,
) -> Result<CommitPlan, ReadError> {
    let part = Partition::of(storage, category, owner);
    let replica = copies == Copies::Replica;
    let mut out = Vec::new();
    let mut found = false;
    let mut newest: Option<u64> = None;
    for chunk in part.chunks() {
        let index = chunk.name().index();
        // A replica may lack a chunk between two it holds (copies are not
        // made in order): only consecutive copies decide.
        let gap = newest.is_some_and(|n| index != n + 1);
        newest = Some(index);
        if replica && gap && index <= at.chunk {
            return Ok(CommitPlan::NotHere);
        }
        if index < at.chunk {
            let s = chunk.state();
            // A copy still growing may end short of the owner's chunk.
            if replica && !(s.sealed || s.closed) {
                return Ok(CommitPlan::NotHere);
            }
            out.push((chunk.name().clone(), s.end));
        } else if index == at.chunk {
            match loc.byte_of(category, chunk, at.ordinal).await? {
                Some(byte) => {
                    out.push((chunk.name().clone(), byte));
                    found = true;
                }
                None if replica => return Ok(CommitPlan::NotHere),
                None => return Ok(CommitPlan::PastEnd(chunk.name().clone())),
            }
        }
    }
    if replica && !found {
        return Ok(CommitPlan::NotHere);
    }
    // The owner has no chunk at the offset's index yet: an offset past
    // the high watermark (which lies in the newest chunk, or is 0 before
    // the first). An offset in a chunk deleted since stores the older
    // ends, if any, as Kafka accepts any commit at or below the end.
    if !found && at.chunk > newest.unwrap_or(0) {
        if let Ok(name) = ChunkName::new(owner.clone(), at.chunk) {
            return Ok(CommitPlan::PastEnd(name));
        }
    }
    Ok(CommitPlan::Positions(out))
}

/// The Kafka offset of a group at `positions` in `owner`'s chunks of
/// `category`: None when no chunk of them held here has a position. With
/// [`Copies::Replica`] also None (not decided here) when the newest
/// position of `owner`'s chunks is in a chunk not held here, or past the
/// end of its copy.
///
/// # Errors
/// Read failures while counting messages.
pub async fn committed(
    storage: &Storage,
    loc: &Locator<'_>,
    category: &Category,
    owner: &ServerName,
    positions: &BTreeMap<ChunkName, u64>,
    copies: Copies,
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
    if copies == Copies::Replica {
        let newest = positions
            .keys()
            .filter(|c| c.owner() == owner)
            .map(ChunkName::index)
            .max();
        // A newer chunk not copied here, or a copy behind the position:
        // answering from it would rewind the group.
        if newest != Some(chunk.name().index()) || pos > s.end {
            return Ok(None);
        }
    }
    // A replica may lack the chunk after this one (copies are not made
    // in order): only the next index itself decides "moved on".
    if copies == Copies::Replica
        && pos >= s.end
        && chunks
            .get(i + 1)
            .is_some_and(|next| next.name().index() != chunk.name().index() + 1)
    {
        return Ok(None);
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fsutil::FaultHook;
    use crate::kafka::locate::Positions;
    use crate::storage::chunk::index::Record;
    use crate::storage::CategoryLog;

    /// `n` messages of 4 bytes (`m-0\n` …) as one batch.
    fn batch(n: u64) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("m-{}\n", i % 10).into_bytes())
            .collect()
    }

    /// Copies `messages` messages of `node1`'s chunk `index` into `log`;
    /// closes the copy (complete) when `complete`.
    fn copy(log: &Arc<CategoryLog>, index: u64, messages: u64, complete: bool) -> ChunkName {
        let name = ChunkName::new(ServerName::parse("node1").unwrap(), index).unwrap();
        let mut w = log.copy_writer(&name).unwrap();
        let data = batch(messages);
        let rec = Record::batch(0, u32::try_from(data.len()).unwrap(), crc32c::crc32c(&data));
        log.append_copy(&mut w, &[rec], &data).unwrap();
        if complete {
            log.finish_copy(w);
        }
        name
    }

    /// Storage of server `node2` in `dir` with category `name` created:
    /// a replica of `node1`'s chunks (storage, category, owner, log).
    fn replica(
        dir: &std::path::Path,
        name: &str,
    ) -> (Storage, Category, ServerName, Arc<CategoryLog>) {
        let storage = Storage::open(
            dir,
            ServerName::parse("node2").unwrap(),
            crate::config::StorageConfig::default(),
            FaultHook::default(),
        )
        .unwrap();
        let category = Category::parse(name).unwrap();
        let log = storage.category_or_create(&category).unwrap();
        (storage, category, ServerName::parse("node1").unwrap(), log)
    }

    /// A replica (`node2`) whose copy of `node1`'s chunk 1 is complete
    /// (10 messages, 40 bytes) and whose copies of chunks 2 and 3 are
    /// still growing (5 messages each, 20 bytes); chunk 4 not copied yet.
    #[tokio::test]
    async fn a_lagging_replica_decides_only_what_its_copies_hold() {
        let tmp = tempfile::tempdir().unwrap();
        let (storage, category, owner, log) = replica(tmp.path(), "c");
        let one = copy(&log, 1, 10, true);
        let two = copy(&log, 2, 5, false);
        let three = copy(&log, 3, 5, false);
        let positions = Positions::default();
        let loc = Locator {
            positions: &positions,
            tiering: None,
            window: 1 << 20,
        };
        let plan = |chunk: u64, ordinal: u64, copies: Copies| {
            let at = KafkaOffset::start_of(chunk).plus(ordinal);
            let (storage, loc, category, owner) = (&storage, &loc, &category, &owner);
            async move {
                commit_plan(storage, loc, category, owner, at, copies)
                    .await
                    .unwrap()
            }
        };

        // Within the copy of chunk 2, the older copy complete: decided.
        assert_eq!(
            plan(2, 3, Copies::Replica).await,
            CommitPlan::Positions(vec![(one.clone(), 40), (two.clone(), 12)])
        );
        // Past the copy of chunk 2: the owner may have it.
        assert_eq!(plan(2, 7, Copies::Replica).await, CommitPlan::NotHere);
        assert_eq!(
            plan(2, 7, Copies::Owner).await,
            CommitPlan::PastEnd(two.clone())
        );
        // Chunk 4 not copied here.
        assert_eq!(plan(4, 0, Copies::Replica).await, CommitPlan::NotHere);
        // Within chunk 3's copy, but chunk 2's copy may end short.
        assert_eq!(plan(3, 2, Copies::Replica).await, CommitPlan::NotHere);
        // Past the owner's newest chunk: past the high watermark.
        assert_eq!(
            plan(4, 0, Copies::Owner).await,
            CommitPlan::PastEnd(ChunkName::new(owner.clone(), 4).unwrap())
        );

        let fetch = |at: Vec<(ChunkName, u64)>| {
            let (storage, loc, category, owner) = (&storage, &loc, &category, &owner);
            async move {
                let at: BTreeMap<ChunkName, u64> = at.into_iter().collect();
                committed(storage, loc, category, owner, &at, Copies::Replica)
                    .await
                    .unwrap()
            }
        };
        // Within the copy: decided.
        assert_eq!(
            fetch(vec![(one.clone(), 40), (two.clone(), 8)]).await,
            Some(KafkaOffset::start_of(2).plus(2))
        );
        // Past the copy's end: not decided (not the copy's end, a rewind).
        assert_eq!(fetch(vec![(two.clone(), 28)]).await, None);
        // The newest position in a chunk not copied here: not decided.
        let four = ChunkName::new(owner.clone(), 4).unwrap();
        assert_eq!(fetch(vec![(three, 20), (four, 4)]).await, None);
    }

    /// A replica holding complete copies of chunks 1 and 3 but none of
    /// chunk 2 (copies are not made in order) decides nothing across the
    /// gap: it would skip chunk 2's records.
    #[tokio::test]
    async fn a_replica_missing_a_chunk_between_its_copies_decides_nothing_across_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (storage, category, owner, log) = replica(tmp.path(), "g");
        let one = copy(&log, 1, 10, true);
        copy(&log, 3, 10, true);
        let positions = Positions::default();
        let loc = Locator {
            positions: &positions,
            tiering: None,
            window: 1 << 20,
        };
        let at = KafkaOffset::start_of(3).plus(1);
        let replica = commit_plan(&storage, &loc, &category, &owner, at, Copies::Replica);
        assert_eq!(replica.await.unwrap(), CommitPlan::NotHere);
        let in_one = KafkaOffset::start_of(1).plus(4);
        let replica = commit_plan(&storage, &loc, &category, &owner, in_one, Copies::Replica);
        assert_eq!(
            replica.await.unwrap(),
            CommitPlan::Positions(vec![(one.clone(), 16)])
        );
        // At the end of chunk 1: the next offset is chunk 2's, which this
        // copy cannot tell from chunk 3's.
        let end_of_one: BTreeMap<ChunkName, u64> = [(one, 40)].into_iter().collect();
        let fetched = committed(
            &storage,
            &loc,
            &category,
            &owner,
            &end_of_one,
            Copies::Replica,
        );
        assert_eq!(fetched.await.unwrap(), None);
    }
}
