//! One chunk: its files, its mapping, its published size and its group
//! commit. Appends are done by `category_log` (the only writer); this module
//! offers whole-message reads of the published bytes and the durability
//! machinery (`sync_to`, `seal`).

pub mod format;
pub mod index;
mod map;
pub mod publish;
pub mod recovery;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

pub use map::{ChunkMap, MappedBytes};

use crate::config::AppendMode;
use crate::fsutil::{self, FaultHook};
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
    map: Mutex<Option<Arc<ChunkMap>>>,
    files: Mutex<Option<Arc<ChunkFiles>>>,
    state: watch::Sender<ChunkState>,
    synced: watch::Sender<Synced>,
    sync_leader: AtomicBool,
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
    ) -> Self {
        let idx_path = index_path(&data_path);
        Self::build(
            name,
            data_path,
            idx_path,
            created,
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
    ) -> Self {
        let idx_path = index_path(&data_path);
        Self::build(
            name,
            data_path,
            idx_path,
            SystemTime::now(),
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
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        name: ChunkName,
        data_path: PathBuf,
        idx_path: PathBuf,
        created: SystemTime,
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
            map: Mutex::new(map),
            files: Mutex::new(files),
            state: watch::Sender::new(state),
            synced: watch::Sender::new(Synced {
                upto: synced,
                failed: false,
            }),
            sync_leader: AtomicBool::new(false),
            failure: Mutex::new(None),
            publisher: publish::Publisher::default(),
            copy_lock: Mutex::new(()),
            changed: AtomicU64::new(0),
            map_hint: AtomicU64::new(0),
            tiered: AtomicBool::new(false),
            tiered_messages: AtomicU64::new(0),
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

    /// Reports the outcome of one reserved append; publishes the new
    /// contiguous end, or marks the chunk torn.
    pub(crate) fn complete_append(
        &self,
        off: u64,
        end: u64,
        record: u64,
        outcome: Result<(), publish::Torn>,
    ) {
        let failed = outcome.is_err();
        if let Some(p) = self.publisher.complete(off, end, record, outcome) {
            // Completions race to this point after leaving the publisher's
            // lock: never let an older prefix overwrite a newer one.
            self.state.send_if_modified(|s| {
                let grew = p.end > s.end;
                s.end = s.end.max(p.end);
                grew
            });
        }
        if failed {
            self.state.send_modify(|s| s.torn = true);
        }
    }

    /// Why appends to this chunk stopped, if one failed.
    pub(crate) fn torn(&self) -> Option<publish::Torn> {
        self.publisher.torn()
    }

    /// Blocks until all appends up to `reserved` have reported (sealer).
    pub(crate) fn wait_settled(&self, reserved: u64) -> publish::Published {
        self.publisher.wait_settled(reserved)
    }

    /// Waits until `[off, end)` is published (readable), or fails if an
    /// append at or before `off` failed.
    ///
    /// # Errors
    /// [`StorageError::DiskFull`] or [`StorageError::Failed`].
    pub(crate) async fn wait_published(&self, off: u64, end: u64) -> Result<(), StorageError> {
        let mut rx = self.state.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if s.end >= end {
                return Ok(());
            }
            if s.torn {
                if let Some(t) = self.torn().filter(|t| t.at <= off) {
                    return Err(if t.disk_full {
                        StorageError::DiskFull {
                            op: "append to",
                            path: self.data_path.clone(),
                            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
                        }
                    } else {
                        StorageError::Failed {
                            category: self.category_name(),
                            reason: t.reason,
                        }
                    });
                }
            }
            if rx.changed().await.is_err() {
                return Err(self.failed_error());
            }
        }
    }

    pub(crate) fn files(&self) -> Option<Arc<ChunkFiles>> {
        self.files.lock().clone()
    }

    fn mapping(&self) -> Result<Arc<ChunkMap>, StorageError> {
        let mut guard = self.map.lock();
        let size = self.state().end;
        if let Some(m) = guard.as_ref().filter(|m| m.len() as u64 >= size) {
            return Ok(Arc::clone(m));
        }
        // First read, or a replica copy that grew past its mapping: map it
        // (again) with room to grow. Mapping past the end of the file is
        // allowed; only published bytes, which are in the file, are read.
        let len = size.max(self.map_hint.load(Ordering::Relaxed));
        let file = File::open(&self.data_path)
            .map_err(|e| StorageError::io("open chunk", &self.data_path, e))?;
        let map = Arc::new(
            ChunkMap::map_read_only(&file, len)
                .map_err(|e| StorageError::io("map chunk", &self.data_path, e))?,
        );
        *guard = Some(Arc::clone(&map));
        Ok(map)
    }

    /// Whole messages starting at `off`, at most `max_size` bytes.
    ///
    /// # Errors
    /// [`StorageError::OffsetBeyondEnd`], [`StorageError::NotBoundary`],
    /// [`StorageError::MaxSizeTooSmall`], or an I/O error mapping the file.
    pub fn read(&self, off: u64, max_size: u64) -> Result<ReadOutcome, StorageError> {
        let ChunkState {
            end,
            sealed,
            closed,
            ..
        } = self.state();
        let sealed = sealed || closed;
        if off > end {
            return Err(StorageError::OffsetBeyondEnd {
                name: self.name.to_string(),
                off,
                size: end,
            });
        }
        if off == end {
            // The published end is always a message boundary.
            return Ok(ReadOutcome::Empty { sealed });
        }
        let map = self.mapping()?;
        let (start, end_us) = (to_usize(off), to_usize(end));
        // SAFETY: [0, end) is published and immutable; map covers it.
        let published = unsafe { map.slice(0, end_us) };
        if !format::is_message_boundary(published, start) {
            return Err(StorageError::NotBoundary {
                name: self.name.to_string(),
                off,
            });
        }
        let window_end = end_us.min(start.saturating_add(to_usize(max_size)));
        let take = format::last_complete_message_end(&published[start..window_end]);
        if take == 0 {
            let next_len =
                format::first_message_len(&published[start..]).unwrap_or(end_us - start) as u64;
            return Err(StorageError::MaxSizeTooSmall { max_size, next_len });
        }
        // SAFETY: [start, start + take) lies inside the published range.
        let owner = unsafe { MappedBytes::new(map, start, start + take) };
        Ok(ReadOutcome::Data(Bytes::from_owner(owner)))
    }

    /// The published bytes `[off, end)` as a zero-copy view (peer fetches;
    /// callers pass batch boundaries).
    ///
    /// # Errors
    /// [`StorageError::OffsetBeyondEnd`] past the published end, or an I/O
    /// error mapping the file.
    pub fn raw_bytes(&self, off: u64, end: u64) -> Result<Bytes, StorageError> {
        let published = self.state().end;
        if off > end || end > published {
            return Err(StorageError::OffsetBeyondEnd {
                name: self.name.to_string(),
                off: end,
                size: published,
            });
        }
        if off == end {
            return Ok(Bytes::new());
        }
        let map = self.mapping()?;
        // SAFETY: [off, end) lies inside the published, immutable range.
        let owner = unsafe { MappedBytes::new(map, to_usize(off), to_usize(end)) };
        Ok(Bytes::from_owner(owner))
    }

    /// Index records of the published batches starting with record number
    /// `first`, which must start at offset `off`: as many whole batches as
    /// fit in `max_bytes` (at least one), none past the published end.
    ///
    /// # Errors
    /// [`StorageError::NotBoundary`] when record `first` does not start at
    /// `off`, or I/O errors reading the index.
    pub fn batch_records(
        &self,
        first: u64,
        off: u64,
        max_bytes: u64,
    ) -> Result<Vec<index::Record>, StorageError> {
        /// Records read per `pread` (64 KiB).
        const PER_READ: usize = 4096;
        let end = self.state().end;
        if off >= end {
            return Ok(Vec::new());
        }
        let file;
        let files = self.files();
        let idx: &File = if let Some(f) = files.as_ref() {
            &f.idx
        } else {
            file = File::open(&self.idx_path)
                .map_err(|e| StorageError::io("open index", &self.idx_path, e))?;
            &file
        };
        let mut out = Vec::new();
        let mut next_off = off;
        let mut taken = 0u64;
        let mut pos = index::HEADER_LEN as u64 + first * index::RECORD_LEN as u64;
        let mut buf = vec![0u8; PER_READ * index::RECORD_LEN];
        'read: loop {
            let n = read_up_to(idx, &mut buf, pos)
                .map_err(|e| StorageError::io("read index", &self.idx_path, e))?;
            let whole = n - n % index::RECORD_LEN;
            if whole == 0 {
                break;
            }
            for raw in buf[..whole].chunks_exact(index::RECORD_LEN) {
                let mut r = [0u8; index::RECORD_LEN];
                r.copy_from_slice(raw);
                let rec = index::Record::decode(&r);
                let rec_end = rec.offset + u64::from(rec.len);
                if rec.is_seal() || rec.len == 0 || rec.offset != next_off || rec_end > end {
                    break 'read;
                }
                if !out.is_empty() && taken + u64::from(rec.len) > max_bytes {
                    break 'read;
                }
                taken += u64::from(rec.len);
                next_off = rec_end;
                out.push(rec);
                if next_off == end || taken >= max_bytes {
                    break 'read;
                }
            }
            pos += whole as u64;
        }
        if out.is_empty() {
            return Err(StorageError::NotBoundary {
                name: self.name.to_string(),
                off,
            });
        }
        Ok(out)
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
        *self.map.lock() = None;
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

    /// Publishes copied bytes up to `end` (a batch boundary).
    pub(crate) fn publish_copied(&self, end: u64) {
        self.state.send_if_modified(|s| {
            let grew = end > s.end;
            s.end = s.end.max(end);
            grew
        });
    }

    /// Records that the first `upto` bytes are on disk (copies sync themselves).
    pub(crate) fn mark_synced(&self, upto: u64) {
        self.synced.send_modify(|s| s.upto = s.upto.max(upto));
    }

    /// How many bytes are known to be on disk.
    #[must_use]
    pub fn synced_upto(&self) -> u64 {
        self.synced.borrow().upto
    }

    /// Checks that `off` is a message boundary of the published bytes.
    ///
    /// # Errors
    /// [`StorageError::OffsetBeyondEnd`], [`StorageError::NotBoundary`], or
    /// an I/O error mapping the file.
    pub fn check_boundary(&self, off: u64) -> Result<(), StorageError> {
        let end = self.state().end;
        if off > end {
            return Err(StorageError::OffsetBeyondEnd {
                name: self.name.to_string(),
                off,
                size: end,
            });
        }
        if off == 0 || off == end {
            return Ok(()); // 0 and the published end are always boundaries
        }
        let map = self.mapping()?;
        // SAFETY: [0, end) is published and immutable; map covers it.
        let published = unsafe { map.slice(0, to_usize(end)) };
        if format::is_message_boundary(published, to_usize(off)) {
            Ok(())
        } else {
            Err(StorageError::NotBoundary {
                name: self.name.to_string(),
                off,
            })
        }
    }

    /// Number of messages in `[from, end)` (`from` a boundary).
    ///
    /// # Errors
    /// An I/O error mapping the file.
    pub fn count_messages(&self, from: u64) -> Result<u64, StorageError> {
        let end = self.state().end;
        if from >= end {
            return Ok(0);
        }
        if self.is_tiered() {
            // Counted at upload; a partly read tiered chunk is estimated
            // in proportion to its unread bytes.
            let total = self.tiered_messages.load(Ordering::Relaxed);
            let left = u128::from(total) * u128::from(end - from) / u128::from(end.max(1));
            return Ok(u64::try_from(left).unwrap_or(total));
        }
        let map = self.mapping()?;
        // SAFETY: [0, end) is published and immutable; map covers it.
        let published = unsafe { map.slice(0, to_usize(end)) };
        Ok(memchr::memchr_iter(b'\n', &published[to_usize(from)..]).count() as u64)
    }

    /// Copies a validated body to `[off, off + len)`, a range reserved for
    /// this append alone.
    pub(crate) fn write_frames(
        &self,
        mode: AppendMode,
        map: &ChunkMap,
        files: &ChunkFiles,
        off: u64,
        frames: &[Bytes],
    ) -> Result<(), StorageError> {
        let mut pos = off;
        let _serial = (mode == AppendMode::Write).then(|| self.copy_lock.lock());
        for f in frames {
            match mode {
                AppendMode::Write => files
                    .data
                    .write_all_at(f, pos)
                    .map_err(|e| StorageError::io("write to", &self.data_path, e))?,
                // SAFETY: this range was reserved under the category writer
                // lock for this append only; it lies past the published end
                // (no reader looks at it) and within the mapped capacity.
                AppendMode::Mmap => unsafe { map.write_at(to_usize(pos), f) },
            }
            pos += f.len() as u64;
        }
        Ok(())
    }

    /// Appends one index record (writer only).
    pub(crate) fn write_record(
        &self,
        files: &ChunkFiles,
        pos: u64,
        rec: &index::Record,
    ) -> Result<(), StorageError> {
        files
            .idx
            .write_all_at(&rec.encode(), pos)
            .map_err(|e| StorageError::io("append index record to", &self.idx_path, e))
    }

    /// Waits until the first `target` bytes are on disk, sharing one
    /// fdatasync among all concurrent waiters (group commit).
    ///
    /// # Errors
    /// [`StorageError::Failed`] if a sync failed; the chunk is then read-only.
    pub async fn sync_to(
        self: &Arc<Self>,
        target: u64,
        hook: &FaultHook,
    ) -> Result<(), StorageError> {
        let mut rx = self.synced.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if s.failed {
                return Err(self.failed_error());
            }
            if s.upto >= target {
                return Ok(());
            }
            if self
                .sync_leader
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // Lead in a spawned task so a cancelled request can never
                // leave the leader flag set.
                let me = Arc::clone(self);
                let hook = hook.clone();
                tokio::spawn(async move { me.lead_sync(hook).await });
            }
            if rx.changed().await.is_err() {
                return Err(self.failed_error());
            }
        }
    }

    async fn lead_sync(self: Arc<Self>, hook: FaultHook) {
        let end = self.state().end;
        let result = match self.files() {
            None => Ok(()), // sealed: everything is already durable
            Some(files) => {
                // Both files in parallel: their journal commits can merge.
                let (f2, h2) = (Arc::clone(&files), hook.clone());
                let data = tokio::task::spawn_blocking(move || fsutil::sync_data(&f2.data, &h2));
                let idx = tokio::task::spawn_blocking(move || fsutil::sync_data(&files.idx, &hook));
                let (data, idx) = tokio::join!(data, idx);
                let flat = |r: Result<std::io::Result<()>, tokio::task::JoinError>| {
                    r.unwrap_or_else(|e| Err(std::io::Error::other(e)))
                };
                flat(data).and(flat(idx))
            }
        };
        // Release leadership before publishing so a waiter woken by the
        // publish can always become the next leader.
        self.sync_leader.store(false, Ordering::Release);
        match result {
            Ok(()) => self.synced.send_modify(|s| s.upto = s.upto.max(end)),
            Err(e) => {
                self.fail(format!(
                    "fdatasync of {} failed: {e}",
                    self.data_path.display()
                ));
            }
        }
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

    /// Announces that nothing more will be published: `end` is final.
    /// Called once every reservation has settled, before the (slow) durable
    /// seal, so readers move on to the next chunk at once.
    pub(crate) fn close(&self) {
        self.state.send_modify(|s| s.closed = true);
    }

    /// Waits (at most `limit`) until the chunk is durably sealed, if it is
    /// closed; returns the state then.
    pub async fn wait_sealed(&self, limit: std::time::Duration) -> ChunkState {
        let mut rx = self.state.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let s = *rx.borrow_and_update();
            if s.sealed || !s.closed || self.failure().is_some() {
                return s;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return s },
                () = tokio::time::sleep_until(deadline) => return s,
            }
        }
    }

    /// Seals the chunk durably at `size`: sync data, trim the preallocated
    /// tail, append and sync the seal record. Blocking; run off the runtime.
    ///
    /// # Errors
    /// Any I/O error; the chunk is marked failed.
    pub(crate) fn seal_blocking(
        &self,
        size: u64,
        idx_pos: u64,
        hook: &FaultHook,
    ) -> Result<(), StorageError> {
        let Some(files) = self.files() else {
            return Ok(());
        };
        let result = (|| {
            fsutil::sync_data(&files.data, hook)
                .map_err(|e| StorageError::io("fdatasync", &self.data_path, e))?;
            files
                .data
                .set_len(size)
                .map_err(|e| StorageError::io("trim", &self.data_path, e))?;
            fsutil::sync_data(&files.data, hook)
                .map_err(|e| StorageError::io("fdatasync", &self.data_path, e))?;
            self.write_record(&files, idx_pos, &index::Record::seal(size))?;
            // Drop records of appends that were copied but never published.
            files
                .idx
                .set_len(idx_pos + index::RECORD_LEN as u64)
                .map_err(|e| StorageError::io("trim", &self.idx_path, e))?;
            fsutil::sync_data(&files.idx, hook)
                .map_err(|e| StorageError::io("fdatasync", &self.idx_path, e))
        })();
        match result {
            Ok(()) => {
                *self.files.lock() = None;
                self.state.send_modify(|s| {
                    s.end = size;
                    s.sealed = true;
                });
                self.synced.send_modify(|s| s.upto = s.upto.max(size));
                Ok(())
            }
            Err(e) => {
                self.fail(crate::error_chain(&e));
                Err(e)
            }
        }
    }
}

/// Reads into `buf` at `pos` until it is full or the file ends.
fn read_up_to(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], pos + n as u64) {
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
