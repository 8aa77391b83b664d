//! The chunks of one category on this server, and the single writer that
//! appends to this server's open chunk.
//!
//! Appends hold the writer lock only to copy bytes into the pre-faulted
//! mapping and write one 16-byte index record; creating the next chunk
//! (allocate, map, fsync dir) and sealing a full one (fsync, trim, seal
//! record) run in the background. This module never parses HTTP.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::fsutil;
use crate::names::{Category, ChunkName, MAX_CHUNK_INDEX};

use super::chunk::format::CheckedBody;
use super::chunk::index::{self, Record, HEADER_LEN, RECORD_LEN};
use super::chunk::publish::Torn;
use super::chunk::{index_path, Chunk, ChunkFiles, ChunkMap};
use super::copy::{self, CopyWriter};
use super::{Ctx, StorageError};
use crate::config::AppendMode;

/// What a successful append returns.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The chunk written to.
    pub chunk: Arc<Chunk>,
    /// Offset of the body's first byte.
    pub offset: u64,
    /// Body length.
    pub size: u64,
}

/// One entry of `listChunks`.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Chunk file name.
    pub name: String,
    /// Sealed: will never grow again.
    pub complete: bool,
    /// Bytes of whole messages readable here now.
    pub size: u64,
}

/// Bodies up to this size are copied inline on the request's thread; larger
/// ones on the blocking pool, so several copies into one chunk run in
/// parallel (on this machine the copy into fresh page-cache pages, not the
/// network, is the bottleneck: see docs/architecture.md).
const INLINE_COPY_MAX: u64 = 64 << 10;

/// The open chunk as the writer sees it.
#[derive(Debug)]
struct Active {
    chunk: Arc<Chunk>,
    map: Arc<ChunkMap>,
    files: Arc<ChunkFiles>,
    /// Bytes handed out to appends (published or still being copied).
    reserved: u64,
    /// Index records handed out.
    records: u64,
    capacity: u64,
    activated: Instant,
}

#[derive(Debug, Default)]
struct Writer {
    active: Option<Active>,
    failed: Option<String>,
}

/// All chunks of one category held by this server.
#[derive(Debug)]
pub struct CategoryLog {
    category: Category,
    dir: PathBuf,
    ctx: Arc<Ctx>,
    chunks: RwLock<BTreeMap<ChunkName, Arc<Chunk>>>,
    writer: Mutex<Writer>,
    /// Next chunk index; held while a chunk is being created.
    creator: Mutex<u64>,
    spare: Mutex<Option<Active>>,
    preparing: AtomicBool,
    /// Bumped whenever a chunk becomes listed (its first bytes published),
    /// for `listChunks` long polls.
    listed: tokio::sync::watch::Sender<u64>,
}

/// A byte range and index slot of the open chunk, reserved for one append.
/// Completing it (or dropping it) reports to the chunk's publisher, so a
/// reservation can never leave a permanent hole.
struct Reservation {
    chunk: Arc<Chunk>,
    map: Arc<ChunkMap>,
    files: Arc<ChunkFiles>,
    mode: AppendMode,
    off: u64,
    len: u32,
    record: u64,
    done: bool,
}

impl Reservation {
    /// Copies the body and writes its index record, then reports the outcome.
    fn fill(mut self, frames: &[Bytes], crc: u32) {
        let result = self
            .chunk
            .write_frames(self.mode, &self.map, &self.files, self.off, frames)
            .and_then(|()| {
                let pos = (HEADER_LEN
                    + RECORD_LEN * usize::try_from(self.record).unwrap_or(usize::MAX))
                    as u64;
                self.chunk
                    .write_record(&self.files, pos, &Record::batch(self.off, self.len, crc))
            });
        let outcome = result.map_err(|e| Torn {
            at: self.off,
            disk_full: matches!(e, StorageError::DiskFull { .. }),
            reason: crate::error_chain(&e),
        });
        if outcome.is_ok() && u64::from(self.len) > INLINE_COPY_MAX {
            // Large bodies run on the blocking pool: start their writeback
            // now so the next fdatasync (group commit or periodic flush)
            // only waits for the tail. fdatasync remains the durability point.
            if let Err(e) = fsutil::start_writeback(&self.files.data, self.off, u64::from(self.len))
            {
                tracing::debug!(error = %e, "sync_file_range failed; fdatasync will write these pages");
            }
        }
        self.done = true;
        self.chunk.complete_append(
            self.off,
            self.off + u64::from(self.len),
            self.record,
            outcome,
        );
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.chunk.complete_append(
                self.off,
                self.off + u64::from(self.len),
                self.record,
                Err(Torn {
                    at: self.off,
                    disk_full: false,
                    reason: "append abandoned before its bytes were written".into(),
                }),
            );
        }
    }
}

impl CategoryLog {
    pub(super) fn new(
        category: Category,
        dir: PathBuf,
        ctx: Arc<Ctx>,
        chunks: BTreeMap<ChunkName, Arc<Chunk>>,
        next_index: u64,
    ) -> Self {
        Self {
            category,
            dir,
            ctx,
            chunks: RwLock::new(chunks),
            writer: Mutex::new(Writer::default()),
            creator: Mutex::new(next_index),
            spare: Mutex::new(None),
            preparing: AtomicBool::new(false),
            listed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes whenever a chunk is added to [`CategoryLog::list`].
    #[must_use]
    pub fn subscribe_listing(&self) -> tokio::sync::watch::Receiver<u64> {
        self.listed.subscribe()
    }

    /// The category.
    #[must_use]
    pub fn category(&self) -> &Category {
        &self.category
    }

    /// Non-empty chunks, ordered by owner then index.
    #[must_use]
    pub fn list(&self) -> Vec<ChunkInfo> {
        self.chunks
            .read()
            .values()
            .filter_map(|c| {
                let s = c.state();
                (s.end > 0).then(|| ChunkInfo {
                    name: c.name().to_string(),
                    complete: s.sealed || s.closed,
                    size: s.end,
                })
            })
            .collect()
    }

    /// Every chunk this server holds (listed or not), by name.
    #[must_use]
    pub fn chunks(&self) -> Vec<Arc<Chunk>> {
        self.chunks.read().values().cloned().collect()
    }

    /// How far behind `positions` (a consumer group's acked offset per
    /// chunk; missing = 0) are: (bytes, messages) of readable data past them.
    ///
    /// # Errors
    /// An I/O error mapping a chunk to count its messages.
    pub fn lag(&self, positions: &BTreeMap<ChunkName, u64>) -> Result<(u64, u64), StorageError> {
        let (mut bytes, mut messages) = (0u64, 0u64);
        for chunk in self.chunks() {
            let end = chunk.state().end;
            let at = positions.get(chunk.name()).copied().unwrap_or(0).min(end);
            if at < end {
                bytes += end - at;
                messages += chunk.count_messages(at)?;
            }
        }
        Ok((bytes, messages))
    }

    /// The chunk called `name`, if this server holds it.
    #[must_use]
    pub fn chunk(&self, name: &ChunkName) -> Option<Arc<Chunk>> {
        self.chunks.read().get(name).cloned()
    }

    /// The open chunk, if any.
    pub(super) fn active_chunk(&self) -> Option<Arc<Chunk>> {
        self.writer
            .lock()
            .active
            .as_ref()
            .map(|a| Arc::clone(&a.chunk))
    }

    /// Appends a validated body atomically to this server's open chunk and
    /// returns once it (and everything before it) is readable.
    ///
    /// # Errors
    /// [`StorageError::DiskFull`] (nothing stored; retry later),
    /// [`StorageError::Failed`] after an earlier storage failure, or I/O errors.
    pub async fn append(
        self: &Arc<Self>,
        frames: Vec<Bytes>,
        body: CheckedBody,
    ) -> Result<Appended, StorageError> {
        let r = self.reserve(body.len)?;
        let chunk = Arc::clone(&r.chunk);
        let (off, end) = (r.off, r.off + body.len);
        if body.len <= INLINE_COPY_MAX {
            r.fill(&frames, body.crc);
        } else {
            // Runs to completion even if this request is dropped meanwhile.
            let copy = tokio::task::spawn_blocking(move || r.fill(&frames, body.crc));
            if let Err(e) = copy.await {
                tracing::error!(error = %e, "append copy task failed");
            }
        }
        chunk.wait_published(off, end).await?;
        self.ctx.feed.changed(&chunk);
        if off == 0 {
            // The chunk has just become visible in listings.
            self.listed.send_modify(|g| *g = g.wrapping_add(1));
        }
        Ok(Appended {
            chunk,
            offset: off,
            size: body.len,
        })
    }

    /// Reserves `len` bytes in the open chunk, rotating to a new chunk when
    /// they do not fit. Holds the writer lock only for bookkeeping.
    fn reserve(self: &Arc<Self>, len: u64) -> Result<Reservation, StorageError> {
        let batch_len = u32::try_from(len).map_err(|_| StorageError::Io {
            op: "append batch larger than 4 GiB to",
            path: self.dir.clone(),
            source: std::io::Error::from_raw_os_error(libc::EFBIG),
        })?;
        let mut w = self.writer.lock();
        if let Some(a) = &w.active {
            if let Some(reason) = a.chunk.failure() {
                w.failed.get_or_insert(reason);
            } else if let Some(t) = a.chunk.torn() {
                if t.disk_full {
                    // Seal what was published; continue in a new chunk once space frees.
                    if let Some(old) = w.active.take() {
                        self.retire(old);
                    }
                } else {
                    w.failed.get_or_insert(t.reason);
                }
            }
        }
        if let Some(reason) = w.failed.clone() {
            return Err(StorageError::Failed {
                category: self.category.to_string(),
                reason,
            });
        }
        let max_chunk = self.ctx.cfg.max_chunk_size;
        let mut used_spare = false;
        if w.active
            .as_ref()
            .is_none_or(|a| a.capacity - a.reserved < len)
        {
            if let Some(old) = w.active.take() {
                self.retire(old);
            }
            used_spare = len <= max_chunk;
            let fresh = self.next_chunk(len)?;
            self.chunks
                .write()
                .insert(fresh.chunk.name().clone(), Arc::clone(&fresh.chunk));
            w.active = Some(Active {
                activated: Instant::now(),
                ..fresh
            });
        }
        let Some(a) = w.active.as_mut() else {
            unreachable!("active chunk was just ensured")
        };
        let r = Reservation {
            chunk: Arc::clone(&a.chunk),
            map: Arc::clone(&a.map),
            files: Arc::clone(&a.files),
            mode: self.ctx.cfg.append_mode,
            off: a.reserved,
            len: batch_len,
            record: a.records,
            done: false,
        };
        a.reserved += len;
        a.records += 1;
        if a.reserved == a.capacity {
            if let Some(full) = w.active.take() {
                self.retire(full);
            }
        }
        drop(w);
        if used_spare {
            self.prepare_spare();
        }
        Ok(r)
    }

    /// Seals the open chunk if it is non-empty and older than `max_age`.
    pub(super) fn rotate_if_older(self: &Arc<Self>, max_age: std::time::Duration) {
        let mut w = self.writer.lock();
        if w.active
            .as_ref()
            .is_some_and(|a| a.reserved > 0 && a.activated.elapsed() >= max_age)
        {
            if let Some(old) = w.active.take() {
                drop(w);
                self.retire(old);
            }
        }
    }

    /// Seals the open chunk now (blocking) and removes the unused spare.
    /// Used at shutdown, after HTTP has drained.
    pub(super) fn close_blocking(&self) -> Result<(), StorageError> {
        let active = self.writer.lock().active.take();
        let mut result = Ok(());
        if let Some(a) = active {
            result = self.seal_now(a);
        }
        if let Some(spare) = self.spare.lock().take() {
            self.discard(&spare.chunk);
        }
        result
    }

    /// Hands a full or old chunk to a background sealer.
    fn retire(self: &Arc<Self>, old: Active) {
        let me = Arc::clone(self);
        let job = move || {
            if let Err(e) = me.seal_now(old) {
                tracing::error!(category = %me.category, error = %crate::error_chain(&e), "sealing failed; category is read-only");
                me.writer
                    .lock()
                    .failed
                    .get_or_insert_with(|| crate::error_chain(&e));
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(_) => {
                self.ctx.tasks.spawn_blocking(job);
            }
            Err(_) => job(),
        }
    }

    fn seal_now(&self, a: Active) -> Result<(), StorageError> {
        // Wait for appends still copying into this chunk.
        let published = a.chunk.wait_settled(a.reserved);
        if published.end == 0 {
            self.discard(&a.chunk);
            return Ok(());
        }
        a.chunk.close();
        self.ctx.feed.changed(&a.chunk);
        let idx_pos = HEADER_LEN as u64 + RECORD_LEN as u64 * published.records;
        a.chunk
            .seal_blocking(published.end, idx_pos, &self.ctx.hook)?;
        self.ctx.feed.changed(&a.chunk);
        tracing::debug!(chunk = %a.chunk.name(), size = published.end, "sealed chunk");
        Ok(())
    }

    /// Removes an empty chunk's files (its index number stays used).
    fn discard(&self, chunk: &Chunk) {
        self.chunks.write().remove(chunk.name());
        for p in [chunk.data_path(), chunk.idx_path()] {
            if let Err(e) = fs::remove_file(p) {
                tracing::warn!(path = %p.display(), error = %e, "could not remove empty chunk file");
            }
        }
    }

    /// Creates the next chunk in the background, so rotation never waits.
    fn prepare_spare(self: &Arc<Self>) {
        if self.ctx.closing.load(Ordering::Acquire) || self.preparing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        let job = move || {
            // The spare is published while the creator lock is held, so a
            // writer that needs a chunk either finds it or creates the next
            // index itself: chunks are always activated in index order.
            let mut next = me.creator.lock();
            if me.spare.lock().is_none() {
                match me.create_chunk(&mut next, me.ctx.cfg.max_chunk_size) {
                    Ok(fresh) => *me.spare.lock() = Some(fresh),
                    Err(e) => {
                        tracing::warn!(category = %me.category, error = %e, "could not pre-create the next chunk");
                    }
                }
            }
            drop(next);
            me.preparing.store(false, Ordering::Release);
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            self.ctx.tasks.spawn_blocking(job);
        } else {
            job();
        }
    }

    /// The chunk to activate next: the pre-created spare, or a new one.
    /// A body larger than `max_chunk_size` gets a chunk of its own; a spare
    /// is then discarded (its index is skipped, never reused) so chunks are
    /// activated in index order.
    fn next_chunk(&self, len: u64) -> Result<Active, StorageError> {
        let mut next = self.creator.lock();
        let spare = self.spare.lock().take();
        let max_chunk = self.ctx.cfg.max_chunk_size;
        if len > max_chunk {
            if let Some(s) = spare {
                self.discard(&s.chunk);
            }
            return self.create_chunk(&mut next, len);
        }
        match spare {
            Some(s) => Ok(s),
            None => self.create_chunk(&mut next, max_chunk),
        }
    }

    /// Allocates the next index (durably) and creates a preallocated,
    /// mapped chunk with an empty index sidecar. `next` is the creator lock.
    fn create_chunk(&self, next: &mut u64, capacity: u64) -> Result<Active, StorageError> {
        let index = *next;
        if index > MAX_CHUNK_INDEX {
            return Err(StorageError::IndexesExhausted {
                category: self.category.to_string(),
            });
        }
        let counter = self.ctx.counter_path(&self.category);
        fsutil::rewrite_atomic(&counter, (index + 1).to_string().as_bytes())
            .map_err(|e| StorageError::io("record next chunk index in", &counter, e))?;
        *next = index + 1;
        let name = ChunkName::new(self.ctx.server.clone(), index).map_err(|_| {
            StorageError::IndexesExhausted {
                category: self.category.to_string(),
            }
        })?;
        let data_path = self.dir.join(name.to_string());
        let idx_path = index_path(&data_path);
        let made = create_files(&data_path, &idx_path, capacity);
        let (files, map) = match made {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&data_path);
                let _ = fs::remove_file(&idx_path);
                return Err(e);
            }
        };
        let chunk = Arc::new(Chunk::new_writable(
            name,
            data_path,
            Arc::clone(&map),
            files,
        ));
        let files = chunk.files().ok_or_else(|| StorageError::Io {
            op: "open",
            path: idx_path.clone(),
            source: std::io::Error::other("new chunk has no files"),
        })?;
        Ok(Active {
            chunk,
            map,
            files,
            reserved: 0,
            records: 0,
            capacity,
            activated: Instant::now(),
        })
    }

    /// Deletes a sealed chunk after a chukcha-style ack of at least its size.
    ///
    /// # Errors
    /// [`StorageError::UnknownChunk`], [`StorageError::NotSealed`],
    /// [`StorageError::AckTooSmall`], or I/O errors removing the files.
    pub fn ack_chunk(&self, name: &ChunkName, size: u64) -> Result<(), StorageError> {
        let chunk = self.chunk(name).ok_or_else(|| StorageError::UnknownChunk {
            category: self.category.to_string(),
            name: name.to_string(),
        })?;
        let state = chunk.state();
        if !state.sealed {
            return Err(StorageError::NotSealed {
                name: name.to_string(),
            });
        }
        if size < state.end {
            return Err(StorageError::AckTooSmall {
                name: name.to_string(),
                size,
                final_size: state.end,
            });
        }
        if self.chunks.write().remove(name).is_none() {
            return Ok(()); // a concurrent ack removed it
        }
        for p in [chunk.idx_path(), chunk.data_path()] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("remove acked chunk file", p, e)),
            }
        }
        fsutil::fsync_dir(&self.dir).map_err(|e| StorageError::io("fsync", &self.dir, e))?;
        if name.owner() == &self.ctx.server {
            self.ctx.feed.deleted(&self.category, name)?;
        }
        tracing::info!(category = %self.category, chunk = %name, size = state.end, "deleted acked chunk");
        Ok(())
    }

    /// Copies of peers' chunks that are still being replicated (open files).
    #[must_use]
    pub fn open_copies(&self) -> Vec<Arc<Chunk>> {
        self.chunks
            .read()
            .values()
            .filter(|c| c.name().owner() != &self.ctx.server && c.files().is_some())
            .cloned()
            .collect()
    }

    /// Own chunks left open by a crash (cluster mode): they wait for the
    /// pull-back from replicas, then [`CategoryLog::seal_copy`].
    #[must_use]
    pub fn unsealed_own(&self) -> Vec<Arc<Chunk>> {
        let active = self.active_chunk();
        self.chunks
            .read()
            .values()
            .filter(|c| {
                let s = c.state();
                c.name().owner() == &self.ctx.server
                    && !s.sealed
                    && !s.closed
                    && !active.as_ref().is_some_and(|a| Arc::ptr_eq(a, c))
            })
            .cloned()
            .collect()
    }

    /// The writer to copy bytes into `name` (a peer's chunk, or an own
    /// chunk being completed after a crash): continues the copy held here,
    /// or creates an empty one. Blocking.
    ///
    /// # Errors
    /// [`StorageError::AlreadyComplete`] when the copy is sealed, or I/O
    /// errors creating or opening its files.
    pub fn copy_writer(&self, name: &ChunkName) -> Result<CopyWriter, StorageError> {
        let hint = self.ctx.cfg.max_chunk_size;
        if let Some(chunk) = self.chunk(name) {
            return CopyWriter::reopen(chunk, hint, self.ctx.hook.clone());
        }
        let data_path = self.dir.join(name.to_string());
        let chunk = Arc::new(Chunk::existing(
            name.clone(),
            data_path,
            0,
            false,
            std::time::SystemTime::now(),
        ));
        let writer = CopyWriter::create(Arc::clone(&chunk), hint, self.ctx.hook.clone())?;
        self.chunks.write().insert(name.clone(), chunk);
        Ok(writer)
    }

    /// Appends verified batches through `writer` (see [`CopyWriter::append`])
    /// and announces what became visible.
    ///
    /// # Errors
    /// As [`CopyWriter::append`].
    pub fn append_copy(
        &self,
        writer: &mut CopyWriter,
        records: &[Record],
        data: &[u8],
    ) -> Result<(), StorageError> {
        let before = writer.end();
        writer.append(records, data)?;
        if before == 0 && writer.end() > 0 {
            self.listed.send_modify(|g| *g = g.wrapping_add(1));
        }
        if writer.chunk().name().owner() == &self.ctx.server {
            self.ctx.feed.changed(writer.chunk());
        }
        Ok(())
    }

    /// Completes a copy whose owner's chunk is complete and held whole:
    /// closes it at once (readers and listings see it complete and move on
    /// to the next chunk), then seals it durably in the background, as the
    /// owner does with its own chunks.
    pub fn finish_copy(self: &Arc<Self>, writer: CopyWriter) {
        writer.chunk().close();
        let me = Arc::clone(self);
        let job = move || {
            let name = writer.chunk().name().clone();
            if let Err(e) = me.seal_copy(writer) {
                tracing::error!(chunk = %name, error = %crate::error_chain(&e), "sealing a chunk copy failed");
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            self.ctx.tasks.spawn_blocking(job);
        } else {
            job();
        }
    }

    /// Seals a copy (or a recovered own chunk) at its current end.
    ///
    /// # Errors
    /// As [`CopyWriter::seal`].
    pub fn seal_copy(&self, writer: CopyWriter) -> Result<(), StorageError> {
        let chunk = Arc::clone(writer.chunk());
        let empty = writer.end() == 0;
        if empty {
            self.chunks.write().remove(chunk.name());
            drop(writer);
            return copy::remove_files(&chunk);
        }
        writer.seal()?;
        if chunk.name().owner() == &self.ctx.server {
            self.ctx.feed.changed(&chunk);
        }
        Ok(())
    }

    /// Removes this server's copy of a peer's chunk (deleted by its owner,
    /// or diverged from it). Readers holding it keep their mapping.
    ///
    /// # Errors
    /// I/O errors removing the files.
    pub fn remove_copy(&self, name: &ChunkName) -> Result<bool, StorageError> {
        let Some(chunk) = self.chunks.write().remove(name) else {
            return Ok(false);
        };
        copy::remove_files(&chunk)?;
        fsutil::fsync_dir(&self.dir).map_err(|e| StorageError::io("fsync", &self.dir, e))?;
        self.listed.send_modify(|g| *g = g.wrapping_add(1));
        Ok(true)
    }

    /// Registers a tiered chunk found in the tier manifest at startup (no
    /// local files).
    pub fn add_tiered(&self, name: &ChunkName, size: u64, messages: u64) {
        let chunk = Arc::new(Chunk::existing(
            name.clone(),
            self.dir.join(name.to_string()),
            size,
            true,
            std::time::SystemTime::now(),
        ));
        chunk.set_tiered(messages);
        self.chunks.write().insert(name.clone(), chunk);
        self.listed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Removes the local files of a chunk whose object is uploaded,
    /// verified and recorded in the tier manifest. Readers switch to the
    /// object store; those holding the old mapping keep it.
    ///
    /// # Errors
    /// [`StorageError::UnknownChunk`], or removing the files failed.
    pub fn evict_tiered(&self, name: &ChunkName, messages: u64) -> Result<(), StorageError> {
        let chunk = self.chunk(name).ok_or_else(|| StorageError::UnknownChunk {
            category: self.category.to_string(),
            name: name.to_string(),
        })?;
        chunk.set_tiered(messages);
        copy::remove_files(&chunk)?;
        fsutil::fsync_dir(&self.dir).map_err(|e| StorageError::io("fsync", &self.dir, e))
    }

    /// Makes sure own chunk indexes below `next` are never handed out
    /// (after pulling back a chunk this server had lost).
    ///
    /// # Errors
    /// Recording the counter failed.
    pub fn reserve_indexes_below(&self, next: u64) -> Result<(), StorageError> {
        let mut n = self.creator.lock();
        if *n >= next {
            return Ok(());
        }
        let counter = self.ctx.counter_path(&self.category);
        fsutil::rewrite_atomic(&counter, next.to_string().as_bytes())
            .map_err(|e| StorageError::io("record next chunk index in", &counter, e))?;
        *n = next;
        Ok(())
    }
}

fn create_files(
    data_path: &Path,
    idx_path: &Path,
    capacity: u64,
) -> Result<(ChunkFiles, Arc<ChunkMap>), StorageError> {
    let data = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(data_path)
        .map_err(|e| StorageError::io("create chunk", data_path, e))?;
    fsutil::preallocate(&data, capacity)
        .map_err(|e| StorageError::io("preallocate", data_path, e))?;
    let idx: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(idx_path)
        .map_err(|e| StorageError::io("create index", idx_path, e))?;
    idx.write_all_at(&index::header(), 0)
        .map_err(|e| StorageError::io("write index header to", idx_path, e))?;
    let map = ChunkMap::map_writable(&data, capacity)
        .map_err(|e| StorageError::io("map", data_path, e))?;
    if let Some(dir) = data_path.parent() {
        fsutil::fsync_dir(dir).map_err(|e| StorageError::io("fsync", dir, e))?;
    }
    Ok((ChunkFiles { data, idx }, Arc::new(map)))
}
