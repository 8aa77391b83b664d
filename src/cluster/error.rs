//! The cluster's errors: [`ClusterError`] (setting up the cluster, and the
//! cluster's refusals of client and peer requests, each with its
//! [`ErrorKind`]), [`ReplicationError`] (copying one chunk from a peer; only
//! logged and shown in `/peers`, never answered) and [`BlockingError`]
//! (storage work run on the blocking pool). Nothing here chooses HTTP
//! statuses: `http/error.rs` maps the kinds.

use crate::error::{DomainError, ErrorKind};
use crate::names::NameError;
use crate::storage::StorageError;

use super::acks::PendingAckError;
use super::link::PeerError;
use super::protocol::FetchBodyError;

/// Storage work run on the blocking pool failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockingError {
    /// The storage operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The task panicked or was cancelled.
    #[error("task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// What the cluster refuses or fails with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The client for peer requests cannot be built.
    #[error(transparent)]
    Tls(#[from] chunkbus_client::tls::TlsError),
    /// The acks waiting for their owner cannot be loaded or stored.
    #[error(transparent)]
    PendingAcks(#[from] PendingAckError),
    /// A peer did not answer usably (unreachable, bad reply).
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The owner of a chunk refused an ack forwarded to it; its answer is
    /// passed on.
    #[error("the owner {owner} refused the ack: {body}")]
    AckRefused {
        /// The owner.
        owner: String,
        /// The status it answered.
        status: u16,
        /// Its error line.
        body: String,
    },
    /// Deleting the local copy of an acked chunk failed.
    #[error(transparent)]
    RemoveCopy(BlockingError),
    /// A peer request from a server that is not a configured peer.
    #[error("{from} is not a configured peer of {me}")]
    NotAPeer {
        /// The server that asked.
        from: String,
        /// This server.
        me: String,
    },
    /// A forwarded ack of a chunk this server does not own.
    #[error("{chunk} is not owned by {me}")]
    NotOwner {
        /// The chunk.
        chunk: String,
        /// This server.
        me: String,
    },
    /// A read of a chunk held elsewhere: no holder gave a usable answer.
    #[error("no holder of {chunk} answered ({tried}); retry later")]
    NoHolderAnswered {
        /// The chunk.
        chunk: String,
        /// Each holder tried and what it did.
        tried: String,
    },
    /// A peer asked for a partition's Kafka offsets from a server that
    /// does not hold that owner's chunks of the category (it asks the next
    /// holder).
    #[error("{me} holds no copy of {owner}'s chunks of {category}")]
    NotHeld {
        /// The category.
        category: String,
        /// The partition's owner.
        owner: String,
        /// This server.
        me: String,
    },
    /// A write was stored here but not confirmed by `min_sync_replicas`
    /// peers in time.
    #[error(
        "written to {chunk} at offset {offset}, but only {have} of {want} replicas confirmed it{} within {timeout_ms} ms \
         (or the server is shutting down); the data stays written and keeps replicating",
        on_disk(.durable)
    )]
    NotReplicated {
        /// The chunk written to.
        chunk: String,
        /// Where the write starts.
        offset: u64,
        /// Peers that confirmed it.
        have: usize,
        /// Peers asked for.
        want: usize,
        /// Whether the confirmations had to be on disk.
        durable: bool,
        /// How long the write waited.
        timeout_ms: u128,
    },
}

fn on_disk(durable: &bool) -> &'static str {
    if *durable {
        " on disk"
    } else {
        ""
    }
}

impl DomainError for ClusterError {
    /// A peer not reached, a pending ack not stored and a write not
    /// replicated are `Unavailable`; an owner's refusal is relayed as is;
    /// a partition not held here is `NotFound`.
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Peer(_)
            | Self::PendingAcks(_)
            | Self::NotReplicated { .. }
            | Self::NoHolderAnswered { .. } => ErrorKind::Unavailable,
            Self::AckRefused { status, .. } => ErrorKind::Relayed(*status),
            Self::NotAPeer { .. } => ErrorKind::Forbidden,
            Self::NotHeld { .. } => ErrorKind::NotFound,
            Self::NotOwner { .. } => ErrorKind::BadRequest,
            Self::Tls(_) | Self::RemoveCopy(_) => ErrorKind::Internal,
        }
    }
}

/// Why copying (or pulling back) a chunk from a peer failed; the copy is
/// retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The peer did not answer usably.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The fetch reply does not split into records and bytes.
    #[error(transparent)]
    FetchBody(#[from] FetchBodyError),
    /// Local storage refused or failed.
    #[error(transparent)]
    Blocking(#[from] BlockingError),
    /// Appending fetched bytes to the copy failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The append task panicked.
    #[error("copy task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The owner's final chunk is shorter than the copy held here (the copy
    /// is dropped and fetched again).
    #[error("owner's final size {size} is below the {held} bytes held here; copy dropped")]
    Shrunk {
        /// The owner's final size.
        size: u64,
        /// Bytes held here.
        held: u64,
    },
    /// A peer listed an invalid category or chunk name.
    #[error(transparent)]
    Name(#[from] NameError),
}
