//! Copies of chunks this server does not write itself: replicas of peers'
//! chunks, and own chunks being completed from a replica after a crash.
//! Creates, appends to (through [`CopyWriter`]), seals and removes them, and
//! announces what became visible. Never touches the open chunk of the
//! writer and never talks to peers (the replicator does).

use std::sync::Arc;

use super::CategoryLog;
use crate::fsutil;
use crate::names::ChunkName;
use crate::storage::chunk::index::{IndexFormat, Record};
use crate::storage::chunk::Chunk;
use crate::storage::copy::{self, CopyWriter};
use crate::storage::StorageError;

impl CategoryLog {
    /// Copies of peers' chunks that are still being replicated (open files).
    #[must_use]
    pub fn open_copies(&self) -> Vec<Arc<Chunk>> {
        self.chunks
            .read()
            .values()
            .filter(|c| c.name().owner() != &self.ctx.server && c.files().is_some())
            .cloned()
            .collect()
    }

    /// Own chunks left open by a crash (cluster mode): they wait for the
    /// pull-back from replicas, then [`CategoryLog::seal_copy`].
    #[must_use]
    pub fn unsealed_own(&self) -> Vec<Arc<Chunk>> {
        let active = self.active_chunk();
        self.chunks
            .read()
            .values()
            .filter(|c| {
                let s = c.state();
                c.name().owner() == &self.ctx.server
                    && !s.sealed
                    && !s.closed
                    && !active.as_ref().is_some_and(|a| Arc::ptr_eq(a, c))
            })
            .cloned()
            .collect()
    }

    /// The writer to copy bytes into `name` (a peer's chunk, or an own
    /// chunk being completed after a crash): continues the copy held here,
    /// or creates an empty one. Blocking.
    ///
    /// # Errors
    /// [`StorageError::AlreadyComplete`] when the copy is sealed, or I/O
    /// errors creating or opening its files.
    pub fn copy_writer(&self, name: &ChunkName) -> Result<CopyWriter, StorageError> {
        let hint = self.ctx.cfg.max_chunk_size;
        if let Some(chunk) = self.chunk(name) {
            return CopyWriter::reopen(chunk, hint, self.ctx.hook.clone());
        }
        let data_path = self.dir.join(name.to_string());
        let chunk = Arc::new(
            Chunk::existing(
                name.clone(),
                data_path,
                0,
                false,
                std::time::SystemTime::now(),
                &self.ctx.cache,
            )
            .with_index_format(IndexFormat::CURRENT),
        );
        let writer = CopyWriter::create(Arc::clone(&chunk), hint, self.ctx.hook.clone())?;
        self.chunks.write().insert(name.clone(), chunk);
        Ok(writer)
    }

    /// Appends verified batches through `writer` (see [`CopyWriter::append`])
    /// and announces what became visible.
    ///
    /// # Errors
    /// As [`CopyWriter::append`].
    pub fn append_copy(
        &self,
        writer: &mut CopyWriter,
        records: &[Record],
        data: &[u8],
    ) -> Result<(), StorageError> {
        let before = writer.end();
        writer.append(records, data)?;
        self.learn_copied(writer.chunk().name(), records);
        if before == 0 && writer.end() > 0 {
            self.listed.send_modify(|g| *g = g.wrapping_add(1));
        }
        if writer.chunk().name().owner() == &self.ctx.server {
            self.ctx.feed.changed(writer.chunk());
        }
        Ok(())
    }

    /// Completes a copy whose owner's chunk is complete and held whole:
    /// closes it at once (readers and listings see it complete and move on
    /// to the next chunk), then seals it durably in the background, as the
    /// owner does with its own chunks.
    pub fn finish_copy(self: &Arc<Self>, writer: CopyWriter) {
        writer.chunk().close();
        let me = Arc::clone(self);
        let job = move || {
            let name = writer.chunk().name().clone();
            if let Err(e) = me.seal_copy(writer) {
                tracing::error!(chunk = %name, error = %crate::error_chain(&e), "sealing a chunk copy failed");
            }
        };
        self.ctx.run_blocking(job);
    }

    /// Seals a copy (or a recovered own chunk) at its current end.
    ///
    /// # Errors
    /// As [`CopyWriter::seal`].
    pub fn seal_copy(&self, writer: CopyWriter) -> Result<(), StorageError> {
        let chunk = Arc::clone(writer.chunk());
        let empty = writer.end() == 0;
        if empty {
            self.chunks.write().remove(chunk.name());
            drop(writer);
            return copy::remove_files(&chunk);
        }
        writer.seal()?;
        if chunk.name().owner() == &self.ctx.server {
            self.ctx.feed.changed(&chunk);
        }
        Ok(())
    }

    /// Removes this server's copy of a peer's chunk (deleted by its owner,
    /// or diverged from it). Readers holding it keep their mapping.
    ///
    /// # Errors
    /// I/O errors removing the files.
    pub fn remove_copy(&self, name: &ChunkName) -> Result<bool, StorageError> {
        let Some(chunk) = self.chunks.write().remove(name) else {
            return Ok(false);
        };
        self.forget_copied(name);
        copy::remove_files(&chunk)?;
        fsutil::fsync_dir(&self.dir).map_err(|e| StorageError::io("fsync", &self.dir, e))?;
        self.listed.send_modify(|g| *g = g.wrapping_add(1));
        Ok(true)
    }
}
