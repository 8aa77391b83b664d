//! The tiering loop of [`Tiering`]: once a second, delete the objects of
//! tiered chunks that were deleted, then pick own sealed local chunks that
//! are old enough or over the local byte budget, and upload each: encode →
//! PUT → verify → manifest line → evict the local files. A failed upload
//! keeps the local copy and backs off. Never runs on the write path and
//! never serves reads.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::format::{self, FormatError};
use super::manifest::{ManifestError, TieredChunk};
use super::reader::TierReadError;
use super::store::{ObjectStore, StoreError};
use super::{Failing, Tiering};
use crate::names::Category;
use crate::storage::chunk::{index, Chunk};
use crate::storage::{Storage, StorageError};

/// How often the tierer looks for work.
const PERIOD: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why one upload failed (the chunk stays local and is retried). Shown,
/// with its source chain, in logs and `GET /tier`.
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
    /// The PUT failed.
    #[error(transparent)]
    Put(#[from] StoreError),
    /// The object read back does not verify.
    #[error("verification after upload")]
    Verify(#[source] TierReadError),
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

impl Tiering {
    /// Runs the upload and cleanup loop until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, storage: Arc<Storage>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let slots = Arc::new(tokio::sync::Semaphore::new(self.cfg.concurrency.max(1)));
        let mut jobs = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            while jobs.try_join_next().is_some() {}
            self.collect_garbage(&storage).await;
            for (cat, chunk) in self.candidates(&storage) {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    break;
                };
                self.uploading
                    .lock()
                    .push((cat.clone(), chunk.name().clone()));
                let (me, st) = (Arc::clone(&self), Arc::clone(&storage));
                jobs.spawn(async move {
                    let _permit = permit;
                    me.upload(&st, &cat, &chunk).await;
                    me.uploading
                        .lock()
                        .retain(|(c, n)| !(c == &cat && n == chunk.name()));
                });
            }
        }
        // Let uploads in flight finish: their chunk stays local if cut.
        while jobs.join_next().await.is_some() {}
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

    async fn upload(&self, storage: &Storage, cat: &Category, chunk: &Arc<Chunk>) {
        let key = self.key(cat, chunk.name());
        let started = Instant::now();
        match self.try_upload(storage, cat, chunk, &key).await {
            Ok(e) => {
                self.failing
                    .lock()
                    .remove(&(cat.clone(), chunk.name().clone()));
                self.counters.uploads.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .uploaded_bytes
                    .fetch_add(e.size, Ordering::Relaxed);
                self.counters
                    .object_bytes
                    .fetch_add(e.object_len, Ordering::Relaxed);
                tracing::info!(category = %cat, chunk = %chunk.name(), size = e.size, object = e.object_len,
                    ms = started.elapsed().as_millis() as u64, "tiered chunk");
            }
            Err(e) => {
                let why = crate::error_chain(&e);
                self.counters
                    .upload_failures
                    .fetch_add(1, Ordering::Relaxed);
                let mut f = self.failing.lock();
                let entry = f
                    .entry((cat.clone(), chunk.name().clone()))
                    .or_insert(Failing {
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
                tracing::warn!(category = %cat, chunk = %chunk.name(), attempts = entry.attempts,
                    retry_in_s = backoff.as_secs(), error = %why, "tiering a chunk failed; the local copy stays");
            }
        }
    }

    async fn try_upload(
        &self,
        storage: &Storage,
        cat: &Category,
        chunk: &Arc<Chunk>,
        key: &str,
    ) -> Result<TieredChunk, UploadError> {
        let (data_path, idx_path) = (
            chunk.data_path().to_path_buf(),
            chunk.idx_path().to_path_buf(),
        );
        let size = chunk.state().end;
        let (level, frame, keys) = (
            self.cfg.level,
            self.cfg.frame_size,
            self.ring.current().clone(),
        );
        let encoded =
            tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, u64), UploadError> {
                let data = std::fs::read(&data_path).map_err(|source| UploadError::Read {
                    path: data_path.clone(),
                    source,
                })?;
                if data.len() as u64 != size {
                    return Err(UploadError::SizeMismatch {
                        path: data_path,
                        len: data.len() as u64,
                        size,
                    });
                }
                let idx = std::fs::read(&idx_path).map_err(|source| UploadError::Read {
                    path: idx_path.clone(),
                    source,
                })?;
                // The records (the header is not uploaded).
                let records = idx.get(index::HEADER_LEN..).unwrap_or_default();
                let messages = memchr::memchr_iter(b'\n', &data).count() as u64;
                let mut iv = [0u8; 16];
                getrandom::fill(&mut iv).map_err(UploadError::RandomIv)?;
                let obj = format::encode(&data, records, &keys, iv, level, frame)?;
                Ok((obj, messages))
            })
            .await
            .map_err(UploadError::EncodeTask)??;
        let (object, messages) = encoded;
        let object_len = object.len() as u64;
        self.store.put(key, Bytes::from(object)).await?;
        self.reader
            .verify(key, object_len)
            .await
            .map_err(UploadError::Verify)?;
        let entry = TieredChunk {
            size,
            messages,
            object_len,
            key_id: self.ring.current().id,
        };
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
