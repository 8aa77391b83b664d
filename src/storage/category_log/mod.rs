//! The chunks of one category on this server: this server's own chunks
//! (one open for appends, the rest sealed), copies of peers' chunks, and
//! tiered chunks whose bytes live in the object store. This file holds the
//! type, the listing (and its long-poll channel), chukcha acks and the tier
//! hand-over; the jobs on it live next door:
//!
//! - `writer.rs`: the append path (reserve → copy → publish);
//! - `rotation.rs`: retiring full or old chunks, sealing them in the
//!   background, and the spare chunk pre-created for busy categories;
//! - `parking.rs`: closing an idle category's open chunk (files, mapping,
//!   unwritten allocation) and reopening it on the next write;
//! - `copies.rs`: copies of peers' chunks (replication, crash pull-back);
//! - `idempotent.rs`: writes of idempotent producers (dedup by producer
//!   id and sequence number).
//!
//! This module never parses HTTP and never talks to peers.

mod copies;
pub mod idempotent;
mod parking;
mod rotation;
mod writer;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::fsutil;
use crate::names::{Category, ChunkName};

use super::chunk::{Chunk, ChunkFiles, MapWriter};
use super::copy;
use super::open_cache::Usage;
use super::{Ctx, StorageError};

/// First allocation step of a category's open chunk: what one small
/// message costs on disk (plus a block of index).
const MIN_STEP: u64 = 64 << 10;

/// Largest allocation step: a busy chunk allocates this much ahead of its
/// writer (a `posix_fallocate` every few MiB, measured at a few µs each).
const MAX_STEP: u64 = 8 << 20;

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

/// The open files of the open chunk and the writer of its mapping.
#[derive(Debug)]
struct Handles {
    /// Allocates the file ahead of the appends and hands out the write
    /// slots of the chunk's mapping.
    slots: MapWriter,
    files: Arc<ChunkFiles>,
}

/// The open chunk as the writer sees it.
#[derive(Debug)]
struct Active {
    chunk: Arc<Chunk>,
    /// `None` while the chunk is parked (idle: files closed, mapping
    /// dropped, unwritten allocation trimmed); the next append reopens it.
    open: Option<Handles>,
    /// Bytes handed out to appends (published or still being copied).
    reserved: u64,
    /// Index records handed out.
    records: u64,
    capacity: u64,
    activated: Instant,
}

#[derive(Debug)]
struct Writer {
    active: Option<Active>,
    failed: Option<String>,
    /// How far the next allocation of the open chunk reaches past what an
    /// append needs: doubles with every allocation (up to [`MAX_STEP`]),
    /// carries over to the next chunk, and falls back to [`MIN_STEP`] when
    /// the category goes idle, so allocation follows the write rate.
    step: u64,
    /// The last chunk was retired because it was full: the category is
    /// busy, and the chunk after it gets a spare ready.
    busy: bool,
}

impl Default for Writer {
    fn default() -> Self {
        Self {
            active: None,
            failed: None,
            step: MIN_STEP,
            busy: false,
        }
    }
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
    /// Key and last append in the open-chunk cache.
    usage: Usage,
    /// Copies of peers' chunks deleted here because their owner deleted
    /// them (or they were acked here and the owner took the ack): such a
    /// chunk is gone for good, not "not copied yet". In memory; after a
    /// restart the owner's full tombstone list fills it again on the first
    /// poll.
    deleted_copies: Mutex<std::collections::HashSet<ChunkName>>,
    /// What peers' change feeds announced of their chunks here since this
    /// process started (see [`CategoryLog::note_announced`]).
    announced: Mutex<Announced>,
    /// Idempotent producers' dedup state, built on first use
    /// (`idempotent.rs`).
    producers: std::sync::OnceLock<Mutex<super::producers::Producers>>,
}

/// Peers' chunks of a category their change feeds announced.
#[derive(Debug, Default)]
struct Announced {
    /// Every announced chunk (with data, as feeds announce only those).
    names: std::collections::HashSet<ChunkName>,
    /// Per owner, the highest announced index.
    highest: std::collections::HashMap<crate::names::ServerName, u64>,
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
            chunks: RwLock::new(chunks),
            writer: Mutex::new(Writer::default()),
            creator: Mutex::new(next_index),
            spare: Mutex::new(None),
            preparing: AtomicBool::new(false),
            listed: tokio::sync::watch::Sender::new(0),
            usage: ctx.cache.usage(),
            deleted_copies: Mutex::new(std::collections::HashSet::new()),
            announced: Mutex::new(Announced::default()),
            producers: std::sync::OnceLock::new(),
            ctx,
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

    /// Whether `name`, not held here, is known to be deleted (or never to
    /// hold data): an own chunk whose index was handed out and that is
    /// neither held nor the pre-created spare (own indexes are never
    /// reused, and chunks are activated in index order); a copy deleted
    /// here because its owner deleted it; or a peer's chunk its change feed
    /// skipped: the feed announced a later chunk of the same owner but
    /// never this one. An owner activates its chunks in index order and
    /// announces each one's first bytes before the next is activated, so
    /// a skipped index never held data (a discarded spare, an empty chunk
    /// retired or removed at restart) or was deleted before this server
    /// polled. Anything else not held may still appear (a copy not
    /// replicated yet) and is merely unknown.
    #[must_use]
    pub fn is_deleted(&self, name: &ChunkName) -> bool {
        if name.owner() != &self.ctx.server {
            if self.deleted_copies.lock().contains(name) {
                return true;
            }
            let skipped = {
                let a = self.announced.lock();
                !a.names.contains(name)
                    && a.highest
                        .get(name.owner())
                        .is_some_and(|&h| h > name.index())
            };
            return skipped && !self.chunks.read().contains_key(name);
        }
        // Lock order of activation (writer → creator → spare): with the
        // writer held no chunk is between its creation and the listing.
        let _w = self.writer.lock();
        let next = *self.creator.lock();
        let spare = self.spare.lock().as_ref().map(|s| s.chunk.name().index());
        name.index() < next && spare != Some(name.index()) && !self.chunks.read().contains_key(name)
    }

    /// Remembers that the copy `name` of a peer's chunk was deleted here
    /// because it was deleted for good (its owner's tombstone, an ack):
    /// [`CategoryLog::is_deleted`] says so from now on.
    pub fn note_deleted_copy(&self, name: &ChunkName) {
        if name.owner() != &self.ctx.server {
            self.deleted_copies.lock().insert(name.clone());
        }
    }

    /// Records that the change feed of `name`'s owner announced it (it
    /// holds data): see [`CategoryLog::is_deleted`].
    pub fn note_announced(&self, name: &ChunkName) {
        if name.owner() == &self.ctx.server {
            return;
        }
        let mut a = self.announced.lock();
        if a.names.insert(name.clone()) {
            let h = a.highest.entry(name.owner().clone()).or_insert(0);
            *h = (*h).max(name.index());
        }
    }

    /// Takes back [`CategoryLog::note_deleted_copy`]: the owner refused
    /// the ack that deleted the copy here, so the chunk still exists.
    pub fn forget_deleted_copy(&self, name: &ChunkName) {
        self.deleted_copies.lock().remove(name);
    }

    /// The open chunk, if any.
    pub(super) fn active_chunk(&self) -> Option<Arc<Chunk>> {
        self.writer
            .lock()
            .active
            .as_ref()
            .map(|a| Arc::clone(&a.chunk))
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

    /// Registers a tiered chunk found in the tier manifest at startup (no
    /// local files).
    pub fn add_tiered(&self, name: &ChunkName, size: u64, messages: u64) {
        let chunk = Arc::new(Chunk::existing(
            name.clone(),
            self.dir.join(name.to_string()),
            size,
            true,
            std::time::SystemTime::now(),
            &self.ctx.cache,
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
