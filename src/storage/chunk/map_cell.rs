//! A chunk's cached mapping for reads: the open chunk's writable mapping
//! while its writer has it, otherwise a read-only one made by the first
//! read. Kept in the storage's [`OpenCache`] (so the number of mappings is
//! bounded, not one per chunk ever read) and dropped when evicted; the next
//! read maps again. Readers holding a [`ChunkMap`] keep it alive. Never
//! writes or publishes anything itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::ChunkMap;
use crate::storage::open_cache::{Holder, OpenCache, Usage};

/// The cached mapping of one chunk.
#[derive(Debug)]
pub(crate) struct MapCell {
    map: Mutex<Option<Arc<ChunkMap>>>,
    /// Highest end ever published through a mapping of this chunk: readers
    /// may hold those bytes, so the file is never trimmed below it.
    published: AtomicU64,
    usage: Usage,
}

impl MapCell {
    pub(super) fn new(cache: &OpenCache, map: Option<Arc<ChunkMap>>) -> Self {
        Self {
            map: Mutex::new(map),
            published: AtomicU64::new(0),
            usage: cache.usage(),
        }
    }

    /// The cached mapping, locked.
    pub(super) fn lock(&self) -> MutexGuard<'_, Option<Arc<ChunkMap>>> {
        self.map.lock()
    }

    /// Records that `end` bytes were published through a mapping.
    pub(super) fn note_published(&self, end: usize) {
        self.published.fetch_max(end as u64, Ordering::AcqRel);
    }

    /// Highest end published through any mapping of the chunk.
    pub(super) fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Drops the cached mapping if it is `map` (the writer's, when it
    /// parks or seals), so later reads map the file read-only.
    pub(super) fn clear_if(&self, map: &Arc<ChunkMap>) {
        let mut g = self.map.lock();
        if g.as_ref().is_some_and(|m| Arc::ptr_eq(m, map)) {
            *g = None;
        }
    }

    /// Drops the cached mapping.
    pub(super) fn clear(&self) {
        self.map.lock().take();
    }
}

impl Holder for MapCell {
    fn usage(&self) -> &Usage {
        &self.usage
    }

    fn close_idle(&self) -> bool {
        self.clear();
        true
    }
}
