//! Storage: the map from category to [`CategoryLog`], startup recovery, and
//! the background flush and rotation loops.
//!
//! This file holds the [`Storage`] type, its appends and idempotent entry
//! points, the flush, rotation and idle loops and shutdown sealing; the
//! category map and creation (`max_categories`) are in `categories.rs`,
//! opening the data dir (lock, recovery of every category) in `open.rs`.
//!
//! Layout on disk (see `docs/formats.md`):
//! ```text
//! <data_dir>/<category>/<server>-chunkNNNNNNNNN       message bytes only
//! <data_dir>/<category>/<server>-chunkNNNNNNNNN.idx   batch index sidecar
//! <data_dir>/.chunkbus/lock                           held while serving
//! <data_dir>/.chunkbus/next-chunk/<category>          next chunk index
//! ```

mod categories;
mod category_log;
pub mod chunk;
pub(crate) mod contended;
mod copy;
mod error;
pub mod feed;
mod open;
mod open_cache;
pub mod producers;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use category_log::{Appended, CategoryLog, ChunkInfo};
pub use copy::CopyWriter;
pub use error::StorageError;
pub use feed::ChangeFeed;

use crate::config::StorageConfig;
use crate::fsutil::FaultHook;
use crate::names::{Category, ChunkName, ServerName};
use categories::Categories;
pub use category_log::idempotent::{Duplicate, TaggedAppend};
use chunk::format::CheckedBody;
use chunk::index::ProducerTag;
use open_cache::OpenCache;
pub use producers::Sequence;

/// Blocking tasks sealing categories in parallel at shutdown.
const SHUTDOWN_SEALERS: usize = 8;

/// Name of the state directory inside the data dir.
pub const STATE_DIR: &str = ".chunkbus";

/// Shared context of all category logs.
#[derive(Debug)]
pub struct Ctx {
    data_dir: PathBuf,
    state_dir: PathBuf,
    server: ServerName,
    cfg: StorageConfig,
    hook: FaultHook,
    tasks: TaskTracker,
    closing: AtomicBool,
    feed: ChangeFeed,
    /// Open chunk files and mappings, bounded by `max_open_chunks`.
    cache: Arc<OpenCache>,
}

impl Ctx {
    fn counter_path(&self, category: &Category) -> PathBuf {
        self.state_dir.join("next-chunk").join(category.as_str())
    }

    /// Runs blocking background work (sealing, creating the spare chunk):
    /// on the blocking pool, tracked so shutdown waits for it, when called
    /// inside a tokio runtime; inline otherwise (startup and tests without
    /// a runtime).
    fn run_blocking(&self, job: impl FnOnce() + Send + 'static) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.tasks.spawn_blocking(job);
        } else {
            job();
        }
    }
}

/// The storage engine of one server.
#[derive(Debug)]
pub struct Storage {
    ctx: Arc<Ctx>,
    categories: RwLock<Categories>,
    _lock: File,
}

impl Storage {
    /// This server's name.
    #[must_use]
    pub fn server(&self) -> &ServerName {
        &self.ctx.server
    }

    /// Whether peers are configured (cluster mode).
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        self.ctx.cfg.cluster
    }

    /// The data dir.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.ctx.data_dir
    }

    /// The state dir (`<data_dir>/.chunkbus`).
    #[must_use]
    pub fn state_dir(&self) -> &Path {
        &self.ctx.state_dir
    }

    /// The change feed of this server's own chunks (peers poll it).
    #[must_use]
    pub fn feed(&self) -> &ChangeFeed {
        &self.ctx.feed
    }

    /// Largest chunk size (what copies of peers' chunks are mapped with).
    #[must_use]
    pub fn max_chunk_size(&self) -> u64 {
        self.ctx.cfg.max_chunk_size
    }

    /// The log of `category`, if it exists.
    #[must_use]
    pub fn category(&self, category: &Category) -> Option<Arc<CategoryLog>> {
        self.categories.read().logs.get(category).cloned()
    }

    /// The error for a chunk that is not held here:
    /// [`StorageError::DeletedChunk`] when it is known to be deleted for
    /// good ([`CategoryLog::is_deleted`]), else
    /// [`StorageError::UnknownChunk`] (it may still appear, e.g. a copy not
    /// replicated yet).
    #[must_use]
    pub fn missing_chunk(&self, category: &Category, name: &ChunkName) -> StorageError {
        let deleted = self
            .category(category)
            .is_some_and(|log| log.is_deleted(name));
        if deleted {
            StorageError::DeletedChunk {
                category: category.to_string(),
                name: name.to_string(),
            }
        } else {
            StorageError::UnknownChunk {
                category: category.to_string(),
                name: name.to_string(),
            }
        }
    }

    /// Every category's log, in name order.
    #[must_use]
    pub fn logs(&self) -> Vec<Arc<CategoryLog>> {
        self.categories.read().logs.values().cloned().collect()
    }

    /// Names of all categories.
    #[must_use]
    pub fn category_names(&self) -> Vec<String> {
        self.categories
            .read()
            .logs
            .keys()
            .map(ToString::to_string)
            .collect()
    }

    /// Appends a validated body to `category`, creating it on first write
    /// if `max_categories` allows.
    ///
    /// # Errors
    /// [`StorageError::TooManyCategories`] (nothing stored, no directory
    /// created), or see [`CategoryLog::append`].
    pub async fn append(
        &self,
        category: &Category,
        frames: Vec<Bytes>,
        body: CheckedBody,
    ) -> Result<Appended, StorageError> {
        let log = match self.category(category) {
            Some(log) => log,
            None => self.create_category(category, true)?,
        };
        log.append(frames, body).await
    }

    /// Appends a write of an idempotent producer (`tag`): stored once, a
    /// repeat answered with the original (see
    /// [`CategoryLog::append_tagged`]).
    ///
    /// # Errors
    /// As [`CategoryLog::append_tagged`].
    pub async fn append_tagged(
        &self,
        category: &Category,
        frames: Vec<Bytes>,
        body: CheckedBody,
        tag: ProducerTag,
    ) -> Result<TaggedAppend, StorageError> {
        self.append_sequenced(category, frames, body, Sequence::Batch(tag))
            .await
    }

    /// Appends a write numbered as `seq` says (see
    /// [`CategoryLog::append_sequenced`]).
    ///
    /// # Errors
    /// As [`CategoryLog::append_sequenced`].
    pub async fn append_sequenced(
        &self,
        category: &Category,
        frames: Vec<Bytes>,
        body: CheckedBody,
        seq: Sequence,
    ) -> Result<TaggedAppend, StorageError> {
        let log = match self.category(category) {
            Some(log) => log,
            None => self.create_category(category, true)?,
        };
        log.append_sequenced(frames, body, seq).await
    }

    /// Whether this server holds the batch of an idempotent producer
    /// tagged `tag` (see [`CategoryLog::find_tagged`]).
    ///
    /// # Errors
    /// As [`CategoryLog::find_tagged`]; `NotKnownHere` for a category
    /// this server does not have.
    pub async fn find_tagged(
        &self,
        category: &Category,
        tag: ProducerTag,
    ) -> Result<Duplicate, StorageError> {
        match self.category(category) {
            Some(log) => log.find_tagged(tag).await,
            None => Err(StorageError::NotKnownHere {
                category: category.to_string(),
                producer: tag.producer,
                seq: tag.seq,
            }),
        }
    }

    /// Waits until `appended` is on this server's disk (group commit).
    ///
    /// # Errors
    /// [`StorageError::Failed`] when the fdatasync failed.
    pub async fn wait_durable(&self, appended: &Appended) -> Result<(), StorageError> {
        appended
            .chunk
            .sync_to(appended.offset + appended.size, &self.ctx.hook)
            .await
    }

    /// Whether every write must be synced before it is acknowledged.
    #[must_use]
    pub fn fsync_every_write(&self) -> bool {
        self.ctx.cfg.fsync_every_write
    }

    /// fdatasyncs every open chunk (own, or a copy being replicated) that
    /// has unsynced bytes.
    pub async fn flush_all(&self) {
        let logs = self.logs();
        for log in logs {
            let mut open = log.open_copies();
            open.extend(log.active_chunk());
            for chunk in open {
                let end = chunk.state().end;
                if chunk.synced_upto() >= end {
                    continue;
                }
                if let Err(e) = chunk.sync_to(end, &self.ctx.hook).await {
                    tracing::error!(chunk = %chunk.name(), error = %e, "periodic flush failed");
                }
            }
        }
    }

    /// Runs the periodic flush (`flush_interval`) and rotation
    /// (`chunk_rotate_interval`) until `token` is cancelled.
    pub async fn run_background(self: Arc<Self>, token: CancellationToken) {
        let tick = self
            .ctx
            .cfg
            .flush_interval
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(10));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = Instant::now();
        let mut last_idle_check = Instant::now();
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = interval.tick() => {}
            }
            let logs = self.logs();
            for log in &logs {
                log.rotate_if_older(self.ctx.cfg.chunk_rotate_interval);
            }
            if last_idle_check.elapsed() >= Duration::from_secs(1) {
                last_idle_check = Instant::now();
                self.ctx.cache.close_idle();
            }
            if last_flush.elapsed() >= self.ctx.cfg.flush_interval {
                last_flush = Instant::now();
                self.flush_all().await;
            }
        }
    }

    /// Shutdown: stops creating spare chunks, waits for background seals,
    /// then seals every open chunk durably and removes unused spares.
    ///
    /// # Errors
    /// The first sealing error (others are logged).
    pub async fn close(&self) -> Result<(), StorageError> {
        self.ctx.closing.store(true, Ordering::Release);
        self.ctx.tasks.close();
        self.ctx.tasks.wait().await;
        // Sealing is mostly waiting for fdatasyncs: several categories at
        // once share journal commits (10,000 categories: seconds, not tens).
        let logs = self.logs();
        let per_task = logs.len().div_ceil(SHUTDOWN_SEALERS).max(1);
        let mut sealers = Vec::new();
        for part in logs.chunks(per_task) {
            let part = part.to_vec();
            sealers.push(tokio::task::spawn_blocking(move || {
                let mut first = Ok(());
                for log in part {
                    if let Err(e) = log.close_blocking() {
                        tracing::error!(category = %log.category(), error = %e, "sealing at shutdown failed");
                        if first.is_ok() {
                            first = Err(e);
                        }
                    }
                }
                first
            }));
        }
        let mut first = Ok(());
        for s in sealers {
            let sealed = s.await.unwrap_or_else(|e| {
                Err(StorageError::Io {
                    op: "seal at shutdown",
                    path: self.ctx.data_dir.clone(),
                    source: std::io::Error::other(e),
                })
            });
            if first.is_ok() {
                first = sealed;
            }
        }
        first
    }
}
