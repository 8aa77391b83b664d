//! Reads of chunks this server does not hold (under a replication factor):
//! ask the chunk's holders in placement order — its owner first — through
//! `GET /peer/read`, and hand back the first usable answer *with its body
//! unread*, so the HTTP layer streams it through with bounded memory.
//!
//! Failover: a holder that cannot be reached, answers `5xx`, or does not
//! have the chunk (a plain `404`: its copy may not have started) is
//! skipped for the next one. Any other answer — data, an empty body, a
//! `400` for a bad offset, a `404` marked deleted — is the chunk's answer
//! and is passed on as is. When no holder answers, the read fails with
//! [`ClusterError::NoHolderAnswered`] (`503`, retryable); when every
//! holder says `404`, that `404` is passed on.
//!
//! Never reads local files and never buffers a body.

use std::fmt::Write as _;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Response, StatusCode};

use super::link::q;
use super::protocol::READ_PATH;
use super::{Cluster, ClusterError};
use crate::names::{Category, ChunkName};
use crate::storage::chunk::Chunk;

/// How much longer than its long poll a holder may take to start answering.
const HEAD_SLACK: Duration = Duration::from_secs(10);

/// One `/read` to serve from a holder.
#[derive(Debug, Clone, Copy)]
pub struct RemoteRead<'a> {
    /// The category.
    pub category: &'a Category,
    /// The chunk.
    pub chunk: &'a ChunkName,
    /// Offset asked for.
    pub off: u64,
    /// Most bytes asked for.
    pub max_size: u64,
    /// Long poll asked for (ms).
    pub wait_ms: u64,
}

/// A holder's answer, body not yet read.
#[derive(Debug)]
pub struct Relayed {
    /// The holder that answered.
    pub holder: String,
    /// Its answer.
    pub response: Response<Incoming>,
}

/// Whether a holder's status is the chunk's answer (else try the next).
fn is_final(resp: &Response<Incoming>) -> bool {
    let status = resp.status();
    if status.is_server_error() {
        return false;
    }
    if status == StatusCode::NOT_FOUND {
        return resp
            .headers()
            .get(chunkbus_client::DELETED_HEADER)
            .is_some_and(|v| v == "true");
    }
    true
}

impl Cluster {
    /// Whether a read of `chunk` (held here) is answered from local data:
    /// an own chunk, a copy held complete, or a copy of a pair this server
    /// is assigned (a replica still copying answers from what it holds, as
    /// without a replication factor). A partial copy of a pair assigned
    /// elsewhere (placement changed) is not: its holders are asked.
    #[must_use]
    pub fn answers_locally(&self, category: &Category, chunk: &Chunk) -> bool {
        let s = chunk.state();
        let owner = chunk.name().owner();
        owner == self.me()
            || s.sealed
            || s.closed
            || chunk.is_tiered()
            || self
                .assignment
                .holds_here(category.as_str(), owner.as_str())
    }

    /// The servers to ask for `chunk`, in order: its holders under the
    /// placement (owner first), this server left out.
    #[must_use]
    pub fn read_sources(&self, category: &Category, chunk: &ChunkName) -> Vec<String> {
        self.assignment
            .holders(category.as_str(), chunk.owner().as_str())
            .into_iter()
            .filter(|h| h != self.me().as_str())
            .collect()
    }

    /// Reads from the holders of a chunk not held here, failing over
    /// between them (see the module docs).
    ///
    /// # Errors
    /// [`ClusterError::NoHolderAnswered`]: no holder gave a usable answer.
    pub async fn read_remote(&self, read: RemoteRead<'_>) -> Result<Relayed, ClusterError> {
        let mut tried = String::new();
        let mut not_found: Option<Relayed> = None;
        let mut failures = 0usize;
        let limit = Duration::from_millis(read.wait_ms) + HEAD_SLACK;
        for holder in self.read_sources(read.category, read.chunk) {
            let Some(peer) = self.peer(&holder) else {
                continue;
            };
            let url = format!(
                "{}{READ_PATH}?category={}&chunk={}&off={}&max_size={}&wait_ms={}&from={}",
                peer.url,
                q(read.category.as_str()),
                q(&read.chunk.to_string()),
                read.off,
                read.max_size,
                read.wait_ms,
                q(self.me().as_str()),
            );
            if !tried.is_empty() {
                tried.push_str("; ");
            }
            match self.client().get_streamed(&holder, &url, limit).await {
                Ok(response) if is_final(&response) => {
                    return Ok(Relayed { holder, response });
                }
                Ok(response) => {
                    let _ = write!(tried, "{holder}: {}", response.status());
                    tracing::debug!(%holder, chunk = %read.chunk, status = %response.status(), "holder could not serve a read; trying the next");
                    if response.status() == StatusCode::NOT_FOUND {
                        not_found = Some(Relayed { holder, response });
                    } else {
                        failures += 1;
                    }
                }
                Err(e) => {
                    failures += 1;
                    let _ = write!(tried, "{e}");
                    tracing::debug!(%holder, chunk = %read.chunk, error = %e, "holder unreachable for a read; trying the next");
                }
            }
        }
        // Every holder that answered said "not here" and none failed:
        // the chunk is unknown to the cluster (as far as its holders go).
        match not_found {
            Some(r) if failures == 0 => Ok(r),
            _ => Err(ClusterError::NoHolderAnswered {
                chunk: read.chunk.to_string(),
                tried: if tried.is_empty() {
                    "no holder is a configured peer".to_owned()
                } else {
                    tried
                },
            }),
        }
    }
}
