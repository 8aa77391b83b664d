//! Idempotent producers' writes to a category: admission against the
//! category's dedup table ([`Producers`]), the tagged append (run to
//! completion in its own task, so a request dropped mid-way still records
//! what it stored), learning tags from copies of peers' chunks, and the
//! table's rebuild from the producer tags in the index records of the
//! newest chunks, the first time the category needs it.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{Appended, CategoryLog};
use crate::names::ChunkName;
use crate::storage::chunk::format::CheckedBody;
use crate::storage::chunk::index::{ProducerTag, Record};
use crate::storage::chunk::Chunk;
use crate::storage::producers::{Admission, Content, Position, Producers, Sequence};
use crate::storage::StorageError;

/// Newest chunks of each owner whose index records always rebuild the
/// table.
pub const REBUILD_CHUNKS_PER_OWNER: usize = 2;

/// Chunks written within this long before the rebuild (or created since
/// the server started) rebuild the table too, however many there are: a
/// producer whose batch is that recent is remembered even if plain writes
/// filled newer chunks since (its retry comes within its delivery
/// timeout, 60 s by default).
pub const REBUILD_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The outcome of a tagged write.
#[derive(Debug)]
pub enum TaggedAppend {
    /// Stored now.
    Stored(Appended),
    /// Stored before: the original batch.
    Duplicate(Duplicate),
}

/// The outcome of an admission.
enum Admitted {
    /// Stored before.
    Duplicate(Duplicate),
    /// May be appended; the guard reports the outcome.
    Append(AdmissionGuard),
}

/// An admitted tagged write: reports its outcome to the table when
/// dropped (stored at `stored`, or not stored), so an admission can never
/// be left pending, whatever cancels the write.
struct AdmissionGuard {
    log: Arc<CategoryLog>,
    tag: ProducerTag,
    stored: Option<Position>,
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        self.log
            .producers()
            .lock()
            .finish(self.tag, self.stored.take());
    }
}

/// Where the original of a duplicate write is.
#[derive(Debug)]
pub struct Duplicate {
    /// The original batch.
    pub position: Position,
    /// Its chunk, if still held here (to wait for its durability); `None`
    /// when it was deleted since (acked: it was durable long ago).
    pub chunk: Option<Arc<Chunk>>,
}

impl CategoryLog {
    /// The category's dedup table, rebuilt from the newest index records
    /// the first time (blocking reads of a few index files).
    pub(super) fn producers(&self) -> &Mutex<Producers> {
        self.producers
            .get_or_init(|| Mutex::new(self.rebuild_producers()))
    }

    fn rebuild_producers(&self) -> Producers {
        let since = std::time::SystemTime::now()
            .checked_sub(REBUILD_WINDOW)
            .unwrap_or(std::time::UNIX_EPOCH);
        let chunks: Vec<Arc<Chunk>> = {
            let all = self.chunks.read();
            let mut picked: Vec<Arc<Chunk>> = Vec::new();
            let mut per_owner: std::collections::HashMap<&crate::names::ServerName, usize> =
                std::collections::HashMap::new();
            // Ordered by owner, then index: walk each owner's newest first.
            for c in all.values().rev() {
                if c.is_tiered() || c.state().end == 0 {
                    continue;
                }
                let newer_of_owner = per_owner.entry(c.name().owner()).or_insert(0);
                if *newer_of_owner < REBUILD_CHUNKS_PER_OWNER || c.created() >= since {
                    *newer_of_owner += 1;
                    picked.push(Arc::clone(c));
                }
            }
            picked.reverse(); // oldest first: the order they were stored in
            picked
        };
        let mut tagged = Vec::new();
        for chunk in &chunks {
            match chunk.tagged_records() {
                Ok(records) => {
                    tagged.extend(records.iter().map(|r| (r.tag, position(chunk.name(), r))));
                }
                Err(e) => tracing::warn!(
                    category = %self.category,
                    chunk = %chunk.name(),
                    error = %crate::error_chain(&e),
                    "cannot read producer tags; retries of batches in this chunk may be stored again"
                ),
            }
        }
        let table = Producers::rebuild(tagged);
        if !table.is_empty() {
            tracing::debug!(category = %self.category, producers = table.len(), chunks = chunks.len(), "idempotent producers rebuilt from the index");
        }
        table
    }

    /// Appends a write tagged by an idempotent producer: stored once, a
    /// repeat answered with the original's position (see
    /// [`Producers`](crate::storage::producers::Producers)).
    ///
    /// # Errors
    /// [`StorageError::StaleSequence`] for a sequence number below the
    /// producer's last stored one, and everything
    /// [`CategoryLog::append`] fails with.
    pub async fn append_tagged(
        self: &Arc<Self>,
        frames: Vec<Bytes>,
        body: CheckedBody,
        tag: ProducerTag,
    ) -> Result<TaggedAppend, StorageError> {
        self.append_sequenced(frames, body, Sequence::Batch(tag))
            .await
    }

    /// [`CategoryLog::append_tagged`] for a write numbered as `seq` says
    /// (a Kafka idempotent producer's batch: [`Sequence::Records`]).
    ///
    /// # Errors
    /// As [`CategoryLog::append_tagged`], and
    /// [`StorageError::OutOfOrderSequence`].
    pub async fn append_sequenced(
        self: &Arc<Self>,
        frames: Vec<Bytes>,
        body: CheckedBody,
        seq: Sequence,
    ) -> Result<TaggedAppend, StorageError> {
        let content = Content {
            size: body.len,
            crc: body.crc,
        };
        match self.admit_tagged(seq, Some(content)).await? {
            Admitted::Duplicate(d) => Ok(TaggedAppend::Duplicate(d)),
            Admitted::Append(guard) => self.append_admitted(frames, body, guard).await,
        }
    }

    /// Whether this server holds the batch tagged `tag` (an own write or a
    /// copy of another server's): its position, or
    /// [`StorageError::NotKnownHere`]. Stores nothing. What an idempotent
    /// producer asks before it fails over with a batch in doubt.
    ///
    /// # Errors
    /// [`StorageError::NotKnownHere`], [`StorageError::StaleSequence`].
    pub async fn find_tagged(
        self: &Arc<Self>,
        tag: ProducerTag,
    ) -> Result<Duplicate, StorageError> {
        match self.admit_tagged(Sequence::Batch(tag), None).await? {
            Admitted::Duplicate(d) => Ok(d),
            // Released at once (the guard's drop): nothing is stored.
            Admitted::Append(_) => Err(StorageError::NotKnownHere {
                category: self.category.to_string(),
                producer: tag.producer,
                seq: tag.seq,
            }),
        }
    }

    /// Admission of `seq`, waiting while another write of the producer is
    /// being appended.
    async fn admit_tagged(
        self: &Arc<Self>,
        seq: Sequence,
        content: Option<Content>,
    ) -> Result<Admitted, StorageError> {
        if self.producers.get().is_none() {
            let log = Arc::clone(self);
            if let Err(e) = tokio::task::spawn_blocking(move || {
                log.producers();
            })
            .await
            {
                tracing::error!(error = %e, "producer table rebuild failed");
            }
        }
        loop {
            let (tag, admission) = self.producers().lock().admit_sequence(seq, content);
            match admission {
                Admission::Append => {
                    return Ok(Admitted::Append(AdmissionGuard {
                        log: Arc::clone(self),
                        tag,
                        stored: None,
                    }))
                }
                Admission::Duplicate(position) => {
                    let chunk = self.chunk(&position.chunk);
                    return Ok(Admitted::Duplicate(Duplicate { position, chunk }));
                }
                Admission::Mismatch(position) => {
                    return Err(StorageError::TagReused {
                        category: self.category.to_string(),
                        producer: tag.producer,
                        seq: tag.seq,
                        chunk: position.chunk.to_string(),
                        offset: position.offset,
                    })
                }
                Admission::Stale { last } => {
                    return Err(StorageError::StaleSequence {
                        category: self.category.to_string(),
                        producer: tag.producer,
                        seq: tag.seq,
                        last,
                    })
                }
                Admission::OutOfOrder { expected } => {
                    return Err(StorageError::OutOfOrderSequence {
                        category: self.category.to_string(),
                        producer: tag.producer,
                        seq: tag.seq,
                        expected,
                    })
                }
                Admission::Wait(mut done) => {
                    // Err: the other write's task is gone; ask again.
                    let _ = done.wait_for(|d| *d).await;
                }
            }
        }
    }

    /// The append of an admitted tagged write.
    async fn append_admitted(
        self: &Arc<Self>,
        frames: Vec<Bytes>,
        body: CheckedBody,
        mut guard: AdmissionGuard,
    ) -> Result<TaggedAppend, StorageError> {
        // Its own task: the outcome is recorded even if this request is
        // dropped (the client gave up) while the body is being appended.
        let log = Arc::clone(self);
        let crc = body.crc;
        let task = tokio::spawn(async move {
            let result = log.append_with(frames, body, guard.tag).await;
            guard.stored = result.as_ref().ok().map(|a| Position {
                chunk: a.chunk.name().clone(),
                offset: a.offset,
                size: a.size,
                crc,
            });
            drop(guard);
            result
        });
        match task.await {
            Ok(result) => result.map(TaggedAppend::Stored),
            Err(e) => Err(StorageError::io(
                "append to",
                &self.dir,
                std::io::Error::other(format!("append task failed: {e}")),
            )),
        }
    }

    /// Forgets what the table learned from copy `chunk`, which is being
    /// removed (deleted by its owner, or diverged from it).
    pub(super) fn forget_copied(&self, chunk: &ChunkName) {
        if let Some(table) = self.producers.get() {
            table.lock().forget_chunk(chunk);
        }
    }

    /// Learns the producer tags of batches copied from a peer's chunk.
    pub(super) fn learn_copied(&self, chunk: &ChunkName, records: &[Record]) {
        if records.iter().all(|r| !r.tag.is_tagged()) {
            return;
        }
        let mut table = self.producers().lock();
        for r in records {
            table.remember(r.tag, position(chunk, r));
        }
    }
}

fn position(chunk: &ChunkName, r: &Record) -> Position {
    Position {
        chunk: chunk.clone(),
        offset: r.offset,
        size: u64::from(r.len),
        crc: r.crc,
    }
}
