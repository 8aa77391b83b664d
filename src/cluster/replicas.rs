//! What a write of this server that waits for replicas needs from the
//! cluster, shared by HTTP `min_sync_replicas` writes and Kafka `acks=all`
//! produces: how many holders of its chunks are reachable now, and the
//! wait for `K` of them to confirm the bytes. Also the Kafka addresses
//! the peers advertise in their change-feed answers.

use std::time::Duration;

use super::progress::Need;
use super::protocol::KafkaAddr;
use super::{Cluster, ClusterError};

/// One server of the cluster as this server sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Reachable: this server, or a peer whose last change poll was
    /// answered.
    pub up: bool,
    /// Its advertised Kafka address (None: no Kafka listener, or never
    /// reached).
    pub kafka: Option<KafkaAddr>,
}

impl Cluster {
    /// Records this server's advertised Kafka address, sent to peers in
    /// every change-feed answer (set once, when the listener starts).
    pub fn set_kafka_address(&self, addr: KafkaAddr) {
        let _ = self.kafka.set(addr);
    }

    /// This server's advertised Kafka address, if it has a listener.
    #[must_use]
    pub fn kafka_address(&self) -> Option<&KafkaAddr> {
        self.kafka.get()
    }

    /// Every server of the cluster (this one and the configured peers),
    /// in no particular order, with reachability and Kafka address.
    #[must_use]
    pub fn members(&self) -> Vec<Member> {
        let mut out: Vec<Member> = self
            .links()
            .into_iter()
            .map(|(name, link)| Member {
                name,
                up: link.up,
                kafka: link.kafka,
            })
            .collect();
        out.push(Member {
            name: self.me.to_string(),
            up: true,
            kafka: self.kafka_address().cloned(),
        });
        out
    }

    /// The other holders of this server's chunks of `category` (the
    /// placement's, every peer without a replication factor) and how many
    /// of them are reachable now.
    #[must_use]
    pub fn own_replicas(&self, category: &str) -> (usize, usize) {
        let holders = self.assignment.holders(category, self.me.as_str());
        let links = self.links.read();
        let mut total = 0;
        let mut up = 0;
        for h in holders.iter().filter(|h| *h != self.me.as_str()) {
            total += 1;
            if links.get(h).is_some_and(|l| l.lock().up) {
                up += 1;
            }
        }
        (total, up)
    }

    /// Waits until `need.replicas` peers hold `[0, need.end)` of the chunk
    /// (fdatasync'd if `need.durable`), at most `timeout` or until `stop`
    /// resolves; `offset` is where the write began (for the error).
    ///
    /// # Errors
    /// [`ClusterError::NotReplicated`]: fewer peers confirmed in time.
    pub async fn wait_replicated(
        &self,
        need: &Need<'_>,
        offset: u64,
        timeout: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ClusterError> {
        if need.replicas == 0 {
            return Ok(());
        }
        self.progress
            .wait_for(need, timeout, stop)
            .await
            .map_err(|have| ClusterError::NotReplicated {
                chunk: need.chunk.to_owned(),
                offset,
                have,
                want: need.replicas,
                durable: need.durable,
                timeout_ms: timeout.as_millis(),
            })
    }
}
