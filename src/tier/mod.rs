//! Tiering: the owner uploads its cold sealed chunks to an object store
//! (S3, or a local directory), zstd-compressed and AES-256-CTR-encrypted
//! with authenticated frames, then removes the local copy; reads of tiered
//! chunks fetch, verify, decrypt and decompress transparently.
//!
//! - [`keys`]: master key parsing and derived keys.
//! - [`format`]: the object format (pure).
//! - [`store`]: the `ObjectStore` trait, S3 and local-directory stores.
//! - [`manifest`]: the durable tiered set.
//! - [`reader`]: cached, authenticated range reads.
//!
//! Crash story of one upload: encode → PUT → verify (size, header, index
//! and last frame authenticate) → manifest line fdatasync'd → local files
//! removed. A crash before the manifest line leaves the local chunk (the
//! upload is simply done again); after it, startup finds the manifest entry
//! and removes the local files it still sees. Never neither.

pub mod format;
pub mod keys;
pub mod manifest;
pub mod reader;
pub mod settings;
pub mod store;

pub use settings::{TierConfig, TierThresholds};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::names::{Category, ChunkName};
use crate::storage::chunk::{Chunk, ReadOutcome};
use crate::storage::{Storage, StorageError};
use keys::KeyRing;
use manifest::{Manifest, TieredChunk};
use reader::{TierReadError, TierReader};
use store::{AnyStore, ObjectStore};

/// How often the tierer looks for work.
const PERIOD: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Counters for `/metrics` and `GET /tier`.
#[derive(Debug, Default)]
pub struct TierCounters {
    /// Chunks uploaded and evicted since start.
    pub uploads: AtomicU64,
    /// Chunk bytes uploaded since start.
    pub uploaded_bytes: AtomicU64,
    /// Object bytes written since start.
    pub object_bytes: AtomicU64,
    /// Failed upload attempts since start.
    pub upload_failures: AtomicU64,
    /// Reads of tiered chunks that failed (store or authentication).
    pub read_errors: AtomicU64,
}

#[derive(Debug, Clone)]
struct Failing {
    attempts: u32,
    retry_at: Instant,
    last_error: String,
}

/// The tiering engine of one server.
#[derive(Debug)]
pub struct Tiering {
    cfg: TierConfig,
    store: AnyStore,
    ring: KeyRing,
    manifest: Manifest,
    reader: TierReader,
    /// Counters.
    pub counters: TierCounters,
    uploading: Mutex<Vec<(Category, ChunkName)>>,
    failing: Mutex<HashMap<(Category, ChunkName), Failing>>,
    /// Live `tier_after`/`local_bytes_budget` (config reload); until set,
    /// those of `cfg`.
    thresholds: std::sync::OnceLock<tokio::sync::watch::Receiver<TierThresholds>>,
}

/// A failure of the tiering engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TierError {
    /// Setting it up failed.
    #[error("tiering: {0}")]
    Setup(String),
    /// A read failed.
    #[error(transparent)]
    Read(#[from] TierReadError),
    /// A local storage error.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One entry of `GET /tier`.
#[derive(Debug, serde::Serialize)]
pub struct ChunkTierState {
    category: String,
    chunk: String,
    size: u64,
    /// `local`, `uploading`, `failing` or `tiered`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

impl Tiering {
    /// Opens the store and the manifest (in `state_dir`).
    ///
    /// # Errors
    /// The store or manifest cannot be opened.
    pub fn open(cfg: TierConfig, state_dir: &std::path::Path) -> Result<Self, TierError> {
        let store =
            match &cfg.s3 {
                Some(s3) => AnyStore::S3(store::S3Store::new(s3).map_err(TierError::Setup)?),
                None => AnyStore::Local(store::LocalStore::open(&cfg.dir).map_err(|e| {
                    TierError::Setup(format!("tier dir {}: {e}", cfg.dir.display()))
                })?),
            };
        let ring = cfg.keys.clone();
        let reader = TierReader::new(store.clone(), ring.clone(), cfg.cache_bytes);
        let manifest = Manifest::open(state_dir).map_err(TierError::Setup)?;
        Ok(Self {
            cfg,
            store,
            ring,
            manifest,
            reader,
            counters: TierCounters::default(),
            uploading: Mutex::new(Vec::new()),
            failing: Mutex::new(HashMap::new()),
            thresholds: std::sync::OnceLock::new(),
        })
    }

    /// The object key of a chunk.
    #[must_use]
    pub fn key(&self, category: &Category, chunk: &ChunkName) -> String {
        let prefix = self.cfg.s3.as_ref().map_or("", |s| s.prefix.as_str());
        if prefix.is_empty() {
            format!("{category}/{chunk}")
        } else {
            format!("{prefix}/{category}/{chunk}")
        }
    }

    /// Where objects go, for logs and status.
    #[must_use]
    pub fn describe_store(&self) -> String {
        match &self.cfg.s3 {
            Some(s) => format!(
                "s3://{}/{} at {}",
                s.bucket,
                s.prefix,
                s.endpoint.as_deref().unwrap_or("AWS")
            ),
            None => format!("dir {}", self.cfg.dir.display()),
        }
    }

    /// At startup: registers every tiered chunk in storage, removing local
    /// copies the manifest says are tiered (a crash after the manifest
    /// line, before eviction).
    ///
    /// # Errors
    /// Storage errors creating categories or removing files.
    pub fn attach(&self, storage: &Storage) -> Result<usize, TierError> {
        let mut n = 0;
        for (cat, chunk, e) in self.manifest.all() {
            let log = storage.category_or_create(&cat)?;
            if log.chunk(&chunk).is_some() {
                log.evict_tiered(&chunk, e.messages)?;
                tracing::info!(category = %cat, %chunk, "removed local copy of a tiered chunk (crash after upload)");
            } else {
                log.add_tiered(&chunk, e.size, e.messages);
            }
            n += 1;
        }
        Ok(n)
    }

    /// After a start: fetches the header and index of the newest tiered
    /// chunks (up to 64 per category), so first reads of them need one
    /// range GET, and the store's client is warmed up.
    pub async fn warm_up(&self) {
        let all = self.manifest.all();
        let mut per_cat: HashMap<&Category, usize> = HashMap::new();
        for (cat, chunk, _) in all.iter().rev() {
            let n = per_cat.entry(cat).or_insert(0);
            if *n >= 64 {
                continue;
            }
            *n += 1;
            let key = self.key(cat, chunk);
            if let Err(e) = self.reader.prefetch(&key).await {
                tracing::warn!(%key, error = %crate::error_chain(&e), "could not prefetch a tiered object's index");
            }
        }
    }

    /// Whether a chunk is in the tiered set.
    #[must_use]
    pub fn is_tiered(&self, category: &Category, chunk: &ChunkName) -> bool {
        self.manifest.get(category, chunk).is_some()
    }

    /// A `/read` of a tiered chunk: whole messages from `off`, at most
    /// `max_size` bytes; same rules as a local read.
    ///
    /// # Errors
    /// Store or authentication failures ([`TierError::Read`]), and the
    /// usual offset errors ([`TierError::Storage`]).
    pub async fn read(
        &self,
        category: &Category,
        chunk: &Chunk,
        off: u64,
        max_size: u64,
    ) -> Result<ReadOutcome, TierError> {
        let end = chunk.state().end;
        let name = chunk.name().to_string();
        if off > end {
            return Err(StorageError::OffsetBeyondEnd {
                name,
                off,
                size: end,
            }
            .into());
        }
        if off == end {
            return Ok(ReadOutcome::Empty { sealed: true });
        }
        let key = self.key(category, chunk.name());
        let result = self.read_inner(&key, &name, off, max_size, end).await;
        if matches!(result, Err(TierError::Read(_))) {
            self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn read_inner(
        &self,
        key: &str,
        name: &str,
        off: u64,
        max_size: u64,
        end: u64,
    ) -> Result<ReadOutcome, TierError> {
        use crate::storage::chunk::format as msg;
        // One byte before `off` tells whether it is a message boundary.
        let from = off.saturating_sub(1);
        let want_end = off.saturating_add(max_size).min(end);
        let window = self.reader.read_range(key, from, want_end).await?;
        let lead = usize::from(off > 0);
        if off > 0 && window.first() != Some(&b'\n') {
            return Err(StorageError::NotBoundary {
                name: name.to_owned(),
                off,
            }
            .into());
        }
        let body = window.slice(lead..);
        let take = msg::last_complete_message_end(&body);
        if take == 0 {
            // The next message is longer than max_size: say how long.
            let mut probe_end = want_end;
            let next_len = loop {
                let more = self.reader.read_range(key, off, probe_end).await?;
                if let Some(n) = msg::first_message_len(&more) {
                    break n as u64;
                }
                if probe_end >= end {
                    break end - off;
                }
                probe_end = probe_end.saturating_add(1 << 20).min(end);
            };
            return Err(StorageError::MaxSizeTooSmall { max_size, next_len }.into());
        }
        Ok(ReadOutcome::Data(body.slice(..take)))
    }

    /// Whether `off` is a message boundary of a tiered chunk.
    ///
    /// # Errors
    /// As [`Tiering::read`].
    pub async fn check_boundary(
        &self,
        category: &Category,
        chunk: &Chunk,
        off: u64,
    ) -> Result<(), TierError> {
        let end = chunk.state().end;
        let name = chunk.name().to_string();
        if off > end {
            return Err(StorageError::OffsetBeyondEnd {
                name,
                off,
                size: end,
            }
            .into());
        }
        if off == 0 || off == end {
            return Ok(());
        }
        let key = self.key(category, chunk.name());
        let b = self.reader.read_range(&key, off - 1, off).await?;
        if b.first() == Some(&b'\n') {
            Ok(())
        } else {
            Err(StorageError::NotBoundary { name, off }.into())
        }
    }

    /// The batch records and bytes of a tiered chunk from record `rec` at
    /// offset `off`, at most `max_size` bytes (at least one batch): a
    /// `/peer/fetch` of a tiered chunk.
    ///
    /// # Errors
    /// As [`Tiering::read`], and `NotBoundary` when record `rec` does not
    /// start at `off`.
    pub async fn fetch_batches(
        &self,
        category: &Category,
        chunk: &Chunk,
        rec: u64,
        off: u64,
        max_size: u64,
    ) -> Result<(Vec<crate::storage::chunk::index::Record>, Bytes), TierError> {
        use crate::storage::chunk::index::{Record, RECORD_LEN};
        let key = self.key(category, chunk.name());
        let raw = self.reader.records(&key).await?;
        let mut out = Vec::new();
        let mut next = off;
        let mut taken = 0u64;
        let start = usize::try_from(rec)
            .unwrap_or(usize::MAX)
            .saturating_mul(RECORD_LEN);
        for r in raw
            .get(start..)
            .unwrap_or_default()
            .chunks_exact(RECORD_LEN)
        {
            let mut b = [0u8; RECORD_LEN];
            b.copy_from_slice(r);
            let r = Record::decode(&b);
            if r.is_seal() || r.offset != next {
                break;
            }
            if !out.is_empty() && taken + u64::from(r.len) > max_size {
                break;
            }
            taken += u64::from(r.len);
            next += u64::from(r.len);
            out.push(r);
        }
        if out.is_empty() {
            if off >= chunk.state().end {
                return Ok((Vec::new(), Bytes::new()));
            }
            return Err(StorageError::NotBoundary {
                name: chunk.name().to_string(),
                off,
            }
            .into());
        }
        let data = self.reader.read_range(&key, off, next).await?;
        Ok((out, data))
    }

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

    /// Takes `tier_after`/`local_bytes_budget` from `rx` from now on
    /// (until then nothing is tiered).
    pub fn follow_thresholds(&self, rx: tokio::sync::watch::Receiver<TierThresholds>) {
        let _ = self.thresholds.set(rx);
    }

    fn current_thresholds(&self) -> TierThresholds {
        match self.thresholds.get() {
            Some(rx) => *rx.borrow(),
            None => TierThresholds::default(),
        }
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
            Err(why) => {
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
    ) -> Result<TieredChunk, String> {
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
        let encoded = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, u64), String> {
            let data = std::fs::read(&data_path)
                .map_err(|e| format!("read {}: {e}", data_path.display()))?;
            if data.len() as u64 != size {
                return Err(format!(
                    "{} has {} bytes, expected {size}",
                    data_path.display(),
                    data.len()
                ));
            }
            let idx = std::fs::read(&idx_path)
                .map_err(|e| format!("read {}: {e}", idx_path.display()))?;
            let records = idx
                .get(crate::storage::chunk::index::HEADER_LEN..)
                .unwrap_or_default();
            let messages = memchr::memchr_iter(b'\n', &data).count() as u64;
            let mut iv = [0u8; 16];
            getrandom::fill(&mut iv).map_err(|e| format!("random IV: {e}"))?;
            let obj = format::encode(&data, records, &keys, iv, level, frame)
                .map_err(|e| e.to_string())?;
            Ok((obj, messages))
        })
        .await
        .map_err(|e| format!("encode task: {e}"))??;
        let (object, messages) = encoded;
        let object_len = object.len() as u64;
        self.store
            .put(key, Bytes::from(object))
            .await
            .map_err(|e| crate::error_chain(&e))?;
        self.reader
            .verify(key, object_len)
            .await
            .map_err(|e| format!("verification after upload: {}", crate::error_chain(&e)))?;
        let entry = TieredChunk {
            size,
            messages,
            object_len,
            key_id: self.ring.current().id,
        };
        let Some(log) = storage.category(cat) else {
            return Err("category disappeared".into());
        };
        if log.chunk(chunk.name()).is_none() {
            // Acked away meanwhile: the object is garbage.
            let _ = self.store.delete(key).await;
            return Err("chunk was deleted during the upload".into());
        }
        self.manifest.add(cat, chunk.name(), entry)?;
        let name = chunk.name().clone();
        crate::cluster::blocking(move || log.evict_tiered(&name, messages))
            .await
            .map_err(|e| format!("removing the local copy: {}", crate::error_chain(&e)))?;
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
                        tracing::warn!(error = %e, "could not record a deleted tiered object");
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

    /// What is local, uploading, failing and tiered (for `GET /tier`).
    #[must_use]
    pub fn status(&self, storage: &Storage) -> Vec<ChunkTierState> {
        let busy = self.uploading.lock().clone();
        let failing = self.failing.lock().clone();
        let mut out = Vec::new();
        for log in storage.logs() {
            let cat = log.category();
            for chunk in log.chunks() {
                let s = chunk.state();
                if s.end == 0 {
                    continue;
                }
                let key = (cat.clone(), chunk.name().clone());
                let f = failing.get(&key);
                let state = if chunk.is_tiered() {
                    "tiered"
                } else if busy.contains(&key) {
                    "uploading"
                } else if f.is_some() {
                    "failing"
                } else {
                    "local"
                };
                out.push(ChunkTierState {
                    category: cat.to_string(),
                    chunk: chunk.name().to_string(),
                    size: s.end,
                    state,
                    last_error: f.map(|f| f.last_error.clone()),
                });
            }
        }
        out
    }

    /// (tiered chunks, their bytes).
    #[must_use]
    pub fn totals(&self) -> (u64, u64) {
        let all = self.manifest.all();
        (all.len() as u64, all.iter().map(|(_, _, e)| e.size).sum())
    }
}

impl crate::error::DomainError for TierError {
    /// A local storage error keeps its own kind; a failure of the object
    /// store (or of setting it up) is `BadGateway`.
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            Self::Storage(s) => s.kind(),
            _ => crate::error::ErrorKind::BadGateway,
        }
    }
}
