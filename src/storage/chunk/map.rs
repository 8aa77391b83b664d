//! The memory mapping of one chunk file, shared by its single writer and any
//! number of readers. All `unsafe` of the storage layer lives here, behind a
//! safe API whose checks uphold the one invariant it relies on.
//!
//! # The invariant: the published prefix is immutable
//!
//! Each mapping tracks its *published end* `P`: the bytes `[0, P)` never
//! change again while the mapping lives. `P` only grows. This module
//! enforces it on both sides:
//!
//! - **Readers** get `&[u8]` or zero-copy [`Bytes`] only for ranges below
//!   `P` ([`ChunkMap::published`], [`ChunkMap::bytes`]); every range is
//!   checked, so no reference ever covers a byte that may still be written.
//! - **The writer** of an open chunk writes only through a [`WriteSlot`]:
//!   a disjoint byte range handed out in order by the chunk's single
//!   [`MapWriter`], at or past everything handed out before. A slot can
//!   only write inside its own range, and while it is alive
//!   [`ChunkMap::publish`] never moves `P` past its start (nor past the
//!   next range to be handed out). So a store through the mapping can never
//!   overlap a published byte, and a published byte is never one that a
//!   slot may still store.
//!
//! # Stores never reach an unallocated page
//!
//! A writable mapping may be longer than its file (it is sized to the
//! chunk's capacity while blocks are allocated in steps as the chunk
//! grows). The [`MapWriter`] hands out slots only below its *allocated
//! end*, which advances only after `posix_fallocate` of the mapped file
//! succeeded ([`MapWriter::allocate`]): a store through the mapping never
//! touches a page past the end of the file or without blocks, so a full disk
//! is an `ENOSPC` there, never a `SIGBUS`.
//!
//! What this module takes on trust, as memmap2 does of every mapping, is
//! the file itself: chunk files are written only by this process, through a
//! [`WriteSlot`] (appends, in both append modes) or by `CopyWriter` at its
//! copy end (which is the published end); a read-only mapping is published
//! only up to bytes already in the file and final; `allocate` is given the
//! file that was mapped; a mapping reopened at `start` (an idle chunk
//! written again) has `[0, start)` written and final in the file; and a
//! file is never truncated below the published end while mapped (sealing
//! trims only the unwritten, preallocated tail, and checks
//! [`ChunkMap::published_len`] first; parking an idle chunk trims to its
//! reserved end once no slot is alive).
//!
//! `MmapRaw` is used instead of `MmapMut`/`Mmap` so no `&[u8]`/`&mut [u8]`
//! ever spans bytes that another thread may be writing. This module never
//! decides *what* is published: `Chunk` tells it, and it only clamps.
#![expect(
    unsafe_code,
    reason = "the chunk mapping is read and written through raw pointers; \
              the published-prefix checks below make every access sound"
)]

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, LazyLock};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};
use parking_lot::Mutex;

/// Write slots handed out by the [`MapWriter`] of a writable mapping.
#[derive(Debug, Default)]
struct Slots {
    /// Start of the next slot: every slot handed out lies below it.
    next: usize,
    /// Slots handed out, in order of their start; `true` once finished.
    /// Finished slots at the front are dropped, so the front is the lowest
    /// slot that may still be written. Bounded by the appends in flight;
    /// its capacity is reused, so steady-state appends do not allocate.
    open: VecDeque<(usize, bool)>,
}

/// A shared mapping of a chunk file.
#[derive(Debug)]
pub struct ChunkMap {
    /// Taken only by [`Drop`], which hands it to the unmapping thread.
    raw: ManuallyDrop<MmapRaw>,
    /// `[0, published)` is immutable. Only grows.
    published: AtomicUsize,
    /// `Some` for a writable mapping (it has a [`MapWriter`]).
    slots: Option<Mutex<Slots>>,
}

impl ChunkMap {
    /// Maps `len` bytes of `file` read-write for the writer of an open
    /// chunk whose first `start` bytes are written and final (0 for a new
    /// chunk). Returns the shared mapping and its only writer, whose first
    /// slot starts at `start` and which may hand out nothing past `start`
    /// until [`MapWriter::allocate`] allocates more of the file.
    ///
    /// # Errors
    /// The mapping failed, or `start` is past `len`.
    pub(in crate::storage) fn map_writable(
        file: &File,
        len: u64,
        start: u64,
    ) -> io::Result<(Arc<Self>, MapWriter)> {
        let efbig = || io::Error::from_raw_os_error(libc::EFBIG);
        let len = usize::try_from(len).map_err(|_| efbig())?;
        let start = usize::try_from(start)
            .ok()
            .filter(|&s| s <= len)
            .ok_or_else(efbig)?;
        // Mapping is safe by itself; every access goes through the checked
        // methods below.
        let raw = ManuallyDrop::new(MmapOptions::new().len(len).map_raw(file)?);
        let map = Arc::new(Self {
            raw,
            published: AtomicUsize::new(0),
            slots: Some(Mutex::new(Slots {
                next: start,
                open: VecDeque::new(),
            })),
        });
        let writer = MapWriter {
            map: Arc::clone(&map),
            allocated: start,
        };
        Ok((map, writer))
    }

    /// Maps `len` bytes of `file` read-only (sealed, recovered or copied
    /// chunks), with nothing published yet: see [`ChunkMap::publish`].
    ///
    /// # Errors
    /// The mapping failed.
    pub(super) fn map_read_only(file: &File, len: u64) -> io::Result<Self> {
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let raw = ManuallyDrop::new(MmapOptions::new().len(len).map_raw_read_only(file)?);
        Ok(Self {
            raw,
            published: AtomicUsize::new(0),
            slots: None,
        })
    }

    /// Mapped length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// The published end: `[0, published_len())` is immutable.
    #[must_use]
    pub fn published_len(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Declares the bytes `[0, end)` final and readable; returns the
    /// published end afterwards.
    ///
    /// The end is clamped to the mapping and, for a writable mapping, to
    /// the start of the lowest [`WriteSlot`] still alive and of the next
    /// one to be handed out, so publication can never reach bytes that may
    /// still be stored. It never moves backwards.
    pub(super) fn publish(&self, end: u64) -> usize {
        let end = usize::try_from(end).unwrap_or(usize::MAX).min(self.len());
        let now = self.published.load(Ordering::Acquire);
        if end <= now {
            return now;
        }
        match &self.slots {
            None => self.published.fetch_max(end, Ordering::AcqRel).max(end),
            Some(slots) => {
                // Under the slot lock: no slot can start or finish between
                // computing the limit and publishing up to it.
                let s = slots.lock();
                let limit = s.open.front().map_or(s.next, |&(start, _)| start);
                let end = end.min(limit);
                self.published.fetch_max(end, Ordering::AcqRel).max(end)
            }
        }
    }

    /// The published bytes `[0, end)`, or `None` if `end` is past the
    /// published end.
    #[must_use]
    pub fn published(&self, end: usize) -> Option<&[u8]> {
        if end > self.published_len() {
            return None;
        }
        // SAFETY: `end <= published <= len` (publish clamps to the mapping),
        // so the range is mapped; bytes below the published end are never
        // written again (slots never start below it, and publication never
        // passes a live slot), and `&self` keeps the mapping alive for the
        // returned borrow.
        Some(unsafe { std::slice::from_raw_parts(self.raw.as_ptr(), end) })
    }

    /// The published bytes `[start, end)` as a zero-copy [`Bytes`] that
    /// keeps the mapping alive, or `None` unless `start <= end <=` the
    /// published end.
    #[must_use]
    pub fn bytes(self: &Arc<Self>, start: usize, end: usize) -> Option<Bytes> {
        if start > end || end > self.published_len() {
            return None;
        }
        Some(Bytes::from_owner(MappedBytes {
            map: Arc::clone(self),
            start,
            end,
        }))
    }

    /// Marks the slot starting at `start` finished, dropping finished slots
    /// from the front.
    fn finish_slot(&self, start: usize) {
        let Some(slots) = &self.slots else { return };
        let mut s = slots.lock();
        if let Ok(i) = s.open.binary_search_by_key(&start, |&(st, _)| st) {
            s.open[i].1 = true;
        }
        while s.open.front().is_some_and(|&(_, done)| done) {
            s.open.pop_front();
        }
    }
}

/// The only writer of a writable [`ChunkMap`]: allocates the file ahead of
/// the appends and hands out disjoint [`WriteSlot`]s in order, never past
/// the allocated end. Not `Clone`; owned by the category writer.
#[derive(Debug)]
pub struct MapWriter {
    map: Arc<ChunkMap>,
    /// `[0, allocated)` of the file has blocks (written or fallocated).
    allocated: usize,
}

impl MapWriter {
    /// The mapping this writer writes.
    #[must_use]
    pub fn map(&self) -> &Arc<ChunkMap> {
        &self.map
    }

    /// End of the allocated part of the file: no slot reaches past it.
    #[must_use]
    pub fn allocated(&self) -> u64 {
        self.allocated as u64
    }

    /// Allocates blocks of `file` (the mapped file) up to `end`, extending
    /// it, so slots may then be handed out up to there. Nothing changes on
    /// error.
    ///
    /// # Errors
    /// `end` is past the mapping (`EFBIG`), or the OS error of
    /// `posix_fallocate` (`ENOSPC` on a full disk).
    pub fn allocate(&mut self, file: &File, end: u64) -> io::Result<()> {
        let end = usize::try_from(end)
            .ok()
            .filter(|&e| e <= self.map.len())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
        if end <= self.allocated {
            return Ok(());
        }
        crate::fsutil::preallocate(file, self.allocated as u64, (end - self.allocated) as u64)?;
        self.allocated = end;
        Ok(())
    }

    /// The next `len` bytes of the chunk, reserved for one append; `None`
    /// if they do not fit in the allocated part of the mapping, or for
    /// `len == 0` (two open slots never share a start, so publication can
    /// always tell them apart).
    pub fn slot(&mut self, len: u64) -> Option<WriteSlot> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        let slots = self.map.slots.as_ref()?;
        let mut s = slots.lock();
        let start = s.next;
        let end = start.checked_add(len).filter(|&e| e <= self.allocated)?;
        s.next = end;
        s.open.push_back((start, false));
        drop(s);
        Some(WriteSlot {
            map: Arc::clone(&self.map),
            start,
            pos: start,
            end,
        })
    }
}

/// A byte range of an open chunk reserved for one append: the only way to
/// store bytes into a mapping. While it lives, nothing at or past its start
/// is published; dropping it finishes it.
#[derive(Debug)]
pub struct WriteSlot {
    map: Arc<ChunkMap>,
    start: usize,
    /// Where the next write goes.
    pos: usize,
    end: usize,
}

impl WriteSlot {
    /// Offset of the slot's first byte in the chunk.
    #[must_use]
    pub fn start(&self) -> u64 {
        self.start as u64
    }

    /// Claims the next `n` bytes of the slot; an error if they do not fit.
    fn advance(&mut self, n: usize) -> io::Result<usize> {
        let at = self.pos;
        match at.checked_add(n).filter(|&e| e <= self.end) {
            Some(e) => {
                self.pos = e;
                Ok(at)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of the reserved range",
            )),
        }
    }

    /// Stores `src` at the slot's write position through the mapping.
    ///
    /// # Errors
    /// `src` does not fit in the rest of the slot (nothing is written).
    pub fn store(&mut self, src: &[u8]) -> io::Result<()> {
        let at = self.advance(src.len())?;
        // SAFETY: `[at, at + len)` lies inside this slot (checked by
        // `advance`), hence inside the writable mapping and its allocated
        // file blocks (`MapWriter::slot` checks the end against the
        // allocated end, which never passes the mapping's length). Slots are disjoint and the
        // published end stays at or below this slot's start while it lives,
        // so no reader holds a reference to these bytes and no other thread
        // writes them. `src` cannot overlap them: it is either other memory
        // or a published slice of this mapping, which lies below the
        // published end, hence below this slot.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.map.raw.as_mut_ptr().add(at),
                src.len(),
            );
        }
        Ok(())
    }

    /// Writes `src` at the slot's write position through `file` (the
    /// mapped chunk file), with `pwrite`.
    ///
    /// # Errors
    /// `src` does not fit in the rest of the slot, or the OS error.
    pub fn pwrite(&mut self, file: &File, src: &[u8]) -> io::Result<()> {
        let at = self.advance(src.len())?;
        file.write_all_at(src, at as u64)
    }
}

impl Drop for ChunkMap {
    fn drop(&mut self) {
        // SAFETY: `raw` is taken exactly once, here, and `self` is never
        // used again (it is being dropped), so no reference to the mapping
        // outlives this: every `MappedBytes` and `WriteSlot` holds an `Arc`
        // of this map, so none exists any more.
        let raw = unsafe { ManuallyDrop::take(&mut self.raw) };
        unmap_later(raw);
    }
}

/// Unmaps `raw` on a thread of its own. `munmap` of a chunk-sized mapping
/// whose pages were touched takes milliseconds (page tables, TLB
/// shootdowns); the last reference to a mapping is often dropped on an
/// async worker (a read's body sent, an acked or evicted chunk), which
/// would stall every request that worker serves. Nothing reads the
/// mapping any more, so when it goes away does not matter; if the thread
/// cannot be started the mapping is unmapped where it is dropped.
fn unmap_later(raw: MmapRaw) {
    static UNMAPPER: LazyLock<Option<mpsc::Sender<MmapRaw>>> = LazyLock::new(|| {
        let (tx, rx) = mpsc::channel::<MmapRaw>();
        std::thread::Builder::new()
            .name("chunkbus-unmap".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| tx)
    });
    match UNMAPPER.as_ref() {
        Some(tx) => {
            if let Err(mpsc::SendError(raw)) = tx.send(raw) {
                drop(raw);
            }
        }
        None => drop(raw),
    }
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        self.map.finish_slot(self.start);
    }
}

/// An owned, immutable window of a chunk mapping, handed to hyper as the body
/// of a read (no copy). Only built by [`ChunkMap::bytes`] for published ranges.
#[derive(Debug)]
struct MappedBytes {
    map: Arc<ChunkMap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MappedBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ChunkMap::bytes` checked `start <= end <=` the published
        // end, which never moves back, so the range is mapped and immutable;
        // `self.map` keeps the mapping alive for the borrow.
        unsafe {
            std::slice::from_raw_parts(self.map.raw.as_ptr().add(self.start), self.end - self.start)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writable(len: u64) -> (tempfile::NamedTempFile, Arc<ChunkMap>, MapWriter) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let (map, mut w) = ChunkMap::map_writable(f.as_file(), len, 0).unwrap();
        w.allocate(f.as_file(), len).unwrap();
        (f, map, w)
    }

    #[test]
    fn slots_never_pass_the_allocated_end() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let (map, mut w) = ChunkMap::map_writable(f.as_file(), 64 << 10, 0).unwrap();
        assert_eq!(map.len(), 64 << 10);
        assert!(w.slot(1).is_none(), "nothing allocated yet");
        w.allocate(f.as_file(), 4096).unwrap();
        assert_eq!(f.as_file().metadata().unwrap().len(), 4096);
        let mut a = w.slot(4000).unwrap();
        a.store(&[b'a'; 4000]).unwrap();
        assert!(w.slot(97).is_none(), "past the allocated end");
        assert!(w.allocate(f.as_file(), (64 << 10) + 1).is_err());
        assert_eq!(w.allocated(), 4096);
        w.allocate(f.as_file(), 8192).unwrap();
        let mut b = w.slot(97).unwrap();
        assert_eq!(b.start(), 4000);
        b.store(&[b'b'; 97]).unwrap();
        drop((a, b));
        assert_eq!(map.publish(4097), 4097);

        // Reopened after parking: slots continue at `start`, and the bytes
        // below it are not published until the chunk says so.
        f.as_file().set_len(4097).unwrap();
        let (again, mut w2) = ChunkMap::map_writable(f.as_file(), 64 << 10, 4097).unwrap();
        assert!(w2.slot(1).is_none());
        w2.allocate(f.as_file(), 4098).unwrap();
        let mut c = w2.slot(1).unwrap();
        assert_eq!(c.start(), 4097);
        c.store(b"\n").unwrap();
        drop(c);
        assert_eq!(again.published_len(), 0);
        assert_eq!(again.publish(4098), 4098);
        assert_eq!(again.published(4098).map(|b| b[4097]), Some(b'\n'));
        assert!(ChunkMap::map_writable(f.as_file(), 16, 17).is_err());
    }

    #[test]
    fn publication_never_passes_a_live_slot() {
        let (_f, map, mut w) = writable(64);
        let mut a = w.slot(4).unwrap();
        let mut b = w.slot(4).unwrap();
        assert_eq!((a.start(), b.start()), (0, 4));
        b.store(b"efg\n").unwrap();
        drop(b);
        // `a` is still open: nothing can be published.
        assert_eq!(map.publish(8), 0);
        assert!(map.published(1).is_none());
        a.store(b"abc\n").unwrap();
        drop(a);
        assert_eq!(map.publish(8), 8);
        assert_eq!(map.published(8), Some(&b"abc\nefg\n"[..]));
        assert_eq!(map.bytes(4, 8).as_deref(), Some(&b"efg\n"[..]));
        assert!(map.bytes(4, 9).is_none());
        assert!(map.bytes(5, 4).is_none());
        // Never past the next slot to be handed out, never backwards.
        assert_eq!(map.publish(64), 8);
        assert_eq!(map.publish(2), 8);
    }

    #[test]
    fn slots_stay_inside_their_range_and_the_mapping() {
        let (_f, map, mut w) = writable(8);
        let mut s = w.slot(3).unwrap();
        assert!(s.store(b"abcd").is_err());
        s.store(b"ab").unwrap();
        s.store(b"c").unwrap();
        assert!(s.store(b"d").is_err());
        assert!(w.slot(6).is_none());
        assert!(w.slot(0).is_none(), "empty slots are refused");
        let mut t = w.slot(5).unwrap();
        t.pwrite(_f.as_file(), b"defgh").unwrap();
        drop((s, t));
        assert_eq!(map.publish(8), 8);
        assert_eq!(map.published(8), Some(&b"abcdefgh"[..]));
    }

    #[test]
    fn read_only_mappings_publish_up_to_their_length() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().write_all_at(b"one\ntwo\n", 0).unwrap();
        let map = Arc::new(ChunkMap::map_read_only(f.as_file(), 16).unwrap());
        assert!(map.published(1).is_none());
        assert_eq!(map.publish(8), 8);
        assert_eq!(map.publish(100), 16);
        assert_eq!(map.bytes(4, 8).as_deref(), Some(&b"two\n"[..]));
    }
}
