//! [`StorageError`]: everything the storage layer can refuse or fail with.
//! Each variant classifies itself (`DomainError::kind`, at the end of this
//! file); `http/error.rs` turns the kind into a status.

use std::io;
use std::path::PathBuf;

use super::chunk::index::IndexFormatError;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The filesystem is full; the write was not stored.
    #[error("disk full while {op} {}; the write was not stored, retry once space is freed", path.display())]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error (ENOSPC/EDQUOT).
        #[source]
        source: io::Error,
    },
    /// A previous fsync or write failed; the category is read-only until restart.
    #[error("category {category} is read-only after a storage failure ({reason}); restart the server once the disk is healthy")]
    Failed {
        /// The category.
        category: String,
        /// The first failure.
        reason: String,
    },
    /// No such chunk in this category on this server.
    #[error("unknown chunk {name} in category {category}")]
    UnknownChunk {
        /// The category.
        category: String,
        /// The chunk name asked for.
        name: String,
    },
    /// A chunk this server knows is deleted for good (acked, removed by
    /// retention, or an index that never held data): it will never be
    /// readable again. Answered `404` as SPEC asks for an unknown chunk,
    /// with `chunkbus-deleted: true`.
    #[error("chunk {name} of category {category} was deleted (acked or removed by retention) and will never be readable again; go on with the owner's next chunk")]
    DeletedChunk {
        /// The category.
        category: String,
        /// The chunk name asked for.
        name: String,
    },
    /// An ack named a chunk that may still grow.
    #[error("chunk {name} is not sealed yet; only sealed (complete) chunks can be acked")]
    NotSealed {
        /// The chunk.
        name: String,
    },
    /// An ack's size is below the chunk's final size.
    #[error("ack size {size} is less than the size {final_size} of chunk {name}; read the whole chunk first")]
    AckTooSmall {
        /// The chunk.
        name: String,
        /// Size given.
        size: u64,
        /// The chunk's final size.
        final_size: u64,
    },
    /// A read offset past the end of a chunk this server holds complete.
    #[error("offset {off} is beyond the end of chunk {name} (size {size})")]
    OffsetBeyondEnd {
        /// The chunk.
        name: String,
        /// Offset asked for.
        off: u64,
        /// Current size.
        size: u64,
    },
    /// A read offset inside a message.
    #[error("offset {off} is not at a message boundary of chunk {name}; use 0 or an offset returned by a previous read")]
    NotBoundary {
        /// The chunk.
        name: String,
        /// Offset asked for.
        off: u64,
    },
    /// `max_size` cannot hold the next message.
    #[error("max_size {max_size} is too small for the next message of {next_len} bytes; ask for at least {next_len}")]
    MaxSizeTooSmall {
        /// The limit given.
        max_size: u64,
        /// Length of the next message.
        next_len: u64,
    },
    /// An index sidecar that is not ours.
    #[error("bad index file {}", path.display())]
    CorruptIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: IndexFormatError,
    },
    /// Another process holds the data dir.
    #[error("data dir {} is in use by another chunkbus process (lock {} held)", data_dir.display(), lock.display())]
    Locked {
        /// The data dir.
        data_dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// Bytes copied from a peer do not match their index records.
    #[error("copy of chunk {name} rejected: {why}")]
    CopyMismatch {
        /// The chunk.
        name: String,
        /// What did not match.
        why: String,
    },
    /// A copy was asked of a chunk this server already holds complete.
    #[error("chunk {name} is already complete here")]
    AlreadyComplete {
        /// The chunk.
        name: String,
    },
    /// A write would create a category past `max_categories`.
    #[error("this server already holds the most categories allowed ({max}, max_categories); write to an existing category, or raise --max-categories")]
    TooManyCategories {
        /// The limit.
        max: usize,
    },
    /// An idempotent producer's write whose sequence number is below the
    /// last one stored for it: out of order, or a producer id used by two
    /// producers.
    #[error("producer {producer} already stored batch {last} in category {category}; sequence number {seq} is older (out of order, or two producers share the id)")]
    StaleSequence {
        /// The category.
        category: String,
        /// The producer id.
        producer: u64,
        /// The sequence number sent.
        seq: u64,
        /// The last stored one.
        last: u64,
    },
    /// A batch numbered by its records (a Kafka idempotent producer's)
    /// that does not start right after the producer's last stored one.
    #[error("producer {producer}'s batch in category {category} ends at record number {seq} but does not start at {expected}, the number after its last stored batch (a gap or an overlap); nothing was stored")]
    OutOfOrderSequence {
        /// The category.
        category: String,
        /// The producer id.
        producer: u64,
        /// The batch's last number (unwrapped).
        seq: u64,
        /// The number it should have started with.
        expected: u64,
    },
    /// An idempotent producer's tag sent again with another body than the
    /// batch stored under it.
    #[error("producer {producer}'s batch {seq} in category {category} was stored (chunk {chunk}, offset {offset}) with other content; a repeat must carry the same body (two producers share the id, or the tag was reused)")]
    TagReused {
        /// The category.
        category: String,
        /// The producer id.
        producer: u64,
        /// The sequence number.
        seq: u64,
        /// Where the stored batch is.
        chunk: String,
        /// Its offset.
        offset: u64,
    },
    /// An idempotent producer asked whether this server holds one of its
    /// batches, and it does not (not stored here, nor copied here yet).
    #[error("producer {producer}'s batch {seq} is not held by this server in category {category} (neither stored here nor copied here yet); nothing was stored")]
    NotKnownHere {
        /// The category.
        category: String,
        /// The producer id.
        producer: u64,
        /// The sequence number asked for.
        seq: u64,
    },
    /// All 10^9 chunk indexes of a category are used.
    #[error("category {category} has used every chunk index (999999999)")]
    IndexesExhausted {
        /// The category.
        category: String,
    },
}

impl StorageError {
    /// Wraps an I/O error, classifying a full disk as [`StorageError::DiskFull`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if crate::fsutil::is_disk_full(&source) {
            Self::DiskFull { op, path, source }
        } else {
            Self::Io { op, path, source }
        }
    }
}

impl crate::error::DomainError for StorageError {
    /// Refusals of the request are `BadRequest`, an unknown chunk
    /// `NotFound`, a full disk `DiskFull`, a read-only category
    /// `Unavailable`, a new category past `max_categories` `Conflict`
    /// (the server's state refuses it until categories are removed or the
    /// limit raised; waiting does not help), so is an idempotent producer's
    /// stale sequence number; anything else is `Internal`.
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::DiskFull { .. } => ErrorKind::DiskFull,
            Self::Failed { .. } => ErrorKind::Unavailable,
            Self::UnknownChunk { .. } | Self::NotKnownHere { .. } => ErrorKind::NotFound,
            Self::DeletedChunk { .. } => ErrorKind::Deleted,
            Self::TooManyCategories { .. }
            | Self::StaleSequence { .. }
            | Self::OutOfOrderSequence { .. }
            | Self::TagReused { .. } => ErrorKind::Conflict,
            Self::NotSealed { .. }
            | Self::AckTooSmall { .. }
            | Self::OffsetBeyondEnd { .. }
            | Self::NotBoundary { .. }
            | Self::MaxSizeTooSmall { .. } => ErrorKind::BadRequest,
            _ => ErrorKind::Internal,
        }
    }
}

/// A producer body refused by the storage layer's framing check
/// (`chunk/format.rs`): malformed is `BadRequest`, oversize
/// `PayloadTooLarge`.
impl crate::error::DomainError for super::chunk::format::BodyError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::Empty | Self::MissingFinalNewline => ErrorKind::BadRequest,
            Self::MessageTooLarge { .. } | Self::BodyTooLarge { .. } => ErrorKind::PayloadTooLarge,
        }
    }
}
