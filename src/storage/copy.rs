//! [`CopyWriter`]: appends batches fetched from a peer to a chunk copy.
//!
//! Used by replicas (copying an owner's chunk) and by an owner restarting
//! after a crash (pulling back bytes of its own chunk that only a replica
//! kept). Every batch is checked against its index record (offset chain,
//! length, CRC32C) before any byte is written; bytes go to the file first,
//! then their records, then they are published. A crash at any point leaves
//! a prefix that startup recovery verifies the same way, so a half-written
//! copy is never readable. Blocking I/O: run off the async runtime.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::fsutil::{self, FaultHook};

use super::chunk::index::Record;
use super::chunk::{Chunk, ChunkFiles};
use super::StorageError;

/// The writer of one chunk copy. Only one exists per chunk at a time (the
/// replicator of its owner, or startup recovery).
#[derive(Debug)]
pub struct CopyWriter {
    chunk: Arc<Chunk>,
    files: Arc<ChunkFiles>,
    records: u64,
    end: u64,
    hook: FaultHook,
}

impl CopyWriter {
    /// Creates the files of a new, empty copy and opens it.
    pub(super) fn create(
        chunk: Arc<Chunk>,
        map_hint: u64,
        hook: FaultHook,
    ) -> Result<Self, StorageError> {
        let data_path = chunk.data_path().to_path_buf();
        let idx_path = chunk.idx_path().to_path_buf();
        let open = |p: &std::path::Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(p)
                .map_err(|e| StorageError::io("create chunk copy", p, e))
        };
        let data = open(&data_path)?;
        let idx = open(&idx_path)?;
        idx.write_all_at(&chunk.index_format()?.header(), 0)
            .map_err(|e| StorageError::io("write index header to", &idx_path, e))?;
        if let Some(dir) = data_path.parent() {
            fsutil::fsync_dir(dir).map_err(|e| StorageError::io("fsync", dir, e))?;
        }
        let files = Arc::new(ChunkFiles { data, idx });
        chunk.open_for_copy(Arc::clone(&files), map_hint);
        Ok(Self {
            chunk,
            files,
            records: 0,
            end: 0,
            hook,
        })
    }

    /// Reopens an unsealed chunk found at startup (its files were trimmed
    /// to the verified prefix by recovery) to continue copying into it.
    pub(super) fn reopen(
        chunk: Arc<Chunk>,
        map_hint: u64,
        hook: FaultHook,
    ) -> Result<Self, StorageError> {
        let state = chunk.state();
        if state.sealed || state.closed {
            return Err(StorageError::AlreadyComplete {
                name: chunk.name().to_string(),
            });
        }
        if let Some(files) = chunk.files() {
            // Already open (a previous writer of this process was dropped).
            let records = idx_records(&chunk, &files.idx, chunk.idx_path())?;
            return Ok(Self {
                end: state.end,
                chunk,
                files,
                records,
                hook,
            });
        }
        let open = |p: &std::path::Path| -> Result<File, StorageError> {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .map_err(|e| StorageError::io("open chunk copy", p, e))
        };
        let data = open(chunk.data_path())?;
        let idx = open(chunk.idx_path())?;
        let records = idx_records(&chunk, &idx, chunk.idx_path())?;
        let files = Arc::new(ChunkFiles { data, idx });
        chunk.open_for_copy(Arc::clone(&files), map_hint);
        Ok(Self {
            end: state.end,
            chunk,
            files,
            records,
            hook,
        })
    }

    /// The chunk being written.
    #[must_use]
    pub fn chunk(&self) -> &Arc<Chunk> {
        &self.chunk
    }

    /// Bytes held (and published).
    #[must_use]
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Index records held: the record number the next batch gets.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Verifies `data` against `records` (which must continue this copy),
    /// appends both and publishes the new end.
    ///
    /// # Errors
    /// [`StorageError::CopyMismatch`] (nothing written) or I/O errors (the
    /// unpublished bytes are overwritten by the next attempt).
    pub fn append(&mut self, records: &[Record], data: &[u8]) -> Result<(), StorageError> {
        let name = || self.chunk.name().to_string();
        let mut at = self.end;
        let mut pos = 0usize;
        for r in records {
            if r.is_seal() || r.len == 0 || r.offset != at {
                return Err(StorageError::CopyMismatch {
                    name: name(),
                    why: format!(
                        "record at offset {} (length {}) does not continue the copy at {at}",
                        r.offset, r.len
                    ),
                });
            }
            let len = r.len as usize;
            let Some(bytes) = data.get(pos..pos + len) else {
                return Err(StorageError::CopyMismatch {
                    name: name(),
                    why: format!("{} bytes received, records describe more", data.len()),
                });
            };
            if crc32c::crc32c(bytes) != r.crc {
                return Err(StorageError::CopyMismatch {
                    name: name(),
                    why: format!("CRC32C mismatch in the batch at offset {}", r.offset),
                });
            }
            at += u64::from(r.len);
            pos += len;
        }
        if pos != data.len() {
            return Err(StorageError::CopyMismatch {
                name: name(),
                why: format!("{} bytes received, records describe {pos}", data.len()),
            });
        }
        if records.is_empty() {
            return Ok(());
        }
        self.files
            .data
            .write_all_at(data, self.end)
            .map_err(|e| StorageError::io("write to", self.chunk.data_path(), e))?;
        let format = self.chunk.index_format()?;
        let mut encoded = Vec::with_capacity(records.len() * format.record_len());
        for r in records {
            encoded.extend_from_slice(&r.encode(format)[..format.record_len()]);
        }
        let idx_pos = self.chunk.record_pos(self.records)?;
        self.files
            .idx
            .write_all_at(&encoded, idx_pos)
            .map_err(|e| StorageError::io("append index records to", self.chunk.idx_path(), e))?;
        self.records += records.len() as u64;
        self.end = at;
        self.chunk.publish_copied(at);
        Ok(())
    }

    /// fdatasyncs the copy (data, then index) up to its current end.
    ///
    /// # Errors
    /// I/O errors; the chunk is marked failed.
    pub fn sync(&self) -> Result<(), StorageError> {
        let result = fsutil::sync_data(&self.files.data, &self.hook)
            .and_then(|()| fsutil::sync_data(&self.files.idx, &self.hook));
        match result {
            Ok(()) => {
                self.chunk.mark_synced(self.end);
                Ok(())
            }
            Err(e) => {
                let err = StorageError::io("fdatasync", self.chunk.data_path(), e);
                self.chunk.fail(crate::error_chain(&err));
                Err(err)
            }
        }
    }

    /// Seals the copy at its current end (the owner's final size): sync,
    /// seal record, sync. The copy is then complete.
    ///
    /// # Errors
    /// I/O errors; the chunk is marked failed.
    pub fn seal(self) -> Result<(), StorageError> {
        self.chunk.seal_blocking(self.end, self.records, &self.hook)
    }
}

/// Number of records in `chunk`'s index file (`idx`, trimmed to whole
/// records).
fn idx_records(chunk: &Chunk, idx: &File, path: &std::path::Path) -> Result<u64, StorageError> {
    let format = chunk.index_format()?;
    let len = idx
        .metadata()
        .map_err(|e| StorageError::io("stat index", path, e))?
        .len();
    if len < format.header_len() as u64 {
        // Created but never written: give it a header.
        idx.write_all_at(&format.header(), 0)
            .map_err(|e| StorageError::io("write index header to", path, e))?;
        return Ok(0);
    }
    Ok(format.record_count(len))
}

/// Removes a chunk copy's files (a replica dropping a copy that diverged
/// or was deleted by its owner).
pub(super) fn remove_files(chunk: &Chunk) -> Result<(), StorageError> {
    for p in [chunk.idx_path(), chunk.data_path()] {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("remove chunk copy", p, e)),
        }
    }
    Ok(())
}
