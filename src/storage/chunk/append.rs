//! The appender's side of a chunk: write a body into its reserved
//! [`WriteSlot`] (pwrite or store through the mapping) and its index record,
//! report the outcome to the in-order [`publish::Publisher`], and wait until
//! a range is published. Copies of peers' chunks publish through
//! [`Chunk::publish_copied`]. Never decides where an append goes (that is
//! `category_log`'s reservation) and never syncs.

use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::{index, publish, Chunk, ChunkFiles, StorageError, WriteSlot};
use crate::config::AppendMode;
use crate::storage::contended;

impl Chunk {
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

    /// Whether all appends up to `reserved` have reported: no slot of the
    /// chunk is alive and no index record is being written.
    pub(crate) fn all_reported(&self, reserved: u64) -> bool {
        self.publisher.all_reported(reserved)
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

    /// Publishes copied bytes up to `end` (a batch boundary).
    pub(crate) fn publish_copied(&self, end: u64) {
        self.state.send_if_modified(|s| {
            let grew = end > s.end;
            s.end = s.end.max(end);
            grew
        });
    }

    /// Copies a validated body into `slot`, the range reserved for this
    /// append alone (`pwrite`, or a store through the mapping).
    ///
    /// # Errors
    /// The write failed (or the body does not fit the slot).
    pub(crate) fn write_frames(
        &self,
        mode: AppendMode,
        slot: &mut WriteSlot,
        files: &ChunkFiles,
        frames: &[Bytes],
    ) -> Result<(), StorageError> {
        let _serial = (mode == AppendMode::Write).then(|| contended::lock(&self.copy_lock));
        for f in frames {
            match mode {
                AppendMode::Write => slot.pwrite(&files.data, f),
                AppendMode::Mmap => slot.store(f),
            }
            .map_err(|e| StorageError::io("write to", &self.data_path, e))?;
        }
        Ok(())
    }

    /// Writes index record number `n` (writer only).
    ///
    /// # Errors
    /// The write failed.
    pub(crate) fn write_record(
        &self,
        files: &ChunkFiles,
        n: u64,
        rec: &index::Record,
    ) -> Result<(), StorageError> {
        let format = self.index_format()?;
        let pos = self.record_pos(n)?;
        files
            .idx
            .write_all_at(&rec.encode(format)[..format.record_len()], pos)
            .map_err(|e| StorageError::io("append index record to", &self.idx_path, e))
    }
}
