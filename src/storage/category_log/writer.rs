//! The append path of a category: [`CategoryLog::append`] reserves a byte
//! range and an index record of the open chunk under the writer lock
//! (bookkeeping only, rotating when the body does not fit), copies the body
//! into that range outside the lock (inline, or on the blocking pool for
//! large bodies), writes the index record, and waits until everything up to
//! its end is published. The file is allocated in growing steps ahead of
//! the reservations (never all at once), and a parked (idle) open chunk is
//! reopened here. Never syncs (group commit is the chunk's) and never
//! creates chunk files itself (`rotation.rs` does).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{Active, Appended, CategoryLog, Writer, MAX_STEP};
use crate::config::AppendMode;
use crate::fsutil;
use crate::storage::chunk::format::CheckedBody;
use crate::storage::chunk::index::{ProducerTag, Record};
use crate::storage::chunk::publish::Torn;
use crate::storage::chunk::{Chunk, ChunkFiles, WriteSlot};
use crate::storage::contended;
use crate::storage::StorageError;

/// Bodies up to this size are copied inline on the request's thread; larger
/// ones on the blocking pool, so several copies into one chunk run in
/// parallel (on this machine the copy into fresh page-cache pages, not the
/// network, is the bottleneck: see docs/architecture.md).
const INLINE_COPY_MAX: u64 = 64 << 10;

/// A byte range and index slot of the open chunk, reserved for one append.
/// Completing it (or dropping it) reports to the chunk's publisher, so a
/// reservation can never leave a permanent hole.
struct Reservation {
    chunk: Arc<Chunk>,
    /// The reserved bytes of the mapping; finished (dropped) before the
    /// outcome is reported, so publication can pass it.
    slot: Option<WriteSlot>,
    files: Arc<ChunkFiles>,
    mode: AppendMode,
    off: u64,
    len: u32,
    record: u64,
    /// The idempotent producer's tag for the index record.
    tag: ProducerTag,
    done: bool,
}

impl Reservation {
    /// Copies the body and writes its index record, then reports the outcome.
    fn fill(mut self, frames: &[Bytes], crc: u32) {
        let result = match self.slot.as_mut() {
            Some(slot) => self
                .chunk
                .write_frames(self.mode, slot, &self.files, frames),
            None => Err(StorageError::io(
                "write to",
                self.chunk.data_path(),
                std::io::Error::other("the reservation has no write slot"),
            )),
        }
        .and_then(|()| {
            self.chunk.write_record(
                &self.files,
                self.record,
                &Record::batch(self.off, self.len, crc).tagged(self.tag),
            )
        });
        drop(self.slot.take());
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
            drop(self.slot.take());
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
        self.append_with(frames, body, ProducerTag::default()).await
    }

    /// [`CategoryLog::append`] with the producer tag recorded in the
    /// batch's index record (admission is `idempotent.rs`'s).
    ///
    /// # Errors
    /// As [`CategoryLog::append`].
    pub(super) async fn append_with(
        self: &Arc<Self>,
        frames: Vec<Bytes>,
        body: CheckedBody,
        tag: ProducerTag,
    ) -> Result<Appended, StorageError> {
        let mut r = self.reserve(body.len)?;
        r.tag = tag;
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
    /// they do not fit. Holds the writer lock only for bookkeeping (and the
    /// few-µs allocation of the next step of the file).
    fn reserve(self: &Arc<Self>, len: u64) -> Result<Reservation, StorageError> {
        let batch_len = u32::try_from(len).map_err(|_| StorageError::Io {
            op: "append batch larger than 4 GiB to",
            path: self.dir.clone(),
            source: std::io::Error::from_raw_os_error(libc::EFBIG),
        })?;
        let mut opened = false;
        let mut w = contended::lock(&self.writer);
        let reserved = self.reserve_locked(&mut w, len, batch_len, &mut opened);
        let step = w.step;
        drop(w);
        self.ctx.cache.touch(&self.usage);
        if opened {
            // Registered even if the append then failed: the files are open.
            self.ctx.cache.opened(self);
        }
        let (r, want_spare) = reserved?;
        if want_spare {
            self.prepare_spare(step);
        }
        Ok(r)
    }

    /// [`CategoryLog::reserve`] under the writer lock: also says whether a
    /// spare should be prepared, and sets `opened` when chunk files were
    /// opened (a new chunk, or a parked one reopened).
    fn reserve_locked(
        self: &Arc<Self>,
        w: &mut Writer,
        len: u64,
        batch_len: u32,
        opened: &mut bool,
    ) -> Result<(Reservation, bool), StorageError> {
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
        let mut want_spare = false;
        if w.active
            .as_ref()
            .is_none_or(|a| a.capacity - a.reserved < len)
        {
            if let Some(old) = w.active.take() {
                // Retired because it is full: the category is busy.
                w.busy = true;
                self.retire(old);
            }
            want_spare = std::mem::take(&mut w.busy) && len <= max_chunk;
            let fresh = self.next_chunk(len)?;
            *opened = true;
            self.chunks
                .write()
                .insert(fresh.chunk.name().clone(), Arc::clone(&fresh.chunk));
            w.active = Some(Active {
                activated: Instant::now(),
                ..fresh
            });
        }
        let step = w.step;
        let Some(a) = w.active.as_mut() else {
            unreachable!("active chunk was just ensured")
        };
        if a.open.is_none() {
            a.open = Some(self.reopen(a)?);
            *opened = true;
        }
        let Some(h) = a.open.as_mut() else {
            unreachable!("the active chunk was just opened")
        };
        let end = a.reserved + len;
        let mut grown = false;
        if end > h.slots.allocated() {
            // Allocate ahead of the writer, before handing out the bytes, so
            // no store can reach a page without blocks (a full disk is a
            // clean 507 here, with nothing reserved).
            let target = end
                .max(h.slots.allocated().saturating_add(step))
                .min(a.capacity);
            h.slots
                .allocate(&h.files.data, target)
                .map_err(|e| StorageError::io("allocate blocks for", a.chunk.data_path(), e))?;
            grown = true;
        }
        let slot = h.slots.slot(len).ok_or_else(|| StorageError::Io {
            op: "reserve a range past the mapping of",
            path: a.chunk.data_path().to_path_buf(),
            source: std::io::Error::from_raw_os_error(libc::EFBIG),
        })?;
        debug_assert_eq!(slot.start(), a.reserved);
        let r = Reservation {
            chunk: Arc::clone(&a.chunk),
            slot: Some(slot),
            files: Arc::clone(&h.files),
            mode: self.ctx.cfg.append_mode,
            off: a.reserved,
            len: batch_len,
            record: a.records,
            tag: ProducerTag::default(),
            done: false,
        };
        a.reserved += len;
        a.records += 1;
        if grown {
            w.step = (step * 2).min(MAX_STEP);
        }
        if w.active.as_ref().is_some_and(|a| a.reserved == a.capacity) {
            if let Some(full) = w.active.take() {
                w.busy = true;
                self.retire(full);
            }
        }
        Ok((r, want_spare))
    }
}
