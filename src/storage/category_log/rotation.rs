//! Rotation of a category's open chunk: retiring a full, old or torn chunk
//! (closed at once, sealed durably on the blocking pool), sealing at
//! shutdown, and creating chunks: the next index is recorded durably
//! first, then the mapped files, with a first step of blocks allocated (the
//! writer allocates the rest in steps ahead of its appends). A category
//! whose last chunk filled up is busy: a spare is then pre-created in the
//! background so its rotations never wait; idle categories have none.
//! Never appends bytes.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{Active, CategoryLog, Handles};
use crate::fsutil;
use crate::names::{ChunkName, MAX_CHUNK_INDEX};
use crate::storage::chunk::index::IndexFormat;
use crate::storage::chunk::{index_path, Chunk, ChunkFiles, ChunkMap, MapWriter};
use crate::storage::StorageError;

impl CategoryLog {
    /// Seals the open chunk if it is non-empty and older than `max_age`.
    pub(in crate::storage) fn rotate_if_older(self: &Arc<Self>, max_age: std::time::Duration) {
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
    pub(in crate::storage) fn close_blocking(&self) -> Result<(), StorageError> {
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
    pub(super) fn retire(self: &Arc<Self>, old: Active) {
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
        self.ctx.run_blocking(job);
    }

    pub(super) fn seal_now(&self, a: Active) -> Result<(), StorageError> {
        // Wait for appends still copying into this chunk.
        let published = a.chunk.wait_settled(a.reserved);
        if published.end == 0 {
            self.discard(&a.chunk);
            return Ok(());
        }
        a.chunk.close();
        self.ctx.feed.changed(&a.chunk);
        a.chunk
            .seal_blocking(published.end, published.records, &self.ctx.hook)?;
        if let Some(h) = &a.open {
            // Reads map the sealed file read-only, through the cache.
            a.chunk.forget_writer_map(h.slots.map());
        }
        self.ctx.feed.changed(&a.chunk);
        tracing::debug!(chunk = %a.chunk.name(), size = published.end, "sealed chunk");
        Ok(())
    }

    /// Removes an empty chunk's files (its index number stays used).
    pub(super) fn discard(&self, chunk: &Chunk) {
        self.chunks.write().remove(chunk.name());
        for p in [chunk.data_path(), chunk.idx_path()] {
            if let Err(e) = fs::remove_file(p) {
                tracing::warn!(path = %p.display(), error = %e, "could not remove empty chunk file");
            }
        }
    }

    /// Creates the next chunk in the background, so rotation never waits;
    /// `step` bytes of it are allocated at once.
    pub(super) fn prepare_spare(self: &Arc<Self>, step: u64) {
        if self.ctx.closing.load(Ordering::Acquire) || self.preparing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        let job = move || {
            // The spare is published while the creator lock is held, so a
            // writer that needs a chunk either finds it or creates the next
            // index itself: chunks are always activated in index order.
            let mut next = me.creator.lock();
            let mut made = false;
            if me.spare.lock().is_none() {
                match me.create_chunk(&mut next, me.ctx.cfg.max_chunk_size, step) {
                    Ok(fresh) => {
                        *me.spare.lock() = Some(fresh);
                        made = true;
                    }
                    Err(e) => {
                        tracing::warn!(category = %me.category, error = %e, "could not pre-create the next chunk");
                    }
                }
            }
            drop(next);
            me.preparing.store(false, Ordering::Release);
            if made {
                me.ctx.cache.opened(&me);
            }
        };
        self.ctx.run_blocking(job);
    }

    /// The chunk to activate next: the pre-created spare, or a new one.
    /// A body larger than `max_chunk_size` gets a chunk of its own; a spare
    /// is then discarded (its index is skipped, never reused) so chunks are
    /// activated in index order.
    pub(super) fn next_chunk(&self, len: u64) -> Result<Active, StorageError> {
        let mut next = self.creator.lock();
        let spare = self.spare.lock().take();
        let max_chunk = self.ctx.cfg.max_chunk_size;
        if len > max_chunk {
            if let Some(s) = spare {
                self.discard(&s.chunk);
            }
            return self.create_chunk(&mut next, len, 0);
        }
        match spare {
            Some(s) => Ok(s),
            None => self.create_chunk(&mut next, max_chunk, 0),
        }
    }

    /// Allocates the next index (durably) and creates a mapped chunk of
    /// `capacity` bytes, the first `allocate` of them allocated, with an
    /// empty index sidecar. `next` is the creator lock.
    pub(super) fn create_chunk(
        &self,
        next: &mut u64,
        capacity: u64,
        allocate: u64,
    ) -> Result<Active, StorageError> {
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
        let made = create_files(&data_path, &idx_path, capacity, allocate.min(capacity));
        let (files, map, slots) = match made {
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
            map,
            files,
            &self.ctx.cache,
        ));
        let files = chunk.files().ok_or_else(|| StorageError::Io {
            op: "open",
            path: idx_path.clone(),
            source: std::io::Error::other("new chunk has no files"),
        })?;
        Ok(Active {
            chunk,
            open: Some(Handles { slots, files }),
            reserved: 0,
            records: 0,
            capacity,
            activated: Instant::now(),
        })
    }
}

/// Creates the chunk file (its first `allocate` bytes allocated) and its
/// index sidecar (header only), maps `capacity` bytes of the chunk
/// writable, and fsyncs the directory.
fn create_files(
    data_path: &Path,
    idx_path: &Path,
    capacity: u64,
    allocate: u64,
) -> Result<(ChunkFiles, Arc<ChunkMap>, MapWriter), StorageError> {
    let data = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(data_path)
        .map_err(|e| StorageError::io("create chunk", data_path, e))?;
    let (map, mut slots) = ChunkMap::map_writable(&data, capacity, 0)
        .map_err(|e| StorageError::io("map", data_path, e))?;
    slots
        .allocate(&data, allocate)
        .map_err(|e| StorageError::io("preallocate", data_path, e))?;
    let idx: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(idx_path)
        .map_err(|e| StorageError::io("create index", idx_path, e))?;
    idx.write_all_at(&IndexFormat::CURRENT.header(), 0)
        .map_err(|e| StorageError::io("write index header to", idx_path, e))?;
    if let Some(dir) = data_path.parent() {
        fsutil::fsync_dir(dir).map_err(|e| StorageError::io("fsync", dir, e))?;
    }
    Ok((ChunkFiles { data, idx }, map, slots))
}
