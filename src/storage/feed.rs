//! The change feed of this server's own chunks, which peers long-poll to
//! replicate them (see `docs/peers.md`).
//!
//! Every change of an own chunk (first bytes, growth, close, seal) takes the
//! next sequence number under one lock, stamps it on the chunk, then
//! announces it; so a poller that saw sequence `S` announced also sees every
//! chunk stamped at or below `S`. Deletions are kept as tombstones, durably
//! in cluster mode (`.chunkbus/deleted-chunks.log`), so a replica that was
//! down when a chunk was acked still learns of it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::names::{Category, ChunkName};

use super::chunk::Chunk;
use super::StorageError;

/// File (in the state dir) of the tombstones of deleted own chunks.
pub const TOMBSTONES_FILE: &str = "deleted-chunks.log";

/// A deleted own chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// Sequence number of the deletion (0 for deletions before this start).
    pub seq: u64,
    /// The category.
    pub category: Category,
    /// The chunk.
    pub chunk: ChunkName,
}

#[derive(Debug)]
struct Inner {
    seq: u64,
    tombstones: Vec<Tombstone>,
    log: Option<(File, PathBuf)>,
}

/// Sequence numbers of own-chunk changes, and tombstones.
#[derive(Debug)]
pub struct ChangeFeed {
    /// Peers poll this feed (cluster mode); on a single node every call is
    /// a no-op, so appends do not pay for it.
    enabled: bool,
    inner: Mutex<Inner>,
    announced: watch::Sender<u64>,
    /// The storage's sync hook (fault tests can fail the tombstone sync).
    hook: crate::fsutil::FaultHook,
}

impl ChangeFeed {
    /// A feed; with `state_dir` (cluster mode) it is kept, and tombstones
    /// are loaded from and appended to its durable log; without, it is off.
    ///
    /// # Errors
    /// The tombstone log cannot be read or opened.
    pub fn open(
        state_dir: Option<&Path>,
        hook: crate::fsutil::FaultHook,
    ) -> Result<Self, StorageError> {
        let mut tombstones = Vec::new();
        let mut log = None;
        if let Some(dir) = state_dir {
            let path = dir.join(TOMBSTONES_FILE);
            let mut created = false;
            match std::fs::read_to_string(&path) {
                Ok(text) => tombstones = parse_tombstones(&text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => created = true,
                Err(e) => return Err(StorageError::io("read", &path, e)),
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| StorageError::io("open", &path, e))?;
            if created {
                // The fdatasync of each tombstone covers the file, not its
                // name: make the new entry durable itself.
                crate::fsutil::fsync_dir(dir).map_err(|e| StorageError::io("fsync", dir, e))?;
            }
            log = Some((file, path));
        }
        Ok(Self {
            enabled: state_dir.is_some(),
            inner: Mutex::new(Inner {
                seq: 0,
                tombstones,
                log,
            }),
            announced: watch::Sender::new(0),
            hook,
        })
    }

    /// Stamps `chunk` with the next sequence number and announces it.
    pub fn changed(&self, chunk: &Chunk) {
        if !self.enabled {
            return;
        }
        let mut g = self.inner.lock();
        g.seq += 1;
        chunk.set_changed(g.seq);
        self.announced.send_replace(g.seq);
    }

    /// Records the deletion of an own chunk (durably in cluster mode) and
    /// announces it.
    ///
    /// # Errors
    /// Appending to the tombstone log failed; the deletion is then not
    /// announced (the caller has already removed the files: peers keep
    /// their copies, which is safe).
    pub fn deleted(&self, category: &Category, chunk: &ChunkName) -> Result<(), StorageError> {
        if !self.enabled {
            return Ok(());
        }
        let mut g = self.inner.lock();
        if let Some((file, path)) = g.log.as_mut() {
            let line = format!("{category} {chunk}\n");
            file.write_all(line.as_bytes())
                .and_then(|()| crate::fsutil::sync_data(file, &self.hook))
                .map_err(|e| StorageError::io("append tombstone to", path.as_path(), e))?;
        }
        g.seq += 1;
        let seq = g.seq;
        g.tombstones.push(Tombstone {
            seq,
            category: category.clone(),
            chunk: chunk.clone(),
        });
        self.announced.send_replace(seq);
        Ok(())
    }

    /// The last announced sequence number.
    #[must_use]
    pub fn seq(&self) -> u64 {
        *self.announced.borrow()
    }

    /// A receiver of announcements.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.announced.subscribe()
    }

    /// Every tombstone (`full`), or those above sequence number `since`.
    #[must_use]
    pub fn tombstones_since(&self, full: bool, since: u64) -> Vec<Tombstone> {
        let g = self.inner.lock();
        g.tombstones
            .iter()
            .filter(|t| full || t.seq > since)
            .cloned()
            .collect()
    }

    /// Whether `chunk` of `category` was deleted here.
    #[must_use]
    pub fn is_deleted(&self, category: &Category, chunk: &ChunkName) -> bool {
        self.inner
            .lock()
            .tombstones
            .iter()
            .any(|t| &t.category == category && &t.chunk == chunk)
    }
}

/// Parses tombstone lines `<category> <chunk>`; a torn last line (crash
/// mid-append) or a foreign line is skipped.
fn parse_tombstones(text: &str) -> Vec<Tombstone> {
    text.lines()
        .filter_map(|line| {
            let (c, n) = line.split_once(' ')?;
            Some(Tombstone {
                seq: 0,
                category: Category::parse(c).ok()?,
                chunk: ChunkName::parse(n).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstone_lines_round_trip_and_skip_torn_tail() {
        let parsed = parse_tombstones("cat node1-chunk000000001\nbad line\ncat node2-chunk00");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].chunk.to_string(), "node1-chunk000000001");
    }

    #[test]
    fn tombstones_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let feed = ChangeFeed::open(Some(dir.path()), crate::fsutil::FaultHook::default()).unwrap();
        let cat = Category::parse("c").unwrap();
        let name = ChunkName::parse("n1-chunk000000003").unwrap();
        feed.deleted(&cat, &name).unwrap();
        assert_eq!(feed.tombstones_since(true, 0).len(), 1);
        assert_eq!(feed.tombstones_since(false, 0).len(), 1);
        assert!(feed.tombstones_since(false, 1).is_empty());
        drop(feed);
        let again =
            ChangeFeed::open(Some(dir.path()), crate::fsutil::FaultHook::default()).unwrap();
        assert!(again.is_deleted(&cat, &name));
    }
}
