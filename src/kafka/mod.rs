//! The Kafka wire-protocol listener (`--kafka-listen`): existing Kafka
//! clients produce to and fetch from categories, the same data HTTP
//! serves. The mapping (topic = category, partition = one owner's
//! chunks, offsets, records = messages) and the differences from Kafka
//! are in `docs/kafka.md`.
//!
//! # Layout
//! - `frame.rs`: length-prefixed frames under a size cap (no decoding).
//! - `conn.rs`: one connection: frame → header → handler → answer.
//! - `versions.rs`: the APIs and versions served, `ApiVersions`.
//! - `metadata.rs`, `produce.rs`, `fetch.rs`, `list_offsets.rs`: one API each.
//! - `coordinator/`: the group protocol's state machine (pure, in
//!   memory); `membership.rs`: its APIs (FindCoordinator, JoinGroup,
//!   SyncGroup, Heartbeat, LeaveGroup); `offsets.rs`: OffsetCommit and
//!   OffsetFetch on chunkbus consumer-group positions; `group_listing.rs`:
//!   ListGroups and DescribeGroups.
//! - `topology.rs`: partitions ⇄ owners, leaders, replicas, group
//!   coordinators (pure); `leadership.rs`: those rules on the cluster now,
//!   and the leader/coordinator checks; `insync.rs`: `acks=all` replicas.
//! - `offset.rs`: Kafka offsets ⇄ (chunk index, message number) (pure).
//! - `locate.rs`: message numbers ⇄ byte offsets, with a bounded cache
//!   (one per process, in `AppState`, shared with the peer endpoint).
//! - `resolve.rs`: Kafka offsets ⇄ group positions of a partition held
//!   here (OffsetCommit, OffsetFetch, and `GET /peer/kafka/offsets` for a
//!   coordinator holding no copy).
//! - `partition.rs`: one partition's chunks, log start, high watermark.
//! - `read.rs`: whole messages of a local or tiered chunk.
//! - `records.rs`: Kafka records ⇄ messages (pure); `compression.rs`:
//!   size-capped decompression.
//! - `idempotence.rs`: `InitProducerId` and idempotent producers'
//!   batches on the storage dedup table.
//! - `admin.rs`: `CreateTopics`, `DeleteTopics`, `CreatePartitions`;
//!   `configs.rs`: `DescribeConfigs` (read-only, from the settings).
//! - `sasl.rs`: SASL/PLAIN with `--token` as the password.
//! - `error.rs`: connection errors and Kafka error codes.
//!
//! The listener never touches chunk files directly (it goes through
//! `storage` and `tier` as the HTTP handlers do) and never chooses HTTP
//! statuses.

mod admin;
mod compression;
mod configs;
mod conn;
pub mod coordinator;
pub mod error;
mod fetch;
mod frame;
mod group_listing;
mod idempotence;
mod insync;
mod leadership;
mod list_offsets;
pub mod locate;
mod membership;
mod metadata;
pub mod offset;
mod offsets;
mod partition;
mod produce;
mod read;
mod records;
pub mod resolve;
pub mod sasl;
pub mod topology;
mod versions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::coordinator::Coordinator;
use self::error::PartitionError;
use self::locate::{Locator, Positions};
use self::topology::Topology;
use crate::http::AppState;
use crate::storage::Storage;

/// How often group sessions and rebalance deadlines are checked.
const COORDINATOR_TICK: Duration = Duration::from_millis(250);
/// Room for request framing beyond `max_batch_size` in a frame.
const FRAME_HEADROOM: u64 = 1 << 20;

/// What every Kafka connection shares.
pub struct Broker {
    /// The server's shared state (storage, tiering, settings, shutdown).
    pub state: Arc<AppState>,
    /// Partitions and the advertised address.
    pub topology: Topology,
    /// Largest request frame accepted.
    pub max_frame: u64,
    /// Consumer group membership.
    pub coordinator: Coordinator,
    /// Copies an `acks=all` produce needs, the leader's included.
    pub min_insync_replicas: usize,
}

impl Broker {
    /// A broker for `state` advertising `topology`.
    #[must_use]
    pub fn new(state: Arc<AppState>, topology: Topology) -> Self {
        let max_frame = state
            .config
            .startup
            .limits
            .max_batch_size
            .saturating_add(FRAME_HEADROOM);
        let min_insync_replicas = state
            .config
            .startup
            .kafka
            .as_ref()
            .map_or(1, |k| k.min_insync_replicas);
        Self {
            state,
            topology,
            max_frame,
            coordinator: Coordinator::default(),
            min_insync_replicas,
        }
    }

    /// Storage, once recovery has finished and until shutdown begins.
    ///
    /// # Errors
    /// `LEADER_NOT_AVAILABLE` (retriable) while recovering or stopping.
    pub fn storage(&self) -> Result<&Arc<Storage>, PartitionError> {
        self.state
            .storage()
            .map_err(|e| PartitionError::from_domain(&e))
    }

    /// The process's offset ⇄ byte position cache.
    #[must_use]
    pub fn positions(&self) -> &Positions {
        &self.state.kafka_positions
    }

    /// A locator over the shared position cache.
    #[must_use]
    pub fn locator(&self) -> Locator<'_> {
        locator(&self.state)
    }
}

/// A locator over `state`'s position cache, reading tiered chunks through
/// its tiering.
#[must_use]
pub fn locator(state: &AppState) -> Locator<'_> {
    let limits = &state.config.startup.limits;
    Locator {
        positions: &state.kafka_positions,
        tiering: state.tiering.get().map(AsRef::as_ref),
        window: limits.max_message_size.max(1 << 20),
    }
}

/// Accepts Kafka connections on `listener` until `token` is cancelled;
/// at most `max_connections` at once (more are closed at once). Each
/// connection runs on `tracker`, which the server waits on before it
/// closes storage. With `tls`, connections speak TLS only.
pub async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
    tracker: TaskTracker,
    token: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let ticker = Arc::clone(&broker);
    let stop = token.clone();
    tracker.spawn(async move {
        let mut every = tokio::time::interval(COORDINATOR_TICK);
        loop {
            tokio::select! {
                _ = every.tick() => ticker.coordinator.tick(),
                () = stop.cancelled() => break,
            }
        }
    });
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kafka accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, max_connections, "kafka connection over the limit: closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let broker = Arc::clone(&broker);
        let tls = tls.clone();
        tracker.spawn(async move {
            let _permit = permit;
            match tls {
                None => conn::serve(broker, stream, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(
                        crate::tls::HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => conn::serve(broker, s, peer).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "kafka TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "kafka TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// The advertised `(host, port)`: `--kafka-advertise`, else the bound
/// address.
#[must_use]
pub fn advertised(bound: SocketAddr, advertise: Option<&(String, u16)>) -> (String, u16) {
    match advertise {
        Some((h, p)) => (h.clone(), *p),
        None => {
            if bound.ip().is_unspecified() {
                tracing::warn!(%bound, "--kafka-listen is a wildcard address: set --kafka-advertise to the address clients should use");
            }
            (bound.ip().to_string(), bound.port())
        }
    }
}
