//! Storage: the map from category to [`CategoryLog`], startup recovery, and
//! the background flush and rotation loops.
//!
//! Layout on disk (see `docs/formats.md`):
//! ```text
//! <data_dir>/<category>/<server>-chunkNNNNNNNNN       message bytes only
//! <data_dir>/<category>/<server>-chunkNNNNNNNNN.idx   batch index sidecar
//! <data_dir>/.chunkbus/lock                           held while serving
//! <data_dir>/.chunkbus/next-chunk/<category>          next chunk index
//! ```

mod category_log;
pub mod chunk;
pub(crate) mod contended;
mod copy;
mod error;
pub mod feed;
mod open_cache;
pub mod producers;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
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
use crate::fsutil::{self, FaultHook};
use crate::names::{Category, ChunkName, ServerName};
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

/// The categories of a server, and those whose directory is being created.
#[derive(Debug, Default)]
struct Categories {
    logs: BTreeMap<Category, Arc<CategoryLog>>,
    /// Names being created (directory and counter outside the lock), with
    /// how many creators each: counted against `max_categories`.
    creating: HashMap<Category, usize>,
}

/// The storage engine of one server.
#[derive(Debug)]
pub struct Storage {
    ctx: Arc<Ctx>,
    categories: RwLock<Categories>,
    _lock: File,
}

impl Storage {
    /// Opens (creating if missing) the data dir, takes its lock and recovers
    /// every category: torn tails cut, open chunks sealed, empty ones removed.
    ///
    /// # Errors
    /// The data dir is locked by another process, unreadable, or holds an
    /// index that is not ours.
    pub fn open(
        data_dir: &Path,
        server: ServerName,
        cfg: StorageConfig,
        hook: FaultHook,
    ) -> Result<Self, StorageError> {
        let started = Instant::now();
        fsutil::create_dir_durable(data_dir)
            .map_err(|e| StorageError::io("create data dir", data_dir, e))?;
        let state_dir = data_dir.join(STATE_DIR);
        fsutil::create_dir_durable(&state_dir.join("next-chunk"))
            .map_err(|e| StorageError::io("create state dir", &state_dir, e))?;
        let lock_path = state_dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StorageError::io("open lock file", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    data_dir: data_dir.to_path_buf(),
                    lock: lock_path,
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(StorageError::io("lock", &lock_path, e)),
        }
        let feed = ChangeFeed::open(cfg.cluster.then_some(state_dir.as_path()), hook.clone())?;
        let tasks = TaskTracker::new();
        let cache = Arc::new(OpenCache::new(cfg.max_open_chunks, tasks.clone()));
        let ctx = Arc::new(Ctx {
            data_dir: data_dir.to_path_buf(),
            state_dir,
            server,
            cfg,
            hook,
            tasks,
            closing: AtomicBool::new(false),
            feed,
            cache,
        });
        let mut categories = BTreeMap::new();
        let mut chunk_count = 0usize;
        for entry in
            fs::read_dir(data_dir).map_err(|e| StorageError::io("list data dir", data_dir, e))?
        {
            let entry = entry.map_err(|e| StorageError::io("list data dir", data_dir, e))?;
            let fname = entry.file_name();
            let Some(name) = fname.to_str() else { continue };
            if name == STATE_DIR {
                continue;
            }
            let Ok(category) = Category::parse(name) else {
                tracing::warn!(entry = %entry.path().display(), "ignoring entry in data dir that is not a category");
                continue;
            };
            if !entry
                .file_type()
                .map_err(|e| StorageError::io("stat", entry.path(), e))?
                .is_dir()
            {
                tracing::warn!(entry = %entry.path().display(), "ignoring file in data dir");
                continue;
            }
            let log = load_category(&ctx, category.clone(), entry.path())?;
            chunk_count += log.list().len();
            categories.insert(category, Arc::new(log));
        }
        tracing::info!(
            categories = categories.len(),
            chunks = chunk_count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "storage recovered"
        );
        Ok(Self {
            ctx,
            categories: RwLock::new(Categories {
                logs: categories,
                creating: HashMap::new(),
            }),
            _lock: lock,
        })
    }

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

    /// The log of `category`, created (empty) if missing, whatever the
    /// number of categories: for copies of peers' chunks and the tier
    /// manifest, which hold data that exists already.
    ///
    /// # Errors
    /// Creating the category directory or reading its chunk counter failed.
    pub fn category_or_create(
        &self,
        category: &Category,
    ) -> Result<Arc<CategoryLog>, StorageError> {
        match self.category(category) {
            Some(log) => Ok(log),
            None => self.create_category(category, false),
        }
    }

    /// Creates `category` (empty) as its first write would, if
    /// `max_categories` allows: what Kafka's `CreateTopics` does. `false`
    /// when it existed already (nothing done).
    ///
    /// # Errors
    /// [`StorageError::TooManyCategories`], or creating its directory
    /// failed.
    pub fn create(&self, category: &Category) -> Result<bool, StorageError> {
        if self.category(category).is_some() {
            return Ok(false);
        }
        // Of two concurrent creations only the one that inserted the log
        // answers `true`.
        Ok(self.create_category_once(category, true)?.1)
    }

    /// Checks that a write may go to `category`: it exists, or one more
    /// category fits under `max_categories`. Lets a refused write be
    /// answered before its body is read; [`Storage::append`] checks again.
    ///
    /// # Errors
    /// [`StorageError::TooManyCategories`].
    pub fn admits(&self, category: &Category) -> Result<(), StorageError> {
        let c = self.categories.read();
        if c.logs.contains_key(category) || c.creating.contains_key(category) {
            return Ok(());
        }
        self.check_room(&c)
    }

    fn check_room(&self, c: &Categories) -> Result<(), StorageError> {
        let max = self.ctx.cfg.max_categories;
        if c.logs.len() + c.creating.len() >= max {
            return Err(StorageError::TooManyCategories { max });
        }
        Ok(())
    }

    /// Creates `category`: counted as being created under the lock (and,
    /// with `limited`, refused past `max_categories` before anything is
    /// written), its directory made durable and its counter read outside
    /// the lock, so creations of different categories overlap.
    fn create_category(
        &self,
        category: &Category,
        limited: bool,
    ) -> Result<Arc<CategoryLog>, StorageError> {
        Ok(self.create_category_once(category, limited)?.0)
    }

    /// [`Storage::create_category`], also saying whether this call created
    /// the log (`false`: it existed, or a concurrent call created it).
    fn create_category_once(
        &self,
        category: &Category,
        limited: bool,
    ) -> Result<(Arc<CategoryLog>, bool), StorageError> {
        {
            let mut c = self.categories.write();
            if let Some(log) = c.logs.get(category) {
                return Ok((Arc::clone(log), false));
            }
            if limited && !c.creating.contains_key(category) {
                self.check_room(&c)?;
            }
            *c.creating.entry(category.clone()).or_insert(0) += 1;
        }
        let dir = self.ctx.data_dir.join(category.as_str());
        let made = fsutil::create_dir_durable(&dir)
            .map_err(|e| StorageError::io("create category dir", &dir, e))
            .and_then(|()| read_counter(&self.ctx.counter_path(category)));
        let mut c = self.categories.write();
        if let Some(n) = c.creating.get_mut(category) {
            *n -= 1;
            if *n == 0 {
                c.creating.remove(category);
            }
        }
        if let Some(log) = c.logs.get(category) {
            return Ok((Arc::clone(log), false));
        }
        let log = Arc::new(CategoryLog::new(
            category.clone(),
            dir,
            Arc::clone(&self.ctx),
            BTreeMap::new(),
            made?,
        ));
        c.logs.insert(category.clone(), Arc::clone(&log));
        drop(c);
        tracing::info!(%category, "created category");
        Ok((log, true))
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

fn read_counter(path: &Path) -> Result<u64, StorageError> {
    match fs::read_to_string(path) {
        Ok(s) => s.trim().parse::<u64>().map_err(|e| StorageError::Io {
            op: "parse chunk counter",
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StorageError::io("read chunk counter", path, e)),
    }
}

fn load_category(
    ctx: &Arc<Ctx>,
    category: Category,
    dir: PathBuf,
) -> Result<CategoryLog, StorageError> {
    let mut chunks = BTreeMap::new();
    let stored = read_counter(&ctx.counter_path(&category))?;
    let mut next = stored;
    let mut orphan_indexes = Vec::new();
    for entry in fs::read_dir(&dir).map_err(|e| StorageError::io("list category", &dir, e))? {
        let entry = entry.map_err(|e| StorageError::io("list category", &dir, e))?;
        let path = entry.path();
        let Some(fname) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "ignoring file with a non-UTF-8 name");
            continue;
        };
        if let Some(stem) = fname.strip_suffix(chunk::index::INDEX_SUFFIX) {
            orphan_indexes.push((dir.join(stem), path));
            continue;
        }
        let Ok(name) = ChunkName::parse(&fname) else {
            tracing::warn!(path = %path.display(), "ignoring file that is not a chunk");
            continue;
        };
        let owned = name.owner() == &ctx.server;
        if owned {
            next = next.max(name.index() + 1);
        }
        if let Some(chunk) = chunk::recovery::load(
            name.clone(),
            &path,
            owned,
            !ctx.cfg.cluster,
            &ctx.hook,
            &ctx.cache,
        )? {
            chunks.insert(name, chunk);
        }
    }
    // Checked after loading: recovery may have removed empty chunks (and
    // their sidecars) that the directory listing still showed.
    for (data, idx) in orphan_indexes {
        if data.exists() || !idx.exists() {
            continue;
        }
        tracing::info!(path = %idx.display(), "removing index without chunk");
        match fs::remove_file(&idx) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("remove", &idx, e)),
        }
    }
    let counter = ctx.counter_path(&category);
    if next != stored {
        fsutil::rewrite_atomic(&counter, next.to_string().as_bytes())
            .map_err(|e| StorageError::io("record next chunk index in", &counter, e))?;
    }
    Ok(CategoryLog::new(
        category,
        dir,
        Arc::clone(ctx),
        chunks,
        next,
    ))
}
