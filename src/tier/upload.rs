//! The tiering loop of [`Tiering`]: pick own sealed local chunks that are
//! old enough or over the local byte budget, and upload each: stream →
//! read back and verify all of it → manifest line → evict the local files.
//! Up to `tier_concurrency` uploads run at once, and the next starts as
//! soon as one finishes; once a second the loop also rescans for work and
//! deletes the objects of tiered chunks that were deleted. When no chunk
//! waits, a free slot upgrades one format-1 object (`upgrade.rs`). A failed
//! upload keeps the local copy and backs off. Never runs on the write path
//! and never serves reads.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::format::{FormatError, Identity};
use super::manifest::{ManifestError, TieredChunk};
use super::meta::ObjectRef;
use super::pipeline::{self, Job, PlainSource};
use super::reader::TierReadError;
use super::store::{ObjectStore, StoreError};
use super::{Failing, Tiering};
use crate::names::{Category, ChunkName};
use crate::storage::chunk::index::{self, IndexFormat, Record};
use crate::storage::chunk::Chunk;
use crate::storage::{Storage, StorageError};

/// How often the tierer rescans for work and collects garbage.
const PERIOD: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Bytes of index records read at once.
const RECORDS_PIECE: u64 = 1 << 20;

/// Why one upload (or upgrade) failed (the chunk stays local and is
/// retried). Shown, with its source chain, in logs and `GET /tier`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// Reading the chunk or its index failed.
    #[error("read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The chunk file is not of its sealed size.
    #[error("{} has {len} bytes, expected {size}", path.display())]
    SizeMismatch {
        /// The chunk file.
        path: PathBuf,
        /// Bytes found.
        len: u64,
        /// The sealed size.
        size: u64,
    },
    /// No random IV could be drawn.
    #[error("random IV: {0}")]
    RandomIv(getrandom::Error),
    /// Encoding the object failed.
    #[error(transparent)]
    Encode(#[from] FormatError),
    /// The encoding task failed.
    #[error("encode task")]
    EncodeTask(#[source] tokio::task::JoinError),
    /// The upload failed.
    #[error(transparent)]
    Put(StoreError),
    /// The upload stopped before its last part (its encoder failed).
    #[error("upload abandoned before its last part")]
    Abandoned,
    /// The server is stopping.
    #[error("stopped")]
    Stopped,
    /// The object read back does not verify.
    #[error("verification after upload")]
    Verify(#[source] TierReadError),
    /// The object to upgrade could not be read.
    #[error("reading the object to upgrade")]
    Source(#[source] TierReadError),
    /// The object to upgrade holds another number of messages than
    /// recorded.
    #[error("the object holds {found} messages, the manifest records {recorded}")]
    Messages {
        /// Counted in the object.
        found: u64,
        /// In the manifest.
        recorded: u64,
    },
    /// The category is gone.
    #[error("category disappeared")]
    CategoryGone,
    /// The chunk was deleted (acked) meanwhile; the object was deleted too.
    #[error("chunk was deleted during the upload")]
    ChunkDeleted,
    /// Recording the upload in the manifest failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Removing the local files failed.
    #[error("removing the local copy")]
    Evict(#[source] StorageError),
    /// The eviction task failed.
    #[error("removing the local copy: task failed")]
    EvictTask(#[source] tokio::task::JoinError),
}

/// A sealed local chunk as the encoder's plaintext source: its file read
/// frame by frame, then its index records piece by piece.
struct LocalChunk {
    data: File,
    data_path: PathBuf,
    idx: File,
    idx_path: PathBuf,
    /// The sidecar's record layout.
    format: IndexFormat,
    pos: u64,
    rec_pos: u64,
    rec_end: u64,
}

impl LocalChunk {
    /// Opens a sealed chunk of `size` bytes and its index sidecar.
    fn open(data_path: PathBuf, idx_path: PathBuf, size: u64) -> Result<Self, UploadError> {
        let read_err = |path: &PathBuf| {
            let path = path.clone();
            move |source| UploadError::Read { path, source }
        };
        let data = File::open(&data_path).map_err(read_err(&data_path))?;
        let len = data.metadata().map_err(read_err(&data_path))?.len();
        if len != size {
            return Err(UploadError::SizeMismatch {
                path: data_path,
                len,
                size,
            });
        }
        let idx = File::open(&idx_path).map_err(read_err(&idx_path))?;
        let idx_len = idx.metadata().map_err(read_err(&idx_path))?.len();
        let mut head = [0u8; index::MAX_RECORD_LEN];
        let n = usize::try_from(idx_len)
            .unwrap_or(usize::MAX)
            .min(head.len());
        idx.read_exact_at(&mut head[..n], 0)
            .map_err(read_err(&idx_path))?;
        let format = IndexFormat::detect(&head[..n]).ok_or_else(|| UploadError::Read {
            path: idx_path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a chunkbus index"),
        })?;
        // Whole records only (the sidecar's header is not uploaded).
        let rec_pos = format.header_len() as u64;
        let rec_end = format
            .record_pos(format.record_count(idx_len))
            .unwrap_or(rec_pos);
        Ok(Self {
            data,
            data_path,
            idx,
            idx_path,
            format,
            pos: 0,
            rec_pos,
            rec_end,
        })
    }

    /// Bytes of records the object holds: version-1 records (producer tags
    /// stay local: a retry of an idempotent producer's batch that reached
    /// the tier is long past any delivery timeout).
    fn records_len(&self) -> Result<u32, UploadError> {
        let count = self.format.record_count(self.rec_end) - self.format.record_count(self.rec_pos);
        u32::try_from(count * IndexFormat::V1.record_len() as u64)
            .map_err(|_| FormatError::Misuse("index records over 4 GiB").into())
    }
}

fn read_at(f: &File, path: &Path, at: u64, len: u64, buf: &mut Vec<u8>) -> Result<(), UploadError> {
    buf.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
    f.read_exact_at(buf, at)
        .map_err(|source| UploadError::Read {
            path: path.to_path_buf(),
            source,
        })
}

impl PlainSource for LocalChunk {
    fn read_frame(&mut self, len: usize, buf: &mut Vec<u8>) -> Result<(), UploadError> {
        read_at(&self.data, &self.data_path, self.pos, len as u64, buf)?;
        self.pos += len as u64;
        Ok(())
    }

    fn read_records(&mut self, buf: &mut Vec<u8>) -> Result<(), UploadError> {
        let record_len = self.format.record_len() as u64;
        let n = (self.rec_end - self.rec_pos).min(RECORDS_PIECE / record_len * record_len);
        read_at(&self.idx, &self.idx_path, self.rec_pos, n, buf)?;
        self.rec_pos += n;
        if self.format != IndexFormat::V1 {
            // Rewritten in place as version-1 records (never longer).
            let v1 = IndexFormat::V1.record_len();
            let recs: Vec<Record> = self.format.records_from(buf, 0).collect();
            buf.clear();
            for r in recs {
                buf.extend_from_slice(&r.encode(IndexFormat::V1)[..v1]);
            }
        }
        Ok(())
    }
}

impl Tiering {
    /// Runs the upload and cleanup loop until `stop` is cancelled; uploads
    /// in flight are then aborted (their chunks stay local).
    pub async fn run(self: Arc<Self>, storage: Arc<Storage>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let limit = self.cfg.concurrency.max(1);
        let mut jobs: JoinSet<()> = JoinSet::new();
        let mut queue: VecDeque<(Category, Arc<Chunk>)> = VecDeque::new();
        let mut rescan = true;
        // The one upgrade running, if any.
        let mut upgrading: Option<tokio::task::Id> = None;
        loop {
            while jobs.len() < limit {
                if queue.is_empty() && rescan {
                    queue = self.candidates(&storage).into();
                    rescan = false;
                }
                let Some((cat, chunk)) = queue.pop_front() else {
                    break;
                };
                if !self.still_wanted(&storage, &cat, &chunk) {
                    continue;
                }
                self.uploading
                    .lock()
                    .push((cat.clone(), chunk.name().clone()));
                let (me, st, stop) = (Arc::clone(&self), Arc::clone(&storage), stop.clone());
                jobs.spawn(async move {
                    me.upload(&st, &cat, &chunk, &stop).await;
                    me.uploading
                        .lock()
                        .retain(|(c, n)| !(c == &cat && n == chunk.name()));
                });
            }
            if jobs.len() < limit && queue.is_empty() && upgrading.is_none() {
                if let Some((cat, chunk, entry)) = self.next_upgrade() {
                    let (me, st, stop) = (Arc::clone(&self), Arc::clone(&storage), stop.clone());
                    let task = jobs.spawn(async move {
                        me.upgrade(&st, &cat, &chunk, entry, &stop).await;
                    });
                    upgrading = Some(task.id());
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    self.collect_garbage(&storage).await;
                    queue.clear();
                    rescan = true;
                }
                Some(done) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                    let id = done.map_or_else(|e| e.id(), |(id, ())| id);
                    if upgrading == Some(id) {
                        upgrading = None;
                    }
                    rescan = true;
                }
            }
        }
        while jobs.join_next().await.is_some() {}
    }

    /// Whether a queued candidate is still local, present and idle.
    fn still_wanted(&self, storage: &Storage, cat: &Category, chunk: &Arc<Chunk>) -> bool {
        let present = storage
            .category(cat)
            .and_then(|l| l.chunk(chunk.name()))
            .is_some_and(|c| Arc::ptr_eq(&c, chunk));
        present
            && !chunk.is_tiered()
            && !self
                .uploading
                .lock()
                .iter()
                .any(|(c, n)| c == cat && n == chunk.name())
            && !self.backing_off(cat, chunk.name())
    }

    fn backing_off(&self, cat: &Category, chunk: &ChunkName) -> bool {
        self.failing
            .lock()
            .get(&(cat.clone(), chunk.clone()))
            .is_some_and(|f| f.retry_at > Instant::now())
    }

    /// Own sealed local chunks to tier now, oldest first.
    fn candidates(&self, storage: &Storage) -> Vec<(Category, Arc<Chunk>)> {
        let limits = self.current_thresholds();
        let now = SystemTime::now();
        let busy = self.uploading.lock().clone();
        let failing = self.failing.lock().clone();
        let mut local_bytes = 0u64;
        let mut own: Vec<(Category, Arc<Chunk>)> = Vec::new();
        for log in storage.logs() {
            let cat = log.category();
            for chunk in log.chunks() {
                if chunk.is_tiered() {
                    continue;
                }
                let s = chunk.state();
                local_bytes += s.end;
                if chunk.name().owner() != storage.server() || !s.sealed || s.end == 0 {
                    continue;
                }
                let key = (cat.clone(), chunk.name().clone());
                if busy.contains(&key)
                    || failing
                        .get(&key)
                        .is_some_and(|f| f.retry_at > Instant::now())
                {
                    continue;
                }
                own.push((cat.clone(), chunk));
            }
        }
        own.sort_by_key(|(_, c)| c.created());
        let mut excess = limits
            .local_bytes_budget
            .map_or(0, |b| local_bytes.saturating_sub(b));
        own.into_iter()
            .filter(|(_, c)| {
                let old = limits
                    .tier_after
                    .is_some_and(|age| now.duration_since(c.created()).unwrap_or_default() >= age);
                let over = excess > 0;
                if old || over {
                    excess = excess.saturating_sub(c.state().end);
                    true
                } else {
                    false
                }
            })
            .collect()
    }

    /// Records the outcome of one upload or upgrade: counters on success,
    /// a growing backoff on failure.
    pub(super) fn settle(
        &self,
        cat: &Category,
        chunk: &ChunkName,
        (done, failed): (&'static str, &'static str),
        result: Result<TieredChunk, UploadError>,
        started: Instant,
    ) {
        match result {
            Ok(e) => {
                self.failing.lock().remove(&(cat.clone(), chunk.clone()));
                tracing::info!(category = %cat, %chunk, size = e.size, object = e.object_len,
                    ms = started.elapsed().as_millis() as u64, "{done}");
            }
            Err(e) => {
                let why = crate::error_chain(&e);
                let mut f = self.failing.lock();
                let entry = f.entry((cat.clone(), chunk.clone())).or_insert(Failing {
                    attempts: 0,
                    retry_at: Instant::now(),
                    last_error: String::new(),
                });
                entry.attempts += 1;
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << entry.attempts.min(9))
                    .min(MAX_BACKOFF);
                entry.retry_at = Instant::now() + backoff;
                entry.last_error.clone_from(&why);
                tracing::warn!(category = %cat, %chunk, attempts = entry.attempts,
                    retry_in_s = backoff.as_secs(), error = %why, "{failed}");
            }
        }
    }

    async fn upload(
        &self,
        storage: &Storage,
        cat: &Category,
        chunk: &Arc<Chunk>,
        stop: &CancellationToken,
    ) {
        let key = self.key(cat, chunk.name());
        let started = Instant::now();
        let result = self.try_upload(storage, cat, chunk, &key, stop).await;
        match &result {
            Ok(e) => {
                self.counters.uploads.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .uploaded_bytes
                    .fetch_add(e.size, Ordering::Relaxed);
                self.counters
                    .object_bytes
                    .fetch_add(e.object_len, Ordering::Relaxed);
            }
            Err(UploadError::Stopped) => return,
            Err(_) => {
                self.counters
                    .upload_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let what = (
            "tiered chunk",
            "tiering a chunk failed; the local copy stays",
        );
        self.settle(cat, chunk.name(), what, result, started);
    }

    async fn try_upload(
        &self,
        storage: &Storage,
        cat: &Category,
        chunk: &Arc<Chunk>,
        key: &str,
        stop: &CancellationToken,
    ) -> Result<TieredChunk, UploadError> {
        let size = chunk.state().end;
        let (data_path, idx_path) = (
            chunk.data_path().to_path_buf(),
            chunk.idx_path().to_path_buf(),
        );
        let source =
            tokio::task::spawn_blocking(move || LocalChunk::open(data_path, idx_path, size))
                .await
                .map_err(UploadError::EncodeTask)??;
        let job = Job {
            key: key.to_owned(),
            category: cat.to_string(),
            chunk: chunk.name().to_string(),
            plain_size: size,
            records_len: source.records_len()?,
            frame_size: self.cfg.frame_size,
            level: self.cfg.level,
        };
        let keys = self.ring.current().clone();
        let done = pipeline::stream(&self.store, job, keys, source, stop).await?;
        let entry = TieredChunk {
            size,
            messages: done.messages,
            object_len: done.encoded.object_len,
            key_id: done.encoded.key_id,
            header_digest: Some(done.encoded.header_digest),
        };
        let (cat_name, chunk_name) = (cat.to_string(), chunk.name().to_string());
        let obj = ObjectRef {
            key,
            id: Identity {
                category: &cat_name,
                chunk: &chunk_name,
            },
            entry,
        };
        self.reader
            .verify_object(&obj)
            .await
            .map_err(UploadError::Verify)?;
        let Some(log) = storage.category(cat) else {
            return Err(UploadError::CategoryGone);
        };
        if log.chunk(chunk.name()).is_none() {
            // Acked away meanwhile: the object is garbage.
            let _ = self.store.delete(key).await;
            return Err(UploadError::ChunkDeleted);
        }
        self.manifest.add(cat, chunk.name(), entry)?;
        let name = chunk.name().clone();
        let messages = entry.messages;
        tokio::task::spawn_blocking(move || log.evict_tiered(&name, messages))
            .await
            .map_err(UploadError::EvictTask)?
            .map_err(UploadError::Evict)?;
        Ok(entry)
    }

    /// Deletes objects of tiered chunks that were deleted (acked, retention).
    async fn collect_garbage(&self, storage: &Storage) {
        for (cat, chunk, _) in self.manifest.all() {
            let gone = storage
                .category(&cat)
                .and_then(|l| l.chunk(&chunk))
                .is_none();
            if !gone {
                continue;
            }
            let key = self.key(&cat, &chunk);
            match self.store.delete(&key).await {
                Ok(()) => {
                    self.reader.forget(&key);
                    if let Err(e) = self.manifest.remove(&cat, &chunk) {
                        tracing::warn!(error = %crate::error_chain(&e), "could not record a deleted tiered object");
                    } else {
                        tracing::info!(category = %cat, %chunk, "deleted object of a deleted tiered chunk");
                    }
                }
                Err(e) => {
                    tracing::warn!(%key, error = %crate::error_chain(&e), "could not delete a tiered object; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::chunk::index::ProducerTag;

    /// A version-2 sidecar is uploaded as version-1 records (tags
    /// dropped), whole records only; a version-1 sidecar as it is.
    #[test]
    fn records_are_uploaded_in_the_version_1_layout() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = b"a\nbb\n".repeat(10_000);
        let data_path = dir.path().join("c");
        std::fs::write(&data_path, &data).unwrap();
        let mut recs = Vec::new();
        let mut at = 0u64;
        for (i, piece) in data.chunks(5).enumerate() {
            let tag = ProducerTag {
                producer: 9,
                seq: i as u64 + 1,
            };
            recs.push(Record::batch(at, 5, crc32c::crc32c(piece)).tagged(tag));
            at += 5;
        }
        recs.push(Record::seal(at));
        for format in [IndexFormat::V1, IndexFormat::V2] {
            let idx_path = dir.path().join(format!("c-{}.idx", format.version()));
            let mut idx = format.header();
            for r in &recs {
                idx.extend_from_slice(&r.encode(format)[..format.record_len()]);
            }
            idx.extend_from_slice(&[7, 7, 7]); // a partial record: ignored
            std::fs::write(&idx_path, &idx).unwrap();
            let mut chunk =
                LocalChunk::open(data_path.clone(), idx_path, data.len() as u64).unwrap();
            let want: Vec<u8> = recs
                .iter()
                .flat_map(|r| {
                    let mut v1 = *r;
                    v1.tag = ProducerTag::default();
                    v1.encode(IndexFormat::V1)[..16].to_vec()
                })
                .collect();
            assert_eq!(
                chunk.records_len().unwrap() as usize,
                want.len(),
                "{format:?}"
            );
            let mut got = Vec::new();
            let mut buf = Vec::new();
            while got.len() < want.len() {
                chunk.read_records(&mut buf).unwrap();
                assert!(!buf.is_empty());
                got.extend_from_slice(&buf);
            }
            assert_eq!(got, want, "{format:?}");
        }
    }
}
