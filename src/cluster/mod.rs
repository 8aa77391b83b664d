//! The cluster: static peers, pull replication of every peer's own chunks,
//! `min_sync_replicas` waits, crash pull-back and cluster-wide acks.
//!
//! - [`peers`]: the `--peers` list.
//! - [`placement`]: which servers hold a (category, owner) pair's copies
//!   under a replication factor (rendezvous hashing, pure).
//! - [`assignment`]: the placement's inputs now (factor, server list).
//! - [`catalog`]: every peer's chunks as announced, held here or not.
//! - [`remote`]: reads of chunks held elsewhere, from their holders.
//! - [`kafka_offsets`]: a Kafka group coordinator's offset questions about
//!   a partition held elsewhere, asked of its holders.
//! - [`listing`]: `listChunks` across the cluster (held here or not).
//! - [`rebalance`]: dropping copies no longer assigned here, once their
//!   holders have them.
//! - [`throttle`]: the bound on catch-up copying (`rebalance_rate`).
//! - [`protocol`]: peer messages and the fetch-reply codec (`docs/peers.md`).
//! - [`link`]: HTTP client for peer requests.
//! - [`replicator`]: replica side, one task per peer.
//! - [`fetch`]: one fetch of a peer's chunk bytes and their append to the
//!   local copy (replicator and pull-back).
//! - [`progress`]: owner side, what replicas hold; `min_sync_replicas` waits.
//! - [`replicas`]: reachable holders of own chunks, the wait for `K` of
//!   them (HTTP writes and Kafka `acks=all`), peers' Kafka addresses.
//! - [`held`]: replicas' reports checked against what the owner wrote.
//! - [`recovery`]: pull-back of own bytes from replicas after a crash.
//! - [`acks`]: acks of peers' chunks still to forward to their owner.
//! - [`group_sync`]: replication of consumer-group positions.
//! - [`error`]: the cluster's typed errors.

pub mod acks;
pub mod assignment;
pub mod catalog;
pub mod error;
pub mod fetch;
pub mod group_sync;
pub mod held;
pub mod kafka_offsets;
pub mod link;
pub mod listing;
pub mod peers;
pub mod placement;
pub mod progress;
pub mod protocol;
pub mod rebalance;
pub mod recovery;
pub mod remote;
pub mod replicas;
pub mod replicator;
pub mod throttle;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::Method;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

pub use error::{BlockingError, ClusterError, ReplicationError};
pub use peers::Peer;

use crate::groups::GroupStore;
use crate::names::ServerName;
use crate::storage::{Storage, StorageError};
use acks::{PendingAck, PendingAcks};
use link::{q, PeerClient, PeerError};
use replicator::{LinkState, Replicator};

/// How often acks waiting for an unreachable owner are retried.
const ACK_RETRY: Duration = Duration::from_secs(1);
/// Deadline of a forwarded ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// This server's view of the cluster.
#[derive(Debug)]
pub struct Cluster {
    me: ServerName,
    /// The peers now (the config file may change them while running).
    peers: RwLock<Vec<Peer>>,
    /// Identifies this process run in the change feed (a restart changes it).
    epoch: u64,
    client: PeerClient,
    /// What replicas hold of this server's chunks.
    pub progress: progress::Progress,
    /// Who holds which (category, owner) pair.
    pub assignment: Arc<assignment::Assignment>,
    /// Every peer's chunks as announced, held here or not.
    pub catalog: Arc<catalog::Catalog>,
    /// Paces catch-up copying of sealed chunks.
    pub throttle: Arc<throttle::Throttle>,
    /// Progress of placement changes (excess copies, drops).
    pub rebalance: rebalance::Progress,
    /// Consumer-group events of this server's clients, for peers.
    pub group_feed: group_sync::GroupFeed,
    /// Per peer: this server's replication of that peer's chunks.
    links: RwLock<BTreeMap<String, Arc<Mutex<LinkState>>>>,
    pending: Arc<PendingAcks>,
    /// What replicators need, set by [`Cluster::start`].
    running: OnceLock<Running>,
    /// The replicator task of each peer, stoppable one by one.
    replicators: Mutex<BTreeMap<String, RunningReplicator>>,
    /// This server's advertised Kafka address (`replicas.rs`).
    kafka: OnceLock<protocol::KafkaAddr>,
}

#[derive(Debug)]
struct Running {
    storage: Arc<Storage>,
    groups: Arc<GroupStore>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct RunningReplicator {
    peer: Peer,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// How forwarding an ack to a chunk's owner went.
#[derive(Debug)]
pub enum Forwarded {
    /// The owner deleted the chunk.
    Applied,
    /// The owner is unreachable; the ack is stored and retried.
    Queued,
}

impl Cluster {
    /// A cluster view for `me` with `peers`, sending `token` (the peer
    /// credential) to them, keeping `factor` copies of each chunk (None:
    /// on every server) and copying sealed chunks at most at
    /// `rebalance_rate` bytes per second; loads pending acks from
    /// `state_dir`.
    ///
    /// # Errors
    /// [`ClusterError::PendingAcks`]: the pending-acks file is unreadable;
    /// [`ClusterError::Tls`]: the peer client cannot be built.
    pub fn new(
        me: ServerName,
        peers: Vec<Peer>,
        state_dir: &std::path::Path,
        token: Option<&crate::auth::Token>,
        tls: Option<rustls::ClientConfig>,
        factor: Option<usize>,
        rebalance_rate: Option<u64>,
    ) -> Result<Self, ClusterError> {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(1))
            ^ u64::from(std::process::id());
        let links = peers
            .iter()
            .map(|p| (p.name.to_string(), Arc::default()))
            .collect();
        let names: Vec<ServerName> = peers.iter().map(|p| p.name.clone()).collect();
        Ok(Self {
            assignment: Arc::new(assignment::Assignment::new(me.clone(), &names, factor)),
            catalog: Arc::default(),
            throttle: Arc::new(throttle::Throttle::new(rebalance_rate)),
            rebalance: rebalance::Progress::default(),
            me,
            peers: RwLock::new(peers),
            epoch: epoch.max(1),
            client: PeerClient::new(token, tls)?,
            progress: progress::Progress::default(),
            group_feed: group_sync::GroupFeed::default(),
            links: RwLock::new(links),
            pending: Arc::new(PendingAcks::open(state_dir)?),
            running: OnceLock::new(),
            replicators: Mutex::new(BTreeMap::new()),
            kafka: OnceLock::new(),
        })
    }

    /// The token this server sends to its peers (`peer_token`, else
    /// `token`; replaced on reload).
    #[must_use]
    pub fn peer_auth(&self) -> link::PeerAuth {
        self.client.auth().clone()
    }

    /// This server's name.
    #[must_use]
    pub fn me(&self) -> &ServerName {
        &self.me
    }

    /// The configured peers (now).
    #[must_use]
    pub fn peers(&self) -> Vec<Peer> {
        self.peers.read().clone()
    }

    /// How many peers are configured now (no copy of the list).
    #[must_use]
    pub fn peer_count(&self) -> usize {
        self.peers.read().len()
    }

    /// Whether `name` is a configured peer now.
    #[must_use]
    pub fn is_peer(&self, name: &ServerName) -> bool {
        self.peers.read().iter().any(|p| &p.name == name)
    }

    /// This process run's epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Replication state of each peer link.
    #[must_use]
    pub fn links(&self) -> Vec<(String, LinkState)> {
        self.links
            .read()
            .iter()
            .map(|(n, l)| (n.clone(), l.lock().clone()))
            .collect()
    }

    /// Acks waiting for their owner.
    #[must_use]
    pub fn pending_acks(&self) -> Vec<PendingAck> {
        self.pending.list()
    }

    /// Pulls back own bytes from replicas after a crash, then seals (see
    /// [`recovery`]).
    pub async fn recover(&self, storage: &Arc<Storage>, limit: Duration) -> u64 {
        let peers = self.peers();
        recovery::pull_back(storage, &self.me, &peers, &self.client, limit).await
    }

    /// Starts one replicator per peer and the ack forwarder (whose handle
    /// is returned; [`Cluster::stop_replicators`] waits for the
    /// replicators).
    pub fn start(
        self: &Arc<Self>,
        storage: &Arc<Storage>,
        groups: &Arc<GroupStore>,
        stop: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let _ = self.running.set(Running {
            storage: Arc::clone(storage),
            groups: Arc::clone(groups),
            stop: stop.child_token(),
        });
        for peer in self.peers() {
            self.start_replicator(peer);
        }
        let me = Arc::clone(self);
        let stop_acks = stop.child_token();
        let forwarder = tokio::spawn(async move { me.forward_pending(stop_acks).await });
        let me = Arc::clone(self);
        let stop = stop.child_token();
        let dropper = tokio::spawn(async move { me.drop_excess_copies(stop).await });
        vec![forwarder, dropper]
    }

    fn start_replicator(&self, peer: Peer) {
        let Some(run) = self.running.get() else {
            return;
        };
        let link = Arc::clone(self.links.write().entry(peer.name.to_string()).or_default());
        let local = replicator::Local {
            me: self.me.clone(),
            storage: Arc::clone(&run.storage),
            groups: Arc::clone(&run.groups),
            client: self.client.clone(),
            pending: Arc::clone(&self.pending),
            assignment: Arc::clone(&self.assignment),
            catalog: Arc::clone(&self.catalog),
            throttle: Arc::clone(&self.throttle),
        };
        let stop = run.stop.child_token();
        let r = Replicator::new(peer.clone(), local, link, stop.clone());
        let task = tokio::spawn(r.run());
        self.replicators.lock().insert(
            peer.name.to_string(),
            RunningReplicator { peer, stop, task },
        );
    }

    /// Replaces the peer list while running (config reload): replicators of
    /// removed peers stop, those of new peers start, and a peer whose URL
    /// changed is reconnected. Returns whether anything changed.
    pub fn set_peers(&self, peers: Vec<Peer>) -> bool {
        if *self.peers.read() == peers {
            return false;
        }
        *self.peers.write() = peers.clone();
        let names: Vec<ServerName> = peers.iter().map(|p| p.name.clone()).collect();
        if self.assignment.set_peers(&names) {
            tracing::info!(
                servers = names.len() + 1,
                "server list changed: placement recomputed"
            );
        }
        let stale: Vec<RunningReplicator> = {
            let mut running = self.replicators.lock();
            let gone: Vec<String> = running
                .iter()
                .filter(|(_, r)| !peers.contains(&r.peer))
                .map(|(n, _)| n.clone())
                .collect();
            gone.iter().filter_map(|n| running.remove(n)).collect()
        };
        for r in stale {
            tracing::info!(peer = %r.peer.name, url = %r.peer.url, "peer removed or changed: stopping its replication");
            r.stop.cancel();
            if !peers.iter().any(|p| p.name == r.peer.name) {
                self.links.write().remove(r.peer.name.as_str());
            }
        }
        for peer in peers {
            let known = self
                .replicators
                .lock()
                .get(peer.name.as_str())
                .is_some_and(|r| r.peer == peer);
            if !known {
                tracing::info!(peer = %peer.name, url = %peer.url, "peer added: replicating from it");
                self.start_replicator(peer);
            }
        }
        true
    }

    /// Stops every replicator and waits for them (shutdown).
    pub async fn stop_replicators(&self) {
        let all: Vec<RunningReplicator> = std::mem::take(&mut *self.replicators.lock())
            .into_values()
            .collect();
        for r in all {
            r.stop.cancel();
            let _ = r.task.await;
        }
    }

    /// The peer called `name`, if configured now.
    #[must_use]
    pub fn peer(&self, name: &str) -> Option<Peer> {
        self.peers
            .read()
            .iter()
            .find(|p| p.name.as_str() == name)
            .cloned()
    }

    /// The HTTP client peer requests go through.
    #[must_use]
    pub fn client(&self) -> &PeerClient {
        &self.client
    }

    fn owner_of(&self, chunk: &crate::names::ChunkName) -> Option<Peer> {
        self.peers
            .read()
            .iter()
            .find(|p| &p.name == chunk.owner())
            .cloned()
    }

    /// Sends a chukcha ack of a peer's chunk to its owner. An unreachable
    /// owner gets it later: it is stored and retried.
    ///
    /// # Errors
    /// [`ClusterError::AckRefused`]: the owner refused it (its status and
    /// message); [`ClusterError::PendingAcks`]: the ack could not be stored
    /// for later; [`ClusterError::Peer`]: the owner's answer was unusable.
    pub async fn forward_ack(&self, ack: PendingAck) -> Result<Forwarded, ClusterError> {
        let Some(owner) = crate::names::ChunkName::parse(&ack.chunk)
            .ok()
            .and_then(|n| self.owner_of(&n))
        else {
            // Not a configured peer's chunk: nobody else to tell.
            return Ok(Forwarded::Applied);
        };
        match self.send_ack(&owner, &ack).await {
            Ok(()) => Ok(Forwarded::Applied),
            Err(PeerError::Unreachable { .. }) => {
                self.pending.add(ack)?;
                Ok(Forwarded::Queued)
            }
            Err(PeerError::Status { status, body, .. }) => Err(ClusterError::AckRefused {
                owner: owner.name.to_string(),
                status: status.as_u16(),
                body,
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn send_ack(&self, owner: &Peer, ack: &PendingAck) -> Result<(), PeerError> {
        let url = format!(
            "{}{}?category={}&chunk={}&size={}&from={}",
            owner.url,
            protocol::ACK_PATH,
            q(&ack.category),
            q(&ack.chunk),
            ack.size,
            q(self.me.as_str()),
        );
        self.client
            .request(
                owner.name.as_str(),
                Method::POST,
                &url,
                bytes::Bytes::new(),
                ACK_TIMEOUT,
            )
            .await
            .map(|_| ())
    }

    /// Takes back the deletion mark of a copy whose ack its owner refused.
    fn forget_deleted(&self, category: &str, chunk: &str) {
        let (Some(run), Ok(cat), Ok(name)) = (
            self.running.get(),
            crate::names::Category::parse(category),
            crate::names::ChunkName::parse(chunk),
        ) else {
            return;
        };
        if let Some(log) = run.storage.category(&cat) {
            log.forget_deleted_copy(&name);
        }
    }

    async fn forward_pending(&self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(ACK_RETRY) => {}
            }
            for ack in self.pending.list() {
                let Some(owner) = crate::names::ChunkName::parse(&ack.chunk)
                    .ok()
                    .and_then(|n| self.owner_of(&n))
                else {
                    self.pending.remove(&ack.category, &ack.chunk);
                    continue;
                };
                match self.send_ack(&owner, &ack).await {
                    Ok(()) => {
                        tracing::info!(owner = %owner.name, chunk = %ack.chunk, "forwarded a stored ack to the chunk's owner");
                        self.pending.remove(&ack.category, &ack.chunk);
                    }
                    Err(PeerError::Unreachable { .. }) => {}
                    Err(e) => {
                        tracing::warn!(owner = %owner.name, chunk = %ack.chunk, error = %e, "owner refused a stored ack; dropping it");
                        self.pending.remove(&ack.category, &ack.chunk);
                        // The chunk still exists at its owner: no longer
                        // say "deleted" for it here.
                        self.forget_deleted(&ack.category, &ack.chunk);
                    }
                }
            }
        }
    }
}

/// Runs blocking storage work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, BlockingError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(BlockingError::Join(e)),
    }
}
