//! Opening the data dir: creating it and the state dir, taking the
//! data-dir lock, and recovering every category at startup (torn tails
//! cut, open chunks sealed, empty ones removed, orphan index sidecars
//! removed, the next-chunk counter brought past every own chunk). Never
//! serves requests.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use tokio_util::task::TaskTracker;

use super::categories::{read_counter, Categories};
use super::open_cache::OpenCache;
use super::{chunk, CategoryLog, ChangeFeed, Ctx, Storage, StorageError, STATE_DIR};
use crate::config::StorageConfig;
use crate::fsutil::{self, FaultHook};
use crate::names::{Category, ChunkName, ServerName};

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
