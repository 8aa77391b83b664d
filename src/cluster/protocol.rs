//! Messages of the peer protocol (documented in `docs/peers.md`) and the
//! pure codec of a fetch reply. No I/O here.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::storage::chunk::index::{IndexFormat, Record};

/// Path of the change-feed long poll (`POST`, JSON both ways).
pub const CHANGES_PATH: &str = "/peer/changes";
/// Path of a chunk byte fetch (`GET`).
pub const FETCH_PATH: &str = "/peer/fetch";
/// Path listing the copies of one owner's chunks a server holds (`GET`).
pub const HELD_PATH: &str = "/peer/held";
/// Path of a read served for a peer that does not hold the chunk (`GET`,
/// the parameters and answers of `/read`).
pub const READ_PATH: &str = "/peer/read";
/// Path of a forwarded chukcha ack (`POST`).
pub const ACK_PATH: &str = "/peer/ack";
/// Path mapping Kafka offsets ⇄ consumer-group positions of a partition
/// for a group coordinator that holds no copy of it (`GET`, JSON reply
/// [`KafkaOffsetsReply`]).
pub const KAFKA_OFFSETS_PATH: &str = "/peer/kafka/offsets";
/// Most batch bytes one `/peer/fetch` answers, whatever its `max_size`
/// asks (a batch larger than this still goes alone: at least one batch).
pub const MAX_FETCH_SIZE: u64 = 16 << 20;
/// Reply header: number of index records at the start of a fetch body.
pub const RECORDS_HEADER: &str = "chunkbus-records";
/// Reply header: length of each index record in a fetch body (16: index
/// version 1, without producer tags; 32: version 2, with them). Absent
/// means 16 (a server older than producer tags).
pub const RECORD_LEN_HEADER: &str = "chunkbus-record-len";
/// Fetch query parameter asking for records of this length (32 from
/// servers that keep producer tags; the answer's `chunkbus-record-len`
/// says what came).
pub const RECORD_LEN_PARAM: &str = "record_len";
/// Reply header: bytes of the chunk the answering server holds.
pub const SIZE_HEADER: &str = "chunkbus-size";
/// Reply header: `1` when the answering server holds the chunk complete.
pub const COMPLETE_HEADER: &str = "chunkbus-complete";

/// How far a replica holds one of the owner's chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// Category.
    pub category: String,
    /// Chunk name.
    pub chunk: String,
    /// Bytes written to the replica's chunk file (and readable there).
    pub written: u64,
    /// Bytes fdatasync'd on the replica.
    pub synced: u64,
}

/// The body of a changes poll.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangesRequest {
    /// Name of the polling server.
    pub from: String,
    /// The owner epoch the poller's `since` refers to (0: none yet).
    pub epoch: u64,
    /// Last sequence number seen; 0 asks for the full state.
    pub since: u64,
    /// How long to wait for a change (ms); 0 answers at once.
    pub wait_ms: u64,
    /// What the poller now holds of the owner's chunks.
    #[serde(default)]
    pub held: Vec<Held>,
    /// Last consumer-group event number seen; absent: send a snapshot of
    /// every position.
    #[serde(default)]
    pub groups_since: Option<u64>,
}

/// State of one of the owner's chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkState {
    /// Category.
    pub category: String,
    /// Chunk name.
    pub chunk: String,
    /// Published bytes.
    pub size: u64,
    /// The chunk will never grow again (`size` is final).
    pub complete: bool,
}

/// A deleted chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// Category.
    pub category: String,
    /// Chunk name.
    pub chunk: String,
}

/// The answer to a changes poll.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangesReply {
    /// The owner's process epoch: a new value means it restarted and this
    /// reply is a full state.
    pub epoch: u64,
    /// Sequence number to send as `since` next time.
    pub seq: u64,
    /// A write is waiting for replicas to fdatasync: sync what you hold.
    pub sync: bool,
    /// Own chunks changed since `since` (all of them for a full state).
    pub chunks: Vec<ChunkState>,
    /// Own chunks deleted since `since` (all known for a full state).
    pub deleted: Vec<Deleted>,
    /// Group event number to send as `groups_since` next time; absent
    /// while the owner's groups are still loading (ask for a snapshot again).
    #[serde(default)]
    pub groups_seq: Option<u64>,
    /// Consumer-group events since `groups_since` (or a snapshot).
    #[serde(default)]
    pub groups: Vec<super::group_sync::GroupEvent>,
    /// Where the owner's Kafka listener is advertised (`--kafka-advertise`
    /// or its bound `--kafka-listen`); absent without a Kafka listener
    /// (and from servers older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaAddr>,
}

/// A server's advertised Kafka address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaAddr {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// An entry of `/peer/held`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCopy {
    /// Category.
    pub category: String,
    /// Chunk name.
    pub chunk: String,
    /// Bytes held.
    pub size: u64,
    /// Held complete (sealed here).
    pub complete: bool,
    /// The answering server holds this chunk's pair under its own view of
    /// the placement (absent from older servers: taken as `true`, which
    /// every server was before replication factors). A server dropping
    /// an excess copy counts only copies their holders mean to keep.
    #[serde(default = "assigned_default")]
    pub assigned: bool,
}

fn assigned_default() -> bool {
    true
}

/// One consumer-group position in a [`KafkaOffsetsReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaPosition {
    /// Chunk name.
    pub chunk: String,
    /// Byte offset in it (a message boundary, or the chunk's end).
    pub offset: u64,
}

/// The answer of `GET /peer/kafka/offsets` (one of its fields, by the
/// form of the request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaOffsetsReply {
    /// `offset=K`: the positions committing Kafka offset `K` stores —
    /// each older chunk of the owner held there at its end, `K`'s chunk at
    /// the byte where record `K` starts. Absent: from the owner, `K` is
    /// past the end of its chunk; from a replica, its copies do not decide
    /// it (`K`'s chunk not held, `K` past its copy, or an older copy not
    /// complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<Vec<KafkaPosition>>,
    /// `chunk=N&pos=B`: the Kafka offset of a group at byte `B` of chunk
    /// `N`. Absent: `N` is not held there (or, on a replica, a newer chunk
    /// is not, or `B` is past its copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
}

/// Why a fetch body could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchBodyError {
    /// The body is shorter than its records.
    #[error("fetch reply of {len} bytes cannot hold {records} index records")]
    Short {
        /// Body length.
        len: usize,
        /// Records announced.
        records: usize,
    },
    /// The reply's records are of a length this server does not know.
    #[error("fetch reply records of an unknown length (chunkbus-record-len)")]
    UnknownRecordLength,
    /// The records do not describe the data that follows them.
    #[error("fetch reply records describe {described} bytes but {actual} follow")]
    LengthMismatch {
        /// Sum of record lengths.
        described: u64,
        /// Bytes after the records.
        actual: u64,
    },
}

/// The record layout whose records are `len` bytes long.
#[must_use]
pub fn format_of_record_len(len: u64) -> Option<IndexFormat> {
    [IndexFormat::V1, IndexFormat::V2]
        .into_iter()
        .find(|f| f.record_len() as u64 == len)
}

/// Encodes the index-record prefix of a fetch reply in `format`.
#[must_use]
pub fn encode_records(records: &[Record], format: IndexFormat) -> Bytes {
    let len = format.record_len();
    let mut out = Vec::with_capacity(records.len() * len);
    for r in records {
        out.extend_from_slice(&r.encode(format)[..len]);
    }
    Bytes::from(out)
}

/// Splits a fetch reply body into its `records` index records (in
/// `format`) and the batch bytes they describe. The CRCs are checked by
/// the copy writer.
///
/// # Errors
/// [`FetchBodyError`] when the body and the records disagree.
pub fn split_fetch_body(
    body: &Bytes,
    records: usize,
    format: IndexFormat,
) -> Result<(Vec<Record>, Bytes), FetchBodyError> {
    let prefix = records
        .checked_mul(format.record_len())
        .filter(|&p| p <= body.len())
        .ok_or(FetchBodyError::Short {
            len: body.len(),
            records,
        })?;
    let mut out = Vec::with_capacity(records);
    let mut described = 0u64;
    for r in format.records_from(&body[..prefix], 0) {
        described = described.saturating_add(u64::from(r.len));
        out.push(r);
    }
    let data = body.slice(prefix..);
    if described != data.len() as u64 {
        return Err(FetchBodyError::LengthMismatch {
            described,
            actual: data.len() as u64,
        });
    }
    Ok((out, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_in_both_record_layouts() {
        use crate::storage::chunk::index::ProducerTag;
        let tag = ProducerTag {
            producer: 5,
            seq: 11,
        };
        let recs = [Record::batch(0, 3, 7).tagged(tag), Record::batch(3, 2, 9)];
        for f in [IndexFormat::V1, IndexFormat::V2] {
            let mut body = encode_records(&recs, f).to_vec();
            body.extend_from_slice(b"ab\nc\n");
            let (r, d) = split_fetch_body(&Bytes::from(body), 2, f).unwrap();
            assert_eq!(&d[..], b"ab\nc\n");
            assert_eq!(r[1], recs[1]);
            // Version 1 records carry no tag.
            let want = if f == IndexFormat::V2 {
                tag
            } else {
                ProducerTag::default()
            };
            assert_eq!((r[0].offset, r[0].len, r[0].crc, r[0].tag), (0, 3, 7, want));
            assert_eq!(format_of_record_len(f.record_len() as u64), Some(f));
        }
        assert_eq!(format_of_record_len(24), None);
    }

    proptest! {
        /// Any body and record count: an error or a consistent split, never a panic.
        #[test]
        fn never_panics(body in proptest::collection::vec(any::<u8>(), 0..256), n in 0usize..64) {
            if let Ok((recs, data)) = split_fetch_body(&Bytes::from(body), n, IndexFormat::V2) {
                let sum: u64 = recs.iter().map(|r| u64::from(r.len)).sum();
                prop_assert_eq!(sum, data.len() as u64);
            }
        }
    }
}
