//! One chunk: its files, its mapping, its published state (a watch channel
//! for long polls) and its failure latch. This file holds the type and its
//! small accessors; the jobs on it live next door:
//!
//! - `append.rs`: the appender's side (write frames and index records into a
//!   reserved slot, report completion, wait for publication);
//! - `read.rs`: whole-message reads of the published bytes through the
//!   mapping, zero-copy, using the read rules of [`window`] and
//!   [`batches`];
//! - `commit.rs`: group commit (`sync_to`);
//! - `seal.rs`: closing and durable sealing;
//! - `map_cell.rs`: the cached mapping for reads, bounded by the storage's
//!   open-chunk cache.
//!
//! Appends are decided by `category_log` (the only writer); a chunk never
//! parses HTTP and never decides where in the category it goes.

mod append;
pub mod batches;
mod commit;
pub mod format;
pub mod index;
mod map;
mod map_cell;
pub mod publish;
mod read;
pub mod recovery;
mod seal;
pub mod window;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

pub(crate) use map::{ChunkMap, MapWriter, WriteSlot};
use map_cell::MapCell;

use super::open_cache::OpenCache;
use crate::names::ChunkName;

use super::StorageError;

/// The observable state of a chunk, broadcast to long-polling readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkState {
    /// Bytes of whole messages readable now.
    pub end: u64,
    /// Sealed durably: the chunk will never grow again.
    pub sealed: bool,
    /// Closed to appends: `end` is final, but the seal may still be on its
    /// way to disk. Readers and listings treat it as complete; acks wait
    /// for `sealed`.
    pub closed: bool,
    /// An append failed: nothing past `end` will ever be published.
    pub torn: bool,
}

/// How far the chunk is known to be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Synced {
    upto: u64,
    failed: bool,
}

/// Open file handles of a chunk that is still being written or sealed.
#[derive(Debug)]
pub struct ChunkFiles {
    /// The chunk (message bytes).
    pub data: File,
    /// The index sidecar.
    pub idx: File,
}

/// A chunk file and its sidecar. Shared (`Arc`) by the writer, readers,
/// sync waiters and the sealer.
#[derive(Debug)]
pub struct Chunk {
    name: ChunkName,
    data_path: PathBuf,
    idx_path: PathBuf,
    created: SystemTime,
    /// The cached mapping for reads.
    map: Arc<MapCell>,
    /// The open files while the chunk is written, copied or sealed; `None`
    /// once sealed, and while an idle open chunk is parked.
    files: Mutex<Option<Arc<ChunkFiles>>>,
    /// Where the cached mapping is registered (bounded).
    cache: Arc<OpenCache>,
    state: watch::Sender<ChunkState>,
    synced: watch::Sender<Synced>,
    /// Group commits running now (at most [`commit::MAX_SYNCS`]) and the
    /// highest end one of them covers.
    syncs: Mutex<commit::Syncs>,
    failure: Mutex<Option<String>>,
    publisher: publish::Publisher,
    /// Serialises `pwrite`s into this chunk: ext4 takes the inode lock for
    /// buffered writes anyway, and waiting here sleeps instead of spinning
    /// on that lock in the kernel (measured: 17% CPU lost to the spin).
    copy_lock: Mutex<()>,
    /// Sequence number of the last change announced to peers (own chunks).
    changed: AtomicU64,
    /// Length to map a growing replica copy with, so reads do not remap
    /// on every append.
    map_hint: AtomicU64,
    /// The bytes live in the object store only (tiered).
    tiered: AtomicBool,
    /// Messages in a tiered chunk (from the tier manifest).
    tiered_messages: AtomicU64,
    /// The version of the index sidecar: known for a new chunk, else read
    /// from the sidecar's header when first needed.
    index_format: OnceLock<index::IndexFormat>,
}

/// The sidecar path of a chunk file.
#[must_use]
pub fn index_path(data_path: &Path) -> PathBuf {
    let mut s = data_path.as_os_str().to_os_string();
    s.push(index::INDEX_SUFFIX);
    PathBuf::from(s)
}

/// The result of a read.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Whole messages (zero-copy view of the mapping).
    Data(Bytes),
    /// No bytes at this offset yet; `sealed` says whether more can come.
    Empty {
        /// The chunk is sealed: this is its end.
        sealed: bool,
    },
}

impl Chunk {
    /// A chunk whose data is already complete on disk (sealed) or recovered.
    pub(crate) fn existing(
        name: ChunkName,
        data_path: PathBuf,
        size: u64,
        sealed: bool,
        created: SystemTime,
        cache: &Arc<OpenCache>,
    ) -> Self {
        let idx_path = index_path(&data_path);
        Self::build(
            name,
            data_path,
            idx_path,
            created,
            cache,
            None,
            None,
            ChunkState {
                end: size,
                sealed,
                closed: false,
                torn: false,
            },
            size,
        )
    }

    /// A new, empty, writable chunk.
    pub(crate) fn new_writable(
        name: ChunkName,
        data_path: PathBuf,
        map: Arc<ChunkMap>,
        files: ChunkFiles,
        cache: &Arc<OpenCache>,
    ) -> Self {
        let idx_path = index_path(&data_path);
        Self::build(
            name,
            data_path,
            idx_path,
            SystemTime::now(),
            cache,
            Some(map),
            Some(Arc::new(files)),
            ChunkState {
                end: 0,
                sealed: false,
                closed: false,
                torn: false,
            },
            0,
        )
        .with_index_format(index::IndexFormat::CURRENT)
    }

    /// This chunk, whose sidecar is known to be in `format`.
    #[must_use]
    pub(crate) fn with_index_format(self, format: index::IndexFormat) -> Self {
        let _ = self.index_format.set(format);
        self
    }

    /// The version of the chunk's index sidecar: read from its header the
    /// first time; a sidecar that is missing or has no header yet is (or
    /// will be written) in the current version.
    ///
    /// # Errors
    /// The sidecar cannot be read, or its header is not a chunkbus index.
    pub(crate) fn index_format(&self) -> Result<index::IndexFormat, StorageError> {
        if let Some(f) = self.index_format.get() {
            return Ok(*f);
        }
        let mut head = [0u8; index::MAX_RECORD_LEN];
        let n = match File::open(&self.idx_path) {
            Ok(f) => read_prefix(&f, &mut head)
                .map_err(|e| StorageError::io("read index header of", &self.idx_path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StorageError::io("open index", &self.idx_path, e)),
        };
        let head = &head[..n];
        // As `index::scan` decides: no header yet, a header of zeroes, or a
        // version-2 header cut short by a crash is the current version.
        let v2 = index::IndexFormat::V2.header();
        let format = if n < index::IndexFormat::V1.header_len()
            || head[..16].iter().all(|&b| b == 0)
            || (n < v2.len() && v2.starts_with(head))
        {
            index::IndexFormat::CURRENT
        } else {
            index::IndexFormat::detect(head).ok_or_else(|| StorageError::CorruptIndex {
                path: self.idx_path.clone(),
                source: index::IndexFormatError::BadHeader,
            })?
        };
        Ok(*self.index_format.get_or_init(|| format))
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        name: ChunkName,
        data_path: PathBuf,
        idx_path: PathBuf,
        created: SystemTime,
        cache: &Arc<OpenCache>,
        map: Option<Arc<ChunkMap>>,
        files: Option<Arc<ChunkFiles>>,
        state: ChunkState,
        synced: u64,
    ) -> Self {
        Self {
            name,
            data_path,
            idx_path,
            created,
            map: Arc::new(MapCell::new(cache, map)),
            files: Mutex::new(files),
            cache: Arc::clone(cache),
            state: watch::Sender::new(state),
            synced: watch::Sender::new(Synced {
                upto: synced,
                failed: false,
            }),
            syncs: Mutex::new(commit::Syncs::default()),
            failure: Mutex::new(None),
            publisher: publish::Publisher::default(),
            copy_lock: Mutex::new(()),
            changed: AtomicU64::new(0),
            map_hint: AtomicU64::new(0),
            tiered: AtomicBool::new(false),
            tiered_messages: AtomicU64::new(0),
            index_format: OnceLock::new(),
        }
    }

    /// The chunk's name.
    #[must_use]
    pub fn name(&self) -> &ChunkName {
        &self.name
    }

    /// Path of the chunk file.
    #[must_use]
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// Path of the index sidecar.
    #[must_use]
    pub fn idx_path(&self) -> &Path {
        &self.idx_path
    }

    /// When the chunk was created (file mtime for chunks found at startup).
    #[must_use]
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Current state (size and sealed flag).
    #[must_use]
    pub fn state(&self) -> ChunkState {
        *self.state.borrow()
    }

    /// A receiver that sees every change of the state (for long polls).
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<ChunkState> {
        self.state.subscribe()
    }

    /// The first storage failure of this chunk, if any.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// The open files, while the chunk is being written, copied or sealed.
    pub(crate) fn files(&self) -> Option<Arc<ChunkFiles>> {
        self.files.lock().clone()
    }

    /// Whether the chunk's bytes live in the object store only.
    #[must_use]
    pub fn is_tiered(&self) -> bool {
        self.tiered.load(Ordering::Acquire)
    }

    /// Marks the chunk tiered (its local files are about to go): reads go
    /// to the object store from now on.
    pub(crate) fn set_tiered(&self, messages: u64) {
        self.tiered_messages.store(messages, Ordering::Relaxed);
        self.tiered.store(true, Ordering::Release);
        self.map.clear();
    }

    /// Opens the chunk's data and index files read-write (an idle open
    /// chunk written or sealed again).
    ///
    /// # Errors
    /// The OS error, naming the file.
    pub(crate) fn open_files(&self) -> Result<ChunkFiles, StorageError> {
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .map_err(|e| StorageError::io("open chunk", p, e))
        };
        Ok(ChunkFiles {
            data: open(&self.data_path)?,
            idx: open(&self.idx_path)?,
        })
    }

    /// Gives a parked open chunk its files and writable mapping again.
    pub(crate) fn attach(&self, files: Arc<ChunkFiles>, map: Arc<ChunkMap>) {
        *self.files.lock() = Some(files);
        *self.map.lock() = Some(map);
    }

    /// Parks an idle open chunk: forgets its files and its writer's
    /// mapping `map` (appends and reads reopen them).
    pub(crate) fn detach(&self, map: &Arc<ChunkMap>) {
        *self.files.lock() = None;
        self.map.clear_if(map);
    }

    /// Forgets the writer's mapping `map` (the chunk was sealed: later
    /// reads map it read-only, through the cache).
    pub(crate) fn forget_writer_map(&self, map: &Arc<ChunkMap>) {
        self.map.clear_if(map);
    }

    /// Stamps the sequence number of the chunk's last announced change.
    pub(crate) fn set_changed(&self, seq: u64) {
        self.changed.store(seq, Ordering::Release);
    }

    /// Sequence number of the chunk's last announced change (0: none).
    #[must_use]
    pub fn changed_seq(&self) -> u64 {
        self.changed.load(Ordering::Acquire)
    }

    /// Opens the chunk for copying verified batches into it (a replica
    /// copy, or an own chunk being completed from a replica after a crash).
    /// `map_hint` is the length to map it with for reads.
    pub(crate) fn open_for_copy(&self, files: Arc<ChunkFiles>, map_hint: u64) {
        self.map_hint.store(map_hint, Ordering::Relaxed);
        *self.files.lock() = Some(files);
    }

    /// Marks the chunk failed (read-only) and wakes every sync waiter.
    pub(crate) fn fail(&self, reason: String) {
        tracing::error!(chunk = %self.name, %reason, "chunk storage failure; chunk is now read-only");
        self.failure.lock().get_or_insert(reason);
        self.synced.send_modify(|s| s.failed = true);
    }

    fn category_name(&self) -> String {
        self.data_path
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn failed_error(&self) -> StorageError {
        StorageError::Failed {
            category: self.category_name(),
            reason: self.failure().unwrap_or_else(|| "sync failed".into()),
        }
    }

    /// Position of index record number `n` in the sidecar.
    ///
    /// # Errors
    /// A record number whose position does not fit in a `u64` (no index
    /// can hold it), as an I/O error naming the index.
    pub(crate) fn record_pos(&self, n: u64) -> Result<u64, StorageError> {
        self.index_format()?.record_pos(n).ok_or_else(|| {
            StorageError::io(
                "address index record in",
                &self.idx_path,
                std::io::Error::from_raw_os_error(libc::EFBIG),
            )
        })
    }
}

/// Reads up to `buf.len()` bytes from the start of `f`; returns how many.
fn read_prefix(f: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}
