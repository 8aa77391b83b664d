//! Whole messages of a chunk wherever its bytes are: the local mapping,
//! or the object store for a tiered chunk (also when the chunk is tiered
//! while the read runs). The same rules as `GET /read`
//! (`storage::chunk::window`); never writes.

use crate::error::{DomainError, ErrorKind};
use crate::names::Category;
use crate::storage::chunk::{Chunk, ReadOutcome};
use crate::storage::StorageError;
use crate::tier::{TierError, Tiering};

/// A failed chunk read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The local read failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The object-store read failed.
    #[error(transparent)]
    Tier(#[from] TierError),
    /// The chunk is tiered but tiering is not configured here.
    #[error("chunk {0} is tiered but tiering is not configured on this server")]
    TieringOff(String),
}

impl DomainError for ReadError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Storage(e) => e.kind(),
            Self::Tier(e) => e.kind(),
            Self::TieringOff(_) => ErrorKind::Internal,
        }
    }
}

/// Whole messages of `chunk` from byte `off`, at most `max` bytes.
///
/// # Errors
/// The read rules' refusals, object-store failures, local I/O errors.
pub async fn read(
    tiering: Option<&Tiering>,
    category: &Category,
    chunk: &Chunk,
    off: u64,
    max: u64,
) -> Result<ReadOutcome, ReadError> {
    if !chunk.is_tiered() {
        match chunk.read(off, max) {
            Err(_) if chunk.is_tiered() => {}
            local => return Ok(local?),
        }
    }
    let tiering = tiering.ok_or_else(|| ReadError::TieringOff(chunk.name().to_string()))?;
    Ok(tiering.read(category, chunk, off, max).await?)
}
