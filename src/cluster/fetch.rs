//! One step of copying a peer's chunk: ask the peer for the whole batches
//! after what the local copy holds (`GET /peer/fetch`, `docs/peers.md`),
//! then append them to the copy on the blocking pool, where the copy writer
//! checks them against their index records. Shared by the replicator and by
//! crash pull-back.
//!
//! Never decides which chunk to copy, how far, or when a copy is complete:
//! the callers do.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;

use super::link::{q, PeerClient};
use super::protocol::{self, FetchBodyError};
use super::{Peer, ReplicationError};
use crate::names::{Category, ChunkName};
use crate::storage::chunk::index::{IndexFormat, Record};
use crate::storage::{CategoryLog, CopyWriter};

/// Deadline of one fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A peer's answer to one fetch.
#[derive(Debug)]
pub struct Fetched {
    /// Index records of the batches in `data`, in order.
    pub records: Vec<Record>,
    /// The batch bytes the records describe.
    pub data: Bytes,
    /// Bytes of the chunk the peer holds.
    pub size: u64,
    /// The peer holds the chunk complete (`size` is final).
    pub complete: bool,
}

/// Where to fetch from and how much.
#[derive(Debug, Clone, Copy)]
pub struct FetchFrom<'a> {
    /// The peer asked.
    pub peer: &'a Peer,
    /// The chunk's category.
    pub category: &'a Category,
    /// The chunk.
    pub chunk: &'a ChunkName,
    /// Most bytes to ask for (at least one batch comes back).
    pub max_size: u64,
}

/// Fetches the batches after what `writer` holds.
///
/// # Errors
/// [`ReplicationError::Peer`]: no usable answer;
/// [`ReplicationError::FetchBody`]: the body does not match its records.
pub async fn fetch(
    client: &PeerClient,
    from: FetchFrom<'_>,
    writer: &CopyWriter,
) -> Result<Fetched, ReplicationError> {
    let url = format!(
        "{}{}?category={}&chunk={}&off={}&rec={}&max_size={}&{}={}",
        from.peer.url,
        protocol::FETCH_PATH,
        q(from.category.as_str()),
        q(&from.chunk.to_string()),
        writer.end(),
        writer.records(),
        from.max_size,
        protocol::RECORD_LEN_PARAM,
        IndexFormat::CURRENT.record_len(),
    );
    let answer = client
        .request(
            from.peer.name.as_str(),
            Method::GET,
            &url,
            Bytes::new(),
            FETCH_TIMEOUT,
        )
        .await?;
    let n = answer.header_u64(protocol::RECORDS_HEADER).unwrap_or(0);
    let size = answer.header_u64(protocol::SIZE_HEADER).unwrap_or(0);
    let complete = answer.header_u64(protocol::COMPLETE_HEADER) == Some(1);
    let format = answer
        .header_u64(protocol::RECORD_LEN_HEADER)
        .map_or(Some(IndexFormat::V1), protocol::format_of_record_len)
        .ok_or(FetchBodyError::UnknownRecordLength)?;
    let (records, data) = protocol::split_fetch_body(
        &answer.body,
        usize::try_from(n).unwrap_or(usize::MAX),
        format,
    )?;
    Ok(Fetched {
        records,
        data,
        size,
        complete,
    })
}

/// Appending fetched batches failed.
#[derive(Debug)]
pub struct AppendFailed {
    /// The copy writer, unless the task holding it panicked.
    pub writer: Option<CopyWriter>,
    /// What went wrong.
    pub error: ReplicationError,
}

/// Appends fetched batches to the copy on the blocking pool and gives the
/// writer back.
///
/// # Errors
/// [`AppendFailed`]: the bytes do not match their records or cannot be
/// written ([`ReplicationError::Storage`], writer given back), or the task
/// panicked ([`ReplicationError::Task`], writer lost).
pub async fn append(
    log: &Arc<CategoryLog>,
    mut writer: CopyWriter,
    records: Vec<Record>,
    data: Bytes,
) -> Result<CopyWriter, Box<AppendFailed>> {
    let log = Arc::clone(log);
    let appended = tokio::task::spawn_blocking(move || {
        let r = log.append_copy(&mut writer, &records, &data);
        (writer, r)
    })
    .await;
    match appended {
        Ok((writer, Ok(()))) => Ok(writer),
        Ok((writer, Err(e))) => Err(Box::new(AppendFailed {
            writer: Some(writer),
            error: e.into(),
        })),
        Err(e) => Err(Box::new(AppendFailed {
            writer: None,
            error: ReplicationError::Task(e),
        })),
    }
}
