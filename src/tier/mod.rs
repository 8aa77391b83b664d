//! Tiering: the owner uploads its cold sealed chunks to an object store
//! (S3, or a local directory), zstd-compressed and AES-256-CTR-encrypted
//! with authenticated frames, then removes the local copy; reads of tiered
//! chunks fetch, verify, decrypt and decompress transparently.
//!
//! - [`keys`]: master key parsing and derived keys.
//! - [`format`]: the object format, reading side (pure); [`encode`]: the
//!   streaming encoder (pure).
//! - [`store`]: the `ObjectStore` trait, S3 and local-directory stores,
//!   streamed uploads.
//! - [`manifest`]: the durable tiered set, with each object's header digest.
//! - [`meta`]: an object checked against its manifest entry (the binding).
//! - [`reader`]: cached, authenticated range reads; full read-back checks.
//! - `pipeline.rs`: one streamed upload (encoder thread → parts → store).
//! - `upload.rs`: the upload/evict/GC loop of [`Tiering`].
//! - `upgrade.rs`: format-1 objects re-encoded as format 2.
//! - `read.rs`: `/read`, group-ack and `/peer/fetch` reads of tiered
//!   chunks, under the same rules as local reads (`storage::chunk::window`).
//!
//! This file holds the [`Tiering`] type: opening the store and manifest,
//! attaching tiered chunks to storage at startup, and status. Tiering never
//! runs on the write path.
//!
//! Crash story of one upload: stream the object (nothing visible before
//! its last part) → read all of it back and verify every tag → manifest
//! line (with the header digest) fdatasync'd → local files removed. A crash
//! before the manifest line leaves the local chunk (the upload is simply
//! done again); after it, startup finds the manifest entry and removes the
//! local files it still sees. Never neither.

pub mod encode;
pub mod format;
pub mod keys;
pub mod manifest;
pub mod meta;
mod pipeline;
mod read;
pub mod reader;
pub mod settings;
pub mod store;
mod upgrade;
mod upload;

pub use settings::{TierConfig, TierThresholds};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use parking_lot::Mutex;

use crate::names::{Category, ChunkName};
use crate::storage::{Storage, StorageError};
use format::Identity;
use keys::KeyRing;
use manifest::{Manifest, ManifestError};
use meta::ObjectRef;
use reader::{TierReadError, TierReader};
use store::{AnyStore, S3SetupError};

pub use upload::UploadError;

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
    #[error("tiering")]
    Setup(#[source] SetupError),
    /// A read failed.
    #[error(transparent)]
    Read(#[from] TierReadError),
    /// A local storage error.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why the store or the manifest could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The S3 client could not be set up (no credentials).
    #[error(transparent)]
    S3(#[from] S3SetupError),
    /// The local object directory could not be created.
    #[error("tier dir {}", dir.display())]
    LocalDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest could not be loaded.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl From<SetupError> for TierError {
    fn from(e: SetupError) -> Self {
        Self::Setup(e)
    }
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
        let store = match &cfg.s3 {
            Some(s3) => AnyStore::S3(store::S3Store::new(s3).map_err(SetupError::from)?),
            None => AnyStore::Local(store::LocalStore::open(&cfg.dir).map_err(|source| {
                SetupError::LocalDir {
                    dir: cfg.dir.clone(),
                    source,
                }
            })?),
        };
        let ring = cfg.keys.clone();
        let reader = TierReader::new(store.clone(), ring.clone(), cfg.cache_bytes);
        let manifest = Manifest::open(state_dir).map_err(SetupError::from)?;
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
    /// range GET, and the store's client is warmed up. Each header is
    /// checked against the manifest first, so a planted object costs one
    /// small GET and a warning.
    pub async fn warm_up(&self) {
        let all = self.manifest.all();
        let mut per_cat: HashMap<&Category, usize> = HashMap::new();
        for (cat, chunk, entry) in all.iter().rev() {
            let n = per_cat.entry(cat).or_insert(0);
            if *n >= 64 {
                continue;
            }
            *n += 1;
            let key = self.key(cat, chunk);
            let (c, ch) = (cat.to_string(), chunk.to_string());
            let obj = ObjectRef {
                key: &key,
                id: Identity {
                    category: &c,
                    chunk: &ch,
                },
                entry: *entry,
            };
            if let Err(e) = self.reader.prefetch(&obj).await {
                tracing::warn!(%key, error = %crate::error_chain(&e), "could not prefetch a tiered object's index");
            }
        }
    }

    /// Whether a chunk is in the tiered set.
    #[must_use]
    pub fn is_tiered(&self, category: &Category, chunk: &ChunkName) -> bool {
        self.manifest.get(category, chunk).is_some()
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
