//! Reads of a local chunk through its mapping: whole-message windows for
//! `/read` (zero-copy [`Bytes`] that borrow the mapping), raw batch bytes and
//! index records for `/peer/fetch`, boundary checks and message counts.
//! The rules themselves (what a read may return) are [`super::window`]'s
//! and [`super::batches`]';
//! this file only fetches the bytes they ask for. Never writes, never
//! copies message bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::batches::BatchSelector;
use super::window::{self, ReadRequest, Window};
use super::{index, to_usize, Chunk, ChunkMap, ChunkState, ReadOutcome, StorageError};
use crate::storage::open_cache::Holder;

impl Chunk {
    /// The mapping, published up to the chunk's current end. A new
    /// mapping is registered in the open-chunk cache, which may drop it
    /// again once unused.
    fn mapping(&self) -> Result<Arc<ChunkMap>, StorageError> {
        let cell = &self.map;
        self.cache.touch(cell.usage());
        let mut guard = cell.lock();
        let size = self.state().end;
        if let Some(m) = guard.as_ref().filter(|m| m.len() as u64 >= size) {
            cell.note_published(m.publish(size));
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
        cell.note_published(map.publish(size));
        *guard = Some(Arc::clone(&map));
        drop(guard);
        self.cache.opened(cell);
        Ok(map)
    }

    /// The error for bytes below the chunk's end that its mapping has not
    /// published (a broken invariant: refused rather than read).
    fn unpublished(&self, end: u64) -> StorageError {
        StorageError::io(
            "read unpublished bytes of",
            &self.data_path,
            std::io::Error::other(format!("the mapping has not published {end} bytes")),
        )
    }

    /// The published bytes `[0, end)` of `map`.
    fn published<'m>(&self, map: &'m ChunkMap, end: u64) -> Result<&'m [u8], StorageError> {
        map.published(to_usize(end))
            .ok_or_else(|| self.unpublished(end))
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
        let req = ReadRequest { off, max_size, end };
        let Some(span) = req.span().map_err(|e| e.for_chunk(&self.name))? else {
            return Ok(ReadOutcome::Empty {
                sealed: sealed || closed,
            });
        };
        let map = self.mapping()?;
        let from = to_usize(span.start);
        // All bytes up to the end, so a refusal can name the next length.
        let bytes = self.published(&map, end)?.get(from..).unwrap_or_default();
        match req.window(bytes).map_err(|e| e.for_chunk(&self.name))? {
            Window::Data(r) => map
                .bytes(from + r.start, from + r.end)
                .map(ReadOutcome::Data)
                .ok_or_else(|| self.unpublished(end)),
            // Not reached: the bytes given reach the end.
            Window::TooSmallNeedLen => Err(req.too_small(end - off).for_chunk(&self.name)),
        }
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
        map.bytes(to_usize(off), to_usize(end))
            .ok_or_else(|| self.unpublished(end))
    }

    /// Index records of the published batches starting with record number
    /// `first`, which must start at offset `off`: as many whole batches as
    /// fit in `max_bytes` (at least one), none past the published end
    /// (chosen by [`BatchSelector`]).
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
        /// Records read per `pread` (64 KiB of version-1 records, 128 KiB
        /// of version-2 ones).
        const PER_READ: usize = 4096;
        let mut select = BatchSelector::new(off, self.state().end, max_bytes);
        // A record number past any index reads nothing: no record starts at `off`.
        let format = self.index_format()?;
        let record_len = format.record_len();
        if let Some(mut pos) = format.record_pos(first).filter(|_| !select.done()) {
            let file;
            let files = self.files();
            let idx: &File = if let Some(f) = files.as_ref() {
                &f.idx
            } else {
                file = File::open(&self.idx_path)
                    .map_err(|e| StorageError::io("open index", &self.idx_path, e))?;
                &file
            };
            let mut buf = vec![0u8; PER_READ * record_len];
            'read: loop {
                let n = read_up_to(idx, &mut buf, pos)
                    .map_err(|e| StorageError::io("read index", &self.idx_path, e))?;
                let whole = n - n % record_len;
                if whole == 0 {
                    break;
                }
                for rec in format.records_from(&buf[..whole], 0) {
                    if !select.offer(rec) {
                        break 'read;
                    }
                }
                pos = pos.saturating_add(whole as u64);
            }
        }
        select.finish().map_err(|e| e.for_chunk(&self.name))
    }

    /// The index records of published batches that carry a producer tag
    /// (none for a version-1 index): what rebuilds a category's dedup
    /// table. Reads the whole sidecar.
    ///
    /// # Errors
    /// I/O errors reading the index.
    pub fn tagged_records(&self) -> Result<Vec<index::Record>, StorageError> {
        let format = self.index_format()?;
        if format == index::IndexFormat::V1 {
            return Ok(Vec::new());
        }
        // The end first: records published before the read are whole in
        // it (a record being written now lies past this end).
        let end = self.state().end;
        let raw = match std::fs::read(&self.idx_path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::io("read index", &self.idx_path, e)),
        };
        Ok(format
            .records_from(raw.get(format.header_len()..).unwrap_or_default(), 0)
            .take_while(|r| r.offset.saturating_add(u64::from(r.len)) <= end && !r.is_seal())
            .filter(|r| r.len > 0 && r.tag.is_tagged())
            .collect())
    }

    /// Checks that `off` is a message boundary of the published bytes.
    ///
    /// # Errors
    /// [`StorageError::OffsetBeyondEnd`], [`StorageError::NotBoundary`], or
    /// an I/O error mapping the file.
    pub fn check_boundary(&self, off: u64) -> Result<(), StorageError> {
        let end = self.state().end;
        let Some(at) = window::boundary(off, end).map_err(|e| e.for_chunk(&self.name))? else {
            return Ok(());
        };
        let map = self.mapping()?;
        let before = self.published(&map, end)?.get(to_usize(at)).copied();
        window::boundary_byte(off, before).map_err(|e| e.for_chunk(&self.name))
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
        let published = self.published(&map, end)?;
        let rest = published.get(to_usize(from)..).unwrap_or_default();
        Ok(memchr::memchr_iter(b'\n', rest).count() as u64)
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
