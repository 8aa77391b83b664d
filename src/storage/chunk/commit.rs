//! Group commit of one chunk: a waiter that needs the first `target` bytes
//! on disk either finds them synced or leads one fdatasync of data and index
//! (in parallel) for everyone waiting; the result is published on the
//! `synced` watch channel. A failed sync latches the chunk failed; it is
//! never retried. Never writes chunk bytes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Chunk, ChunkFiles, StorageError};
use crate::fsutil::{self, FaultHook};

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

    /// Waits until the first `target` bytes are on disk, sharing one
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
            if self
                .sync_leader
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // Lead in a spawned task so a cancelled request can never
                // leave the leader flag set.
                let me = Arc::clone(self);
                let hook = hook.clone();
                tokio::spawn(async move { me.lead_sync(hook).await });
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

    async fn lead_sync(self: Arc<Self>, hook: FaultHook) {
        let state = self.state();
        let end = state.end;
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
        // Release leadership before publishing so a waiter woken by the
        // publish can always become the next leader.
        self.sync_leader.store(false, Ordering::Release);
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
