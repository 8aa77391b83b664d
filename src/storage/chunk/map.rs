//! The memory mapping of one chunk file, shared by its single writer and any
//! number of readers. All `unsafe` of the storage layer lives here.
//!
//! Invariants the callers uphold (and [`super::Chunk`] enforces):
//! - only the owning writer stores bytes, and only past the published end;
//! - readers only look at `[0, published end)`, which never changes again;
//! - the file is never truncated below the published end while mapped
//!   (sealing trims only the unwritten, preallocated tail).
//!
//! `MmapRaw` is used instead of `MmapMut`/`Mmap` so no `&[u8]`/`&mut [u8]`
//! ever spans bytes that another thread may be writing.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

/// A shared mapping of a chunk file.
#[derive(Debug)]
pub struct ChunkMap {
    raw: MmapRaw,
}

impl ChunkMap {
    /// Maps `len` bytes of `file` read-write (for the writer of an open chunk),
    /// pre-faulting the pages so the first appends do not pay for page faults.
    ///
    /// # Errors
    /// The mapping failed.
    pub fn map_writable(file: &File, len: u64) -> io::Result<Self> {
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // Mapping is safe by itself; every access goes through `write_at` and
        // `slice`, whose contracts carry the invariants of this module.
        let raw = MmapOptions::new().len(len).map_raw(file)?;
        Ok(Self { raw })
    }

    /// Maps `len` bytes of `file` read-only (sealed or recovered chunks).
    ///
    /// # Errors
    /// The mapping failed.
    pub fn map_read_only(file: &File, len: u64) -> io::Result<Self> {
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // Sealed chunk files are never written again and only removed by
        // unlink, which keeps the mapped pages valid.
        let raw = MmapOptions::new().len(len).map_raw_read_only(file)?;
        Ok(Self { raw })
    }

    /// Mapped length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the mapping is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.raw.len() == 0
    }

    /// Copies `src` to `[off, off + src.len())`.
    ///
    /// # Safety
    /// The caller must be the chunk's only writer, the range must lie within
    /// the mapping, and no reader may be reading it (it is past the published
    /// end). The mapping must have been created with [`Self::map_writable`].
    pub unsafe fn write_at(&self, off: usize, src: &[u8]) {
        debug_assert!(off + src.len() <= self.raw.len());
        // SAFETY: guaranteed by this function's contract: the range is in
        // bounds, writable, and not aliased by any reference.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.raw.as_mut_ptr().add(off), src.len())
        }
    }

    /// The bytes `[start, end)`.
    ///
    /// # Safety
    /// The range must lie within the published (immutable) part of the chunk.
    #[must_use]
    pub unsafe fn slice(&self, start: usize, end: usize) -> &[u8] {
        debug_assert!(start <= end && end <= self.raw.len());
        // SAFETY: by the contract these bytes are in bounds and immutable for
        // as long as the mapping lives, which outlives the returned borrow.
        unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(start), end - start) }
    }
}

/// An owned, immutable window of a chunk mapping, handed to hyper as the body
/// of a read (no copy). Only built by `Chunk` for published ranges.
#[derive(Debug)]
pub struct MappedBytes {
    map: Arc<ChunkMap>,
    start: usize,
    end: usize,
}

impl MappedBytes {
    /// # Safety
    /// `[start, end)` must be published (immutable) bytes of the chunk.
    pub(super) unsafe fn new(map: Arc<ChunkMap>, start: usize, end: usize) -> Self {
        Self { map, start, end }
    }
}

impl AsRef<[u8]> for MappedBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `new`'s contract: the range is published and immutable, and
        // `self.map` keeps the mapping alive.
        unsafe { self.map.slice(self.start, self.end) }
    }
}
