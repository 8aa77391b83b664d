//! A Kafka group coordinator's questions about a partition whose chunks
//! it holds no copy of (under a replication factor): what committing an
//! offset stores, and which offset a stored position is. Only servers
//! holding the chunks can count their messages, so the coordinator asks
//! them through `GET /peer/kafka/offsets` (`docs/peers.md`): the
//! reachable holders (last change poll answered) before the others, each
//! in placement order, so the owner first when it is reachable.
//!
//! An answer is final when it decides the question (positions found, an
//! offset computed), or when it comes from the owner, which holds every
//! chunk it wrote. A replica that does not know (its copy is behind, or
//! lacks the chunk) is passed over for the next holder; if no holder
//! decides, a replica's "does not know" stands only when every other
//! holder answered the same. Every call is bounded in time
//! ([`PER_HOLDER`], [`IN_ALL`]); nothing is retried here (the Kafka client
//! retries on the retriable error it gets).
//!
//! Never reads local chunks and never stores positions.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::time::Instant;

use super::link::{q, PeerError};
use super::protocol::{KafkaOffsetsReply, KAFKA_OFFSETS_PATH};
use super::{Cluster, ClusterError};
use crate::names::{Category, ChunkName, ServerName};

/// Longest wait for one holder's answer.
pub const PER_HOLDER: Duration = Duration::from_secs(5);
/// Longest time spent asking all holders of one partition.
pub const IN_ALL: Duration = Duration::from_secs(10);

/// What the coordinator asks.
#[derive(Debug, Clone, Copy)]
pub enum KafkaQuestion<'a> {
    /// The positions a commit of this Kafka offset stores.
    Commit(i64),
    /// The Kafka offset of a group at byte `pos` of `chunk`.
    Committed {
        /// The chunk (one of the owner's).
        chunk: &'a ChunkName,
        /// The group's position in it.
        pos: u64,
    },
}

impl KafkaQuestion<'_> {
    fn query(&self) -> String {
        match self {
            Self::Commit(offset) => format!("offset={offset}"),
            Self::Committed { chunk, pos } => format!("chunk={}&pos={pos}", q(&chunk.to_string())),
        }
    }

    fn decided(&self, reply: &KafkaOffsetsReply) -> bool {
        match self {
            Self::Commit(_) => reply.positions.is_some(),
            Self::Committed { .. } => reply.offset.is_some(),
        }
    }
}

impl Cluster {
    /// The holders of `owner`'s chunks of `category` other than this
    /// server, owner first, the reachable ones (last poll answered)
    /// before the others, placement order otherwise.
    fn holders_to_ask(&self, category: &Category, owner: &ServerName) -> Vec<String> {
        let mut holders: Vec<String> = self
            .assignment
            .holders(category.as_str(), owner.as_str())
            .into_iter()
            .filter(|h| h != self.me().as_str())
            .collect();
        let links = self.links.read();
        // Stable: placement order (the owner first) among equals.
        holders.sort_by_key(|h| !links.get(h).is_some_and(|l| l.lock().up));
        holders
    }

    /// Asks the holders of `owner`'s chunks of `category` (see the module
    /// docs).
    ///
    /// # Errors
    /// [`ClusterError::NoHolderAnswered`]: no holder gave a usable answer
    /// within [`IN_ALL`]; [`ClusterError::Peer`]: a holder refused the
    /// question itself (a `4xx` other than `404`).
    pub async fn ask_kafka_offsets(
        &self,
        category: &Category,
        owner: &ServerName,
        question: KafkaQuestion<'_>,
    ) -> Result<KafkaOffsetsReply, ClusterError> {
        let deadline = Instant::now() + IN_ALL;
        let mut tried = String::new();
        let mut undecided: Option<KafkaOffsetsReply> = None;
        let mut failures = 0usize;
        for holder in self.holders_to_ask(category, owner) {
            let Some(peer) = self.peer(&holder) else {
                continue;
            };
            if !tried.is_empty() {
                tried.push_str("; ");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failures += 1;
                let _ = write!(tried, "{holder}: not asked, {} s passed", IN_ALL.as_secs());
                continue;
            }
            let url = format!(
                "{}{KAFKA_OFFSETS_PATH}?category={}&owner={}&{}&from={}",
                peer.url,
                q(category.as_str()),
                q(owner.as_str()),
                question.query(),
                q(self.me().as_str()),
            );
            let answer = self
                .client()
                .json::<KafkaOffsetsReply>(
                    &holder,
                    Method::GET,
                    &url,
                    Bytes::new(),
                    left.min(PER_HOLDER),
                )
                .await;
            match answer {
                Ok(reply) if question.decided(&reply) || holder == owner.as_str() => {
                    return Ok(reply);
                }
                Ok(reply) => {
                    let _ = write!(tried, "{holder}: its copy does not have it");
                    undecided = Some(reply);
                }
                Err(PeerError::Status { status, .. })
                    if status == StatusCode::NOT_FOUND || status.is_server_error() =>
                {
                    failures += 1;
                    let _ = write!(tried, "{holder}: {status}");
                }
                Err(e @ PeerError::Status { .. }) => return Err(e.into()),
                Err(e) => {
                    failures += 1;
                    let _ = write!(tried, "{e}");
                }
            }
        }
        match undecided {
            Some(r) if failures == 0 => Ok(r),
            _ => Err(ClusterError::NoHolderAnswered {
                chunk: format!("{owner}'s chunks of {category}"),
                tried: if tried.is_empty() {
                    "no holder is a configured peer".to_owned()
                } else {
                    tried
                },
            }),
        }
    }
}
