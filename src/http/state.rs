//! [`AppState`]: what every connection shares (settings, storage and the
//! services set up during startup), with accessors that say why a service
//! is not available yet ([`ServiceError`]).
//!
//! Never routes requests or reads bodies.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use super::budget::BodyBudget;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::{DomainError, ErrorKind};
use crate::groups::GroupStore;
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::subscriptions::Subscriptions;
use crate::tier::Tiering;

/// State shared by all connections.
#[derive(Debug)]
pub struct AppState {
    /// Validated settings.
    pub config: Arc<Config>,
    /// Set once startup recovery has finished; until then requests get 503.
    pub storage: OnceLock<Arc<Storage>>,
    /// Set as soon as storage is open, before crash pull-back, so peers
    /// recovering at the same time can pull from this server.
    pub peer_storage: OnceLock<Arc<Storage>>,
    /// The cluster (peers configured); set with `peer_storage`.
    pub cluster: OnceLock<Arc<Cluster>>,
    /// Tiering (when configured); set before `storage`.
    pub tiering: OnceLock<Arc<Tiering>>,
    /// Consumer group positions; set together with `storage`.
    pub groups: OnceLock<Arc<GroupStore>>,
    /// Push subscriptions; set together with `storage`.
    pub subscriptions: OnceLock<Arc<Subscriptions>>,
    /// Request counters for `/metrics`.
    pub metrics: Metrics,
    /// Cancelled when shutdown starts: long polls return, writes get 503.
    pub shutdown: CancellationToken,
    /// Bytes of request bodies that may be held in memory at once, across
    /// all connections, charged as they arrive (see
    /// [`super::body_budget_bytes`]).
    pub body_budget: BodyBudget,
    /// Settings that change on config reload (token, retention, tiering
    /// thresholds).
    pub live: Arc<crate::reload::Live>,
    /// Kafka offset ⇄ byte position points of recently mapped chunks
    /// (bounded, all recomputable), shared by the Kafka listener and
    /// `GET /peer/kafka/offsets`.
    pub kafka_positions: crate::kafka::locate::Positions,
}

/// A service a request needs is not there (yet, or at all).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Startup recovery has not finished.
    #[error("server is recovering its data; retry shortly")]
    Recovering,
    /// Storage is not open yet (peer endpoints).
    #[error("server is opening its data; retry shortly")]
    Opening,
    /// Shutdown has begun (client endpoints).
    #[error("server is shutting down; retry on another server or after restart")]
    ShuttingDown,
    /// Shutdown has begun (peer endpoints).
    #[error("server is shutting down")]
    Stopping,
    /// A connection beyond `max_connections` (answered, then closed).
    #[error("server is at its connection limit (max_connections={max}); retry shortly or on another server")]
    ConnectionLimit {
        /// The limit.
        max: usize,
    },
    /// A peer endpoint on a server without peers.
    #[error("this server has no peers (--peers is not set)")]
    NoPeers,
    /// A tiered chunk on a server without tiering (a bug or a config
    /// change).
    #[error("chunk is tiered but tiering is not configured on this server")]
    TieringOff,
    /// A JSON answer could not be encoded.
    #[error("encoding JSON failed")]
    EncodeJson(#[source] serde_json::Error),
    /// Work handed to the blocking pool panicked or was cancelled.
    #[error("{what} did not finish (see the server log)")]
    TaskFailed {
        /// What the task did.
        what: &'static str,
        /// Why it ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl DomainError for ServiceError {
    /// Not ready or stopping is `Unavailable`, no peers `NotFound`, the
    /// rest `Internal`.
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Recovering
            | Self::Opening
            | Self::ShuttingDown
            | Self::Stopping
            | Self::ConnectionLimit { .. } => ErrorKind::Unavailable,
            Self::NoPeers => ErrorKind::NotFound,
            Self::TieringOff | Self::EncodeJson(_) | Self::TaskFailed { .. } => ErrorKind::Internal,
        }
    }
}

impl AppState {
    /// State for a server that is still recovering.
    #[must_use]
    pub fn new(config: Arc<Config>, shutdown: CancellationToken) -> Self {
        let body_budget = super::intake::budget_for(config.startup.limits.max_batch_size);
        Self {
            live: Arc::new(crate::reload::Live::new(&config.live)),
            config,
            storage: OnceLock::new(),
            peer_storage: OnceLock::new(),
            cluster: OnceLock::new(),
            tiering: OnceLock::new(),
            groups: OnceLock::new(),
            subscriptions: OnceLock::new(),
            metrics: Metrics::default(),
            shutdown,
            body_budget,
            kafka_positions: crate::kafka::locate::Positions::default(),
        }
    }

    pub(super) fn groups(&self) -> Result<&Arc<GroupStore>, ServiceError> {
        self.storage()?;
        self.groups.get().ok_or(ServiceError::Recovering)
    }

    pub(super) fn subscriptions(&self) -> Result<&Arc<Subscriptions>, ServiceError> {
        self.storage()?;
        self.subscriptions.get().ok_or(ServiceError::Recovering)
    }

    pub(super) fn cluster(&self) -> Result<&Arc<Cluster>, ServiceError> {
        self.cluster.get().ok_or(ServiceError::NoPeers)
    }

    pub(super) fn tiering(&self) -> Result<&Arc<Tiering>, ServiceError> {
        self.tiering.get().ok_or(ServiceError::TieringOff)
    }

    pub(super) fn peer_storage(&self) -> Result<&Arc<Storage>, ServiceError> {
        if self.shutdown.is_cancelled() {
            return Err(ServiceError::Stopping);
        }
        self.peer_storage.get().ok_or(ServiceError::Opening)
    }

    pub(crate) fn storage(&self) -> Result<&Arc<Storage>, ServiceError> {
        if self.shutdown.is_cancelled() {
            return Err(ServiceError::ShuttingDown);
        }
        self.storage.get().ok_or(ServiceError::Recovering)
    }
}
