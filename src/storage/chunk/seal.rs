//! The end of a chunk's growth: [`Chunk::close`] announces the final end
//! at once (readers move on), [`Chunk::seal_blocking`] makes it durable
//! (fdatasync, trim the preallocated tail, seal record, fdatasync), and
//! [`Chunk::wait_sealed`] lets acks wait for that. Never trims below the
//! published end of a live mapping; never runs on the async runtime.

use std::sync::Arc;

use super::{index, Chunk, ChunkState, StorageError};
use crate::fsutil::{self, FaultHook};

impl Chunk {
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

    /// Seals the chunk durably at `size` with `records` batch records:
    /// sync data, trim the preallocated tail, write the seal record as
    /// record number `records` (dropping any record after it: appends that
    /// were copied but never published), sync the index. Blocking; run off
    /// the runtime.
    ///
    /// # Errors
    /// Any I/O error, or a `size` below the published end of the chunk's
    /// mapping (readers may hold those bytes); the chunk is marked failed.
    /// The check reads the published end once: it is sound because readers
    /// publish only up to `state.end`, which is final once the chunk is
    /// closed and never exceeds `size`, so it cannot grow past `size` after
    /// the check.
    pub(crate) fn seal_blocking(
        &self,
        size: u64,
        records: u64,
        hook: &FaultHook,
    ) -> Result<(), StorageError> {
        let files = match self.files() {
            Some(files) => files,
            None if self.state().sealed => return Ok(()),
            // A parked (idle) open chunk: its files were closed.
            None => Arc::new(self.open_files()?),
        };
        let result = (|| {
            let idx_len = self.record_pos(records.saturating_add(1))?;
            let mapped = self.map.published();
            if size < mapped {
                return Err(StorageError::io(
                    "trim",
                    &self.data_path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("sealing at {size} would cut published bytes (up to {mapped})"),
                    ),
                ));
            }
            fsutil::sync_data(&files.data, hook)
                .map_err(|e| StorageError::io("fdatasync", &self.data_path, e))?;
            files
                .data
                .set_len(size)
                .map_err(|e| StorageError::io("trim", &self.data_path, e))?;
            fsutil::sync_data(&files.data, hook)
                .map_err(|e| StorageError::io("fdatasync", &self.data_path, e))?;
            self.write_record(&files, records, &index::Record::seal(size))?;
            files
                .idx
                .set_len(idx_len)
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
