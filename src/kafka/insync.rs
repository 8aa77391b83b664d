//! `acks=all` and `--kafka-min-insync-replicas N` (Kafka's
//! `min.insync.replicas`, the leader counted): an `acks=all` produce needs
//! `N − 1` other holders of this server's chunks. Before appending, that
//! many must be reachable (else `NOT_ENOUGH_REPLICAS`, nothing stored);
//! after appending and fdatasync'ing here, that many must report the
//! bytes fdatasync'd on their side within the request's timeout (at most
//! `replication_timeout`), else `NOT_ENOUGH_REPLICAS_AFTER_APPEND` (the
//! records stay stored and keep replicating). The counting and the wait
//! are the HTTP `min_sync_replicas=N−1, sync=1` machinery
//! (`cluster::replicas`, `cluster::progress`).

use std::time::Duration;

use kafka_protocol::ResponseError;

use super::error::PartitionError;
use super::Broker;
use crate::cluster::progress::{Need, SyncWaiter};
use crate::names::Category;
use crate::storage::Appended;

/// What an `acks=all` produce waits for once appended.
pub struct Replicas<'a> {
    /// Peers that must confirm (0: the leader alone is enough).
    count: usize,
    /// Held while the produce waits, so replicas fdatasync what they copy.
    _sync: Option<SyncWaiter<'a>>,
}

impl Broker {
    /// Checks, before appending to `category`, that enough replicas are
    /// reachable for an `acks=all` produce, and announces the coming
    /// wait to them.
    ///
    /// # Errors
    /// `NOT_ENOUGH_REPLICAS`: fewer than `min_insync_replicas − 1` holders
    /// of this server's chunks exist or are reachable.
    pub fn replicas_before_append(
        &self,
        category: &Category,
    ) -> Result<Replicas<'_>, PartitionError> {
        let want = self.min_insync_replicas.saturating_sub(1);
        if want == 0 {
            return Ok(Replicas {
                count: 0,
                _sync: None,
            });
        }
        let (total, up) = self
            .state
            .cluster
            .get()
            .map_or((0, 0), |c| c.own_replicas(category.as_str()));
        if up < want {
            return Err(PartitionError::new(
                ResponseError::NotEnoughReplicas,
                format!(
                    "min.insync.replicas is {} (the leader and {want} replicas): {up} of this partition's {total} replicas are reachable",
                    self.min_insync_replicas
                ),
            ));
        }
        Ok(Replicas {
            count: want,
            _sync: self.state.cluster.get().map(|c| c.progress.sync_waiter()),
        })
    }

    /// Waits until `replicas` peers hold `appended` fdatasync'd, at most
    /// `timeout_ms` (the request's) and `replication_timeout`.
    ///
    /// # Errors
    /// `NOT_ENOUGH_REPLICAS_AFTER_APPEND`: they did not confirm in time
    /// (or the server is shutting down); the records are stored.
    pub async fn wait_for_replicas(
        &self,
        category: &Category,
        appended: &Appended,
        replicas: Replicas<'_>,
        timeout_ms: i32,
    ) -> Result<(), PartitionError> {
        let Some(cluster) = self.state.cluster.get().filter(|_| replicas.count > 0) else {
            return Ok(());
        };
        let limit = self.state.config.startup.replication_timeout;
        let timeout = u64::try_from(timeout_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map_or(limit, |ms| Duration::from_millis(ms).min(limit));
        let name = appended.chunk.name().to_string();
        cluster
            .wait_replicated(
                &Need {
                    category: category.as_str(),
                    chunk: &name,
                    end: appended.offset + appended.size,
                    replicas: replicas.count,
                    durable: true,
                },
                appended.offset,
                timeout,
                self.state.shutdown.cancelled(),
            )
            .await
            .map_err(|e| {
                PartitionError::new(
                    ResponseError::NotEnoughReplicasAfterAppend,
                    format!("stored, but {}", crate::error_chain(&e)),
                )
            })
    }
}
