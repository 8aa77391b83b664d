//! A Kafka group coordinator's questions about a partition whose chunks
//! it holds no copy of (under a replication factor): what committing an
//! offset stores, and which offset a stored position is. Only servers
//! holding the chunks can count their messages, so the coordinator asks
//! them through `GET /peer/kafka/offsets` (`docs/peers.md`): the
//! reachable holders (last change poll answered) before the others, each
//! in placement order, so the owner first when it is reachable.
//!
//! An answer is final when it decides the question (for a commit of
//! offset `K`, positions including one in `K`'s chunk; an offset
//! computed), or when it comes from the owner, which holds every chunk it
//! wrote. A replica that does not know (its copy is behind, or lacks the
//! chunk) answers `{}` and is passed over for the next holder; if no
//! holder decides, a replica's "does not know" stands only when every
//! other holder answered the same. A holder that fails (unreachable, an
//! error status, not a configured peer) is passed over too.
//!
//! All lookups of one Kafka request share one [`Lookups`]: one deadline
//! ([`IN_ALL`] for the whole request, each holder at most
//! [`PER_HOLDER`]), and the holders that failed in it, which are not asked
//! again for its other partitions. Nothing is retried here (the Kafka
//! client retries on the retriable error it gets).
//!
//! Never reads local chunks and never stores positions.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use tokio::time::Instant;

use super::link::{q, PeerError};
use super::protocol::{KafkaOffsetsReply, KAFKA_OFFSETS_PATH};
use super::{Cluster, ClusterError};
use crate::kafka::offset::KafkaOffset;
use crate::names::{Category, ChunkName, ServerName};

/// Longest wait for one holder's answer.
pub const PER_HOLDER: Duration = Duration::from_secs(5);
/// Longest time one Kafka request spends asking holders, all its
/// partitions together.
pub const IN_ALL: Duration = Duration::from_secs(10);

/// The holder lookups of one Kafka request: their common deadline and the
/// holders that failed so far (skipped for the request's other
/// partitions).
#[derive(Debug)]
pub struct Lookups {
    deadline: Instant,
    failed: HashSet<String>,
}

impl Lookups {
    /// Lookups with [`IN_ALL`] from now.
    #[must_use]
    pub fn new() -> Self {
        Self::within(IN_ALL)
    }

    /// Lookups with `budget` from now.
    #[must_use]
    pub fn within(budget: Duration) -> Self {
        Self {
            deadline: Instant::now() + budget,
            failed: HashSet::new(),
        }
    }
}

impl Default for Lookups {
    fn default() -> Self {
        Self::new()
    }
}

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

    /// Whether `reply` decides the question: for a commit, a position in
    /// the offset's own chunk (a replica lacking it, or behind it, cannot
    /// say what the commit stores there).
    fn decided(&self, reply: &KafkaOffsetsReply) -> bool {
        match self {
            Self::Commit(offset) => {
                let Some(chunk) = KafkaOffset::from_i64(*offset).map(|k| k.chunk) else {
                    return false;
                };
                reply
                    .positions
                    .iter()
                    .flatten()
                    .any(|p| ChunkName::parse(&p.chunk).is_ok_and(|c| c.index() == chunk))
            }
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
    /// docs), within `lookups`' deadline, skipping the holders that failed
    /// earlier in it (and remembering the ones that fail now).
    ///
    /// # Errors
    /// [`ClusterError::NoHolderAnswered`]: no holder gave a usable answer
    /// in time.
    pub async fn ask_kafka_offsets(
        &self,
        category: &Category,
        owner: &ServerName,
        question: KafkaQuestion<'_>,
        lookups: &mut Lookups,
    ) -> Result<KafkaOffsetsReply, ClusterError> {
        let mut tried = String::new();
        let mut undecided = false;
        let mut failures = 0usize;
        for holder in self.holders_to_ask(category, owner) {
            if !tried.is_empty() {
                tried.push_str("; ");
            }
            if lookups.failed.contains(&holder) {
                failures += 1;
                let _ = write!(tried, "{holder}: failed earlier in this request");
                continue;
            }
            let Some(peer) = self.peer(&holder) else {
                failures += 1;
                let _ = write!(tried, "{holder}: not a configured peer");
                continue;
            };
            let left = lookups.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failures += 1;
                let _ = write!(
                    tried,
                    "{holder}: not asked, the request's {} s passed",
                    IN_ALL.as_secs()
                );
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
                Ok(_) => {
                    let _ = write!(tried, "{holder}: its copy does not decide it");
                    undecided = true;
                }
                // Any error, a refusal (4xx) included: the next holder may
                // answer. Unreachable or failing holders are not asked
                // again in this request; a refusal may be about this
                // partition only.
                Err(e) => {
                    failures += 1;
                    let down = match &e {
                        PeerError::Status { status, .. } => status.is_server_error(),
                        _ => true,
                    };
                    if down {
                        lookups.failed.insert(holder.clone());
                    }
                    let _ = write!(tried, "{holder}: {}", crate::error_chain(&e));
                }
            }
        }
        if undecided && failures == 0 {
            // Only replicas answered, and none could decide: as the owner
            // answering "not there".
            return Ok(KafkaOffsetsReply::default());
        }
        Err(ClusterError::NoHolderAnswered {
            chunk: format!("{owner}'s chunks of {category}"),
            tried: if tried.is_empty() {
                "no other server holds them".to_owned()
            } else {
                tried
            },
        })
    }
}
