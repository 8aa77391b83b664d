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
        for holder in self.holders_to_ask(category, owner) {
            if !tried.is_empty() {
                tried.push_str("; ");
            }
            if lookups.failed.contains(&holder) {
                let _ = write!(tried, "{holder}: failed earlier in this request");
                continue;
            }
            let Some(peer) = self.peer(&holder) else {
                let _ = write!(tried, "{holder}: not a configured peer");
                continue;
            };
            let left = lookups.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
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
                }
                // Any error, a refusal (4xx) included: the next holder may
                // answer. Unreachable or failing holders are not asked
                // again in this request; a refusal may be about this
                // partition only.
                Err(e) => {
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
        // No holder answered, or only replicas whose copies lag or lack
        // chunks: no answer either way, the client retries.
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::cluster::peers::Peer;
    use crate::cluster::protocol::KafkaPosition;

    /// A peer on loopback answering every request with `status` and `body`.
    async fn stub(status: &'static str, body: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut buf, mut got) = (vec![0u8; 4096], Vec::new());
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        url
    }

    /// `n1` with peers `n2` (the owner asked about) and `n3` at `urls`.
    fn cluster(dir: &std::path::Path, n2: String, n3: String) -> Cluster {
        let peer = |name: &str, url: String| Peer {
            name: ServerName::parse(name).unwrap(),
            url,
        };
        Cluster::new(
            ServerName::parse("n1").unwrap(),
            vec![peer("n2", n2), peer("n3", n3)],
            dir,
            None,
            None,
            None,
            None,
        )
        .unwrap()
    }

    const DECIDED: &str = r#"{"positions":[{"chunk":"n2-chunk000000001","offset":12}]}"#;

    #[tokio::test]
    async fn a_refusal_from_one_holder_does_not_stop_the_search() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cluster(
            tmp.path(),
            stub("403 Forbidden", "not a peer").await,
            stub("200 OK", DECIDED).await,
        );
        let (category, owner) = (
            Category::parse("c").unwrap(),
            ServerName::parse("n2").unwrap(),
        );
        let k = KafkaOffset::start_of(1).plus(3).to_i64().unwrap();
        let reply = c
            .ask_kafka_offsets(
                &category,
                &owner,
                KafkaQuestion::Commit(k),
                &mut Lookups::new(),
            )
            .await
            .unwrap();
        assert_eq!(
            reply.positions,
            Some(vec![KafkaPosition {
                chunk: "n2-chunk000000001".to_owned(),
                offset: 12
            }])
        );
    }

    #[tokio::test]
    async fn a_holder_that_failed_is_not_asked_again_in_the_same_request() {
        let tmp = tempfile::tempdir().unwrap();
        // Port 1 on loopback: nothing listens there (ephemeral ports, which
        // the stubs get, never are), so connecting is refused at once.
        let closed = "http://127.0.0.1:1".to_owned();
        let c = cluster(tmp.path(), closed, stub("200 OK", "{}").await);
        let (category, owner) = (
            Category::parse("c").unwrap(),
            ServerName::parse("n2").unwrap(),
        );
        let mut lookups = Lookups::new();
        for round in 0..2 {
            let e = c
                .ask_kafka_offsets(&category, &owner, KafkaQuestion::Commit(5), &mut lookups)
                .await
                .unwrap_err();
            let ClusterError::NoHolderAnswered { tried, .. } = e else {
                panic!("{e}");
            };
            assert!(tried.contains("n3: its copy does not decide it"), "{tried}");
            assert_eq!(
                tried.contains("n2: failed earlier in this request"),
                round == 1,
                "{tried}"
            );
        }
    }

    #[test]
    fn a_commit_is_decided_only_with_a_position_in_the_offsets_chunk() {
        let reply = |chunk: &str| KafkaOffsetsReply {
            positions: Some(vec![KafkaPosition {
                chunk: chunk.to_owned(),
                offset: 40,
            }]),
            offset: None,
        };
        let k = KafkaOffset::start_of(2).plus(1).to_i64().unwrap();
        let q = KafkaQuestion::Commit(k);
        assert!(!q.decided(&reply("n2-chunk000000001")));
        assert!(q.decided(&reply("n2-chunk000000002")));
        assert!(!q.decided(&KafkaOffsetsReply::default()));
    }
}
