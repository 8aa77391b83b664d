//! Startup scan of one chunk file against its index sidecar.
//!
//! A chunk whose index ends in a valid seal record that matches the file size
//! is trusted as is (fast path: 10,000 sealed chunks load in milliseconds).
//! Any other chunk is verified batch by batch; the torn or unverifiable tail
//! is cut (and logged), and, for chunks this server owns, the chunk is sealed
//! so writing continues in a new chunk. Empty chunks are removed. Never
//! runs while the server serves: nothing else touches the files meanwhile.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::fsutil::{self, FaultHook};
use crate::names::ChunkName;
use crate::storage::open_cache::OpenCache;
use crate::storage::StorageError;

use super::index::{self, IndexFormat, Record, Scan};
use super::{index_path, Chunk, ChunkMap};

/// Loads the chunk at `data_path`. Returns `None` when it holds no message
/// (its files are then removed), except an own unsealed chunk in a cluster,
/// which stays (empty) for the pull-back.
///
/// `owned`: this server wrote the chunk. An unsealed owned chunk is sealed
/// now if `seal_owned` (single node); in a cluster it stays open, trimmed to
/// its verified prefix, until the server has pulled back from its replicas
/// any bytes past that prefix (see `cluster::recovery`). An unsealed copy of
/// a peer's chunk is trimmed the same way and stays open for the replicator.
///
/// # Errors
/// I/O errors and foreign index headers, naming the file.
pub(crate) fn load(
    name: ChunkName,
    data_path: &Path,
    owned: bool,
    seal_owned: bool,
    hook: &FaultHook,
    cache: &Arc<OpenCache>,
) -> Result<Option<Arc<Chunk>>, StorageError> {
    let idx_path = index_path(data_path);
    let data_file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(data_path)
        .map_err(|e| StorageError::io("open chunk", data_path, e))?;
    let meta = data_file
        .metadata()
        .map_err(|e| StorageError::io("stat chunk", data_path, e))?;
    let created = meta.modified().unwrap_or_else(|_| SystemTime::now());
    let data_len = meta.len();

    if let Some((size, format)) = sealed_size(&idx_path)? {
        if size == data_len {
            if size == 0 {
                remove_pair(data_path, &idx_path)?;
                return Ok(None);
            }
            return Ok(Some(Arc::new(
                Chunk::existing(name, data_path.to_path_buf(), size, true, created, cache)
                    .with_index_format(format),
            )));
        }
    }

    let idx_bytes = match fs::read(&idx_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(StorageError::io("read index", &idx_path, e)),
    };
    let scan = scan_against(&data_file, data_path, data_len, &idx_bytes, &idx_path)?;
    if let Some(issue) = scan.tail_issue {
        tracing::warn!(
            chunk = %data_path.display(),
            kept_bytes = scan.valid_end,
            file_bytes = data_len,
            ?issue,
            "cut unverified tail of chunk (a batch that was never acknowledged as durable, or corruption)"
        );
    }
    // An own chunk left open in a cluster stays even when empty: a machine
    // crash may have lost every byte of it here while replicas hold
    // acknowledged (`min_sync_replicas`) writes of it, which the pull-back
    // returns; sealing removes it if nothing comes back.
    let awaits_pull_back = owned && !seal_owned && !scan.sealed;
    if scan.valid_end == 0 && !awaits_pull_back {
        tracing::info!(chunk = %data_path.display(), "removing empty chunk");
        remove_pair(data_path, &idx_path)?;
        return Ok(None);
    }
    let seal_now = owned && seal_owned;
    if seal_now && !scan.sealed {
        trim_to_verified(&data_file, data_path, &idx_path, &scan, true, hook)?;
        tracing::info!(chunk = %data_path.display(), size = scan.valid_end, "sealed chunk left open by a crash");
    } else if !scan.sealed {
        // Left open (cluster recovery or a replica copy): keep exactly the
        // verified prefix so copying can continue after it.
        trim_to_verified(&data_file, data_path, &idx_path, &scan, false, hook)?;
    } else if data_len != scan.valid_end || idx_bytes.len() != scan.index_len {
        // Sealed, but with bytes past the seal in either file: drop them
        // (the verified index ends with the seal record).
        trim_to_verified(&data_file, data_path, &idx_path, &scan, false, hook)?;
    }
    let sealed = seal_now || scan.sealed;
    Ok(Some(Arc::new(
        Chunk::existing(
            name,
            data_path.to_path_buf(),
            scan.valid_end,
            sealed,
            created,
            cache,
        )
        .with_index_format(scan.format),
    )))
}

/// Reads the index header and last record; returns the sealed size and the
/// index version if the last record is a seal record.
fn sealed_size(idx_path: &Path) -> Result<Option<(u64, IndexFormat)>, StorageError> {
    let f = match File::open(idx_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("open index", idx_path, e)),
    };
    let len = f
        .metadata()
        .map_err(|e| StorageError::io("stat index", idx_path, e))?
        .len();
    let mut head = [0u8; index::MAX_RECORD_LEN];
    let n = usize::try_from(len).unwrap_or(usize::MAX).min(head.len());
    f.read_exact_at(&mut head[..n], 0)
        .map_err(|e| StorageError::io("read index", idx_path, e))?;
    // Anything unusual (no header, a foreign one) takes the full scan,
    // which says what is wrong.
    let Some(format) = IndexFormat::detect(&head[..n]) else {
        return Ok(None);
    };
    // Only an index of whole records can end in a seal record.
    let records = format.record_count(len);
    let (Some(last), true) = (
        records.checked_sub(1).and_then(|n| format.record_pos(n)),
        format.record_pos(records) == Some(len),
    ) else {
        return Ok(None);
    };
    let mut buf = [0u8; index::MAX_RECORD_LEN];
    f.read_exact_at(&mut buf[..format.record_len()], last)
        .map_err(|e| StorageError::io("read index", idx_path, e))?;
    let r = Record::decode(format, &buf);
    Ok(r.is_seal().then_some((r.offset, format)))
}

fn scan_against(
    data_file: &File,
    data_path: &Path,
    data_len: u64,
    idx: &[u8],
    idx_path: &Path,
) -> Result<Scan, StorageError> {
    let map_err = |source| StorageError::CorruptIndex {
        path: idx_path.to_path_buf(),
        source,
    };
    if data_len == 0 {
        return index::scan(idx, &[]).map_err(map_err);
    }
    // Map read-only to verify without copying up to max_chunk_size bytes.
    match ChunkMap::map_read_only(data_file, data_len) {
        Ok(map) => {
            // Nothing else writes the file during startup recovery: all of
            // it is final for the scan.
            let len = map.publish(data_len);
            let data = map.published(len).unwrap_or_default();
            index::scan(idx, data).map_err(map_err)
        }
        Err(_) => {
            let mut data = Vec::new();
            let mut f = data_file;
            f.read_to_end(&mut data)
                .map_err(|e| StorageError::io("read chunk", data_path, e))?;
            index::scan(idx, &data).map_err(map_err)
        }
    }
}

/// Cuts the chunk and its index to the verified prefix of `scan` and, with
/// `seal`, appends the seal record; both files are fdatasync'd.
fn trim_to_verified(
    data_file: &File,
    data_path: &Path,
    idx_path: &Path,
    scan: &Scan,
    seal: bool,
    hook: &FaultHook,
) -> Result<(), StorageError> {
    data_file
        .set_len(scan.valid_end)
        .map_err(|e| StorageError::io("trim", data_path, e))?;
    fsutil::sync_data(data_file, hook).map_err(|e| StorageError::io("fdatasync", data_path, e))?;
    let idx = OpenOptions::new()
        .write(true)
        .open(idx_path)
        .map_err(|e| StorageError::io("open index", idx_path, e))?;
    idx.set_len(scan.index_len as u64)
        .map_err(|e| StorageError::io("trim", idx_path, e))?;
    if seal {
        // An index cut to nothing gets its header back first.
        let mut at = scan.index_len as u64;
        if at == 0 {
            idx.write_all_at(&scan.format.header(), 0)
                .map_err(|e| StorageError::io("write index header to", idx_path, e))?;
            at = scan.format.header_len() as u64;
        }
        idx.write_all_at(
            &Record::seal(scan.valid_end).encode(scan.format)[..scan.format.record_len()],
            at,
        )
        .map_err(|e| StorageError::io("append seal record to", idx_path, e))?;
    }
    fsutil::sync_data(&idx, hook).map_err(|e| StorageError::io("fdatasync", idx_path, e))
}

fn remove_pair(data_path: &Path, idx_path: &Path) -> Result<(), StorageError> {
    for p in [data_path, idx_path] {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("remove", p, e)),
        }
    }
    Ok(())
}
