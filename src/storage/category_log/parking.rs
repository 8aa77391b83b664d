//! Parking a category's open chunk while the category is idle: its files
//! are closed, its writable mapping dropped and the unwritten part of its
//! allocation trimmed, so an idle category holds no file descriptor, no
//! mapping and no disk beyond its bytes; its unused spare is removed. The
//! storage's open-chunk cache decides when ([`Holder::close_idle`]: least
//! recently used past `max_open_chunks`, or idle for a minute). The next
//! append reopens the same chunk where it stopped; a sync or seal of a
//! parked chunk opens its files for the time it needs them. Never parks a
//! chunk with an append in flight.

use std::sync::Arc;

use super::{Active, CategoryLog, Handles, MIN_STEP};
use crate::storage::chunk::ChunkMap;
use crate::storage::open_cache::{Holder, Usage};
use crate::storage::StorageError;

impl CategoryLog {
    /// Reopens the parked open chunk `a` for appends: its files, and a
    /// writable mapping whose slots continue at the reserved end.
    pub(super) fn reopen(&self, a: &Active) -> Result<Handles, StorageError> {
        let files = Arc::new(a.chunk.open_files()?);
        let (map, slots) = ChunkMap::map_writable(&files.data, a.capacity, a.reserved)
            .map_err(|e| StorageError::io("map", a.chunk.data_path(), e))?;
        a.chunk.attach(Arc::clone(&files), map);
        Ok(Handles { slots, files })
    }

    /// Parks the open chunk and removes the spare, unless an append is in
    /// flight (then returns `false`). Blocking: the parked chunk's
    /// unsynced bytes are fdatasync'd before its files close.
    fn park(&self) -> bool {
        let mut w = self.writer.lock();
        if w.active
            .as_ref()
            .is_some_and(|a| a.open.is_some() && !a.chunk.all_reported(a.reserved))
        {
            return false;
        }
        w.step = MIN_STEP;
        w.busy = false;
        let spare = self.spare.lock().take();
        let parked = w.active.as_mut().and_then(|a| {
            let h = a.open.take()?;
            // No slot is alive (all appends reported): nothing at or past
            // the reserved end is written, so the allocated tail can go.
            if let Err(e) = h.files.data.set_len(a.reserved) {
                tracing::warn!(chunk = %a.chunk.name(), error = %e, "could not trim the allocation of an idle chunk");
            }
            a.chunk.detach(h.slots.map());
            Some((Arc::clone(&a.chunk), h))
        });
        drop(w);
        if let Some(s) = spare {
            self.discard(&s.chunk);
        }
        if let Some((chunk, h)) = parked {
            if let Err(e) = chunk.sync_blocking(&h.files, &self.ctx.hook) {
                tracing::error!(chunk = %chunk.name(), error = %crate::error_chain(&e), "fdatasync of an idle chunk failed");
            }
        }
        true
    }
}

impl Holder for CategoryLog {
    fn usage(&self) -> &Usage {
        &self.usage
    }

    fn close_idle(&self) -> bool {
        self.park()
    }
}
