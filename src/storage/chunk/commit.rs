//! Group commit of one chunk: a waiter that needs the first `target` bytes
//! on disk either finds them synced, or covered by a sync already running
//! (it waits for that one), or starts one fdatasync of data and index (in
//! parallel) up to the chunk's current end for everyone who arrives before
//! it starts. Up to [`MAX_SYNCS`] syncs run at once, so a write that comes
//! just after a sync started does not wait for that sync to finish before
//! its own can start: its pages go to the disk while the first sync's
//! journal commit completes, and concurrent fdatasyncs of one file share
//! journal commits. Results are published on the `synced` watch channel
//! (the highest end any finished sync covered: an fdatasync makes
//! everything written before it started durable). A failed sync latches
//! the chunk failed; it is never retried. Never writes chunk bytes.

use std::sync::Arc;

use super::{Chunk, ChunkFiles, StorageError};
use crate::fsutil::{self, FaultHook};

/// Most group commits of one chunk running at once.
pub(crate) const MAX_SYNCS: u8 = 2;

/// The group commits of a chunk that are running.
#[derive(Debug, Default)]
pub(crate) struct Syncs {
    /// How many are running.
    running: u8,
    /// The highest end a running or finished sync covers.
    covered: u64,
}

impl Chunk {
    /// Records that the first `upto` bytes are on disk (copies sync themselves).
    pub(crate) fn mark_synced(&self, upto: u64) {
        self.synced.send_modify(|s| s.upto = s.upto.max(upto));
    }

    /// How many bytes are known to be on disk.
    #[must_use]
    pub fn synced_upto(&self) -> u64 {
        self.synced.borrow().upto
    }

    /// Waits until the first `target` bytes are on disk, sharing each
    /// fdatasync among all concurrent waiters (group commit).
    ///
    /// # Errors
    /// [`StorageError::Failed`] if a sync failed; the chunk is then read-only.
    pub async fn sync_to(
        self: &Arc<Self>,
        target: u64,
        hook: &FaultHook,
    ) -> Result<(), StorageError> {
        let mut rx = self.synced.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if s.failed {
                return Err(self.failed_error());
            }
            if s.upto >= target {
                return Ok(());
            }
            let start = {
                let mut g = self.syncs.lock();
                (g.covered < target && g.running < MAX_SYNCS).then(|| {
                    // Everything published now, `target` included.
                    let end = self.state().end;
                    g.running += 1;
                    g.covered = g.covered.max(end);
                    end
                })
            };
            if let Some(end) = start {
                // In a spawned task so a cancelled request can never leave
                // a sync counted as running.
                let me = Arc::clone(self);
                let hook = hook.clone();
                tokio::spawn(async move { me.lead_sync(end, hook).await });
            }
            if rx.changed().await.is_err() {
                return Err(self.failed_error());
            }
        }
    }

    /// fdatasyncs `files` (this chunk's, data then index) up to the
    /// current end and records it; a failure marks the chunk failed.
    /// Blocking.
    ///
    /// # Errors
    /// [`StorageError::Failed`] after a failed sync.
    pub(crate) fn sync_blocking(
        &self,
        files: &ChunkFiles,
        hook: &FaultHook,
    ) -> Result<(), StorageError> {
        let end = self.state().end;
        if self.synced_upto() >= end {
            return Ok(());
        }
        match fsutil::sync_data(&files.data, hook).and(fsutil::sync_data(&files.idx, hook)) {
            Ok(()) => {
                self.mark_synced(end);
                Ok(())
            }
            Err(e) => {
                self.fail(format!(
                    "fdatasync of {} failed: {e}",
                    self.data_path.display()
                ));
                Err(self.failed_error())
            }
        }
    }

    /// One group commit: fdatasyncs data and index, then publishes that
    /// the first `end` bytes (published before it started) are on disk.
    async fn lead_sync(self: Arc<Self>, end: u64, hook: FaultHook) {
        let state = self.state();
        let result = match self.files() {
            None if state.sealed => Ok(()), // everything is already durable
            None => {
                // A parked (idle) open chunk: sync through fresh handles.
                let me = Arc::clone(&self);
                let h2 = hook.clone();
                tokio::task::spawn_blocking(move || {
                    let files = me.open_files().map_err(std::io::Error::other)?;
                    fsutil::sync_data(&files.data, &h2).and(fsutil::sync_data(&files.idx, &h2))
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            }
            Some(files) => {
                // Both files in parallel: their journal commits can merge.
                let (f2, h2) = (Arc::clone(&files), hook.clone());
                let data = tokio::task::spawn_blocking(move || fsutil::sync_data(&f2.data, &h2));
                let idx = tokio::task::spawn_blocking(move || fsutil::sync_data(&files.idx, &hook));
                let (data, idx) = tokio::join!(data, idx);
                let flat = |r: Result<std::io::Result<()>, tokio::task::JoinError>| {
                    r.unwrap_or_else(|e| Err(std::io::Error::other(e)))
                };
                flat(data).and(flat(idx))
            }
        };
        // Count this sync as finished before publishing, so a waiter woken
        // by the publish can always start the next one.
        self.syncs.lock().running -= 1;
        match result {
            Ok(()) => self.synced.send_modify(|s| s.upto = s.upto.max(end)),
            Err(e) => {
                self.fail(format!(
                    "fdatasync of {} failed: {e}",
                    self.data_path.display()
                ));
            }
        }
    }
}
