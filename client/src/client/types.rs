//! What requests and answers carry: where a write was stored, a producer
//! tag, write options, listed chunks and groups, and the names of the
//! response headers the server sets.
//!
//! Plain data: never sends a request.

/// Response header the server sets on a failed `/write`: `false` when the
/// body was not appended (safe to send again), `true` when it was appended
/// but a later step (fdatasync, replicas) failed.
pub const WRITTEN_HEADER: &str = "chunkbus-written";

/// Response header the server sets (`true`) on a `404` for a chunk it
/// knows is deleted for good (acked, or removed by retention). A `404`
/// without it means the server does not hold the chunk, which may still
/// change (a replica catching up): [`ClientError::ChunkDeleted`](crate::ClientError::ChunkDeleted) vs
/// [`ClientError::Status`](crate::ClientError::Status) with 404.
pub const DELETED_HEADER: &str = "chunkbus-deleted";

/// Where a write was stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct WriteReply {
    /// Chunk name, e.g. `node1-chunk000000007`.
    pub chunk: String,
    /// Offset of the body's first byte in the chunk.
    pub offset: u64,
    /// Body length in bytes.
    pub size: u64,
    /// An idempotent write ([`Client::write_idempotent`](crate::Client::write_idempotent)) whose batch was
    /// stored before: the position is the original's, nothing was stored
    /// again.
    #[serde(default)]
    pub duplicate: bool,
}

/// An idempotent producer's tag of one write: the producer's id (not 0)
/// and the batch's sequence number, which must grow from one batch to the
/// next of the same producer and category (gaps are fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerTag {
    /// The producer's id: random, chosen once per producer, never 0.
    pub producer: u64,
    /// The batch's sequence number.
    pub seq: u64,
}

/// One chunk as listed by the server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ChunkInfo {
    /// Chunk name.
    pub name: String,
    /// Sealed: the chunk will never grow again.
    pub complete: bool,
    /// Bytes of whole messages readable on that server now.
    pub size: u64,
    /// The servers holding the chunk (by `--name`, its owner first), from
    /// a cluster server; empty from a single node or an older server. A
    /// [`Consumer`](crate::Consumer) reads the chunk directly from them.
    #[serde(default)]
    pub holders: Vec<String>,
}

/// A consumer group as listed by `GET /consumers`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct GroupStatus {
    /// Group name.
    pub consumer: String,
    /// Stored position per chunk.
    pub positions: Vec<GroupPosition>,
    /// Bytes of chunks on that server the group has not acked.
    pub lag_bytes: u64,
    /// Messages in those bytes.
    pub lag_messages: u64,
}

/// A group's stored position in one chunk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct GroupPosition {
    /// Chunk name.
    pub chunk: String,
    /// Acknowledged offset.
    pub offset: u64,
}

/// Durability options of a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Reply only once the data is on the server's disk (`sync=1`).
    pub sync: bool,
    /// Reply only once this many other servers hold the bytes
    /// (`min_sync_replicas=K`); 0 = do not wait for replicas.
    pub min_sync_replicas: u32,
}
