//! The validated configuration: [`Config`] = [`Startup`] (fixed while the
//! server runs) + [`LiveSettings`] (replaced when the `--config` file
//! changes). Comparing two configs' halves is how `crate::reload` tells what
//! an edit changed. Sub-configs owned by other modules
//! ([`crate::tier::TierConfig`], [`crate::cluster::Peer`],
//! [`crate::auth::Token`]) are defined there; this module only holds them.
//!
//! No defaults are written here: they come from the setting definitions in
//! [`super::settings`] through [`Config::defaults`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Token;
use crate::cluster::Peer;
use crate::names::ServerName;
use crate::subscriptions::WebhookPolicy;
use crate::tier::{TierConfig, TierThresholds};

/// Validated server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Settings read once at start.
    pub startup: Startup,
    /// Settings that config reload replaces while running.
    pub live: LiveSettings,
}

/// Settings that only take effect at start (a changed value in the config
/// file is reported and ignored until a restart).
#[derive(Debug, Clone, PartialEq)]
pub struct Startup {
    /// HTTP listen address (`listen`).
    pub listen: SocketAddr,
    /// Data directory (`data_dir`).
    pub data_dir: PathBuf,
    /// This server's name (`name`).
    pub name: ServerName,
    /// Storage settings.
    pub storage: StorageConfig,
    /// Request limits.
    pub limits: Limits,
    /// Connection count and request-body idleness bounds.
    pub connections: ConnectionLimits,
    /// `min_sync_replicas` wait limit (`replication_timeout`).
    pub replication_timeout: Duration,
    /// Copies of each chunk including the owner's (`replication_factor`);
    /// None = every server of the cluster.
    pub replication_factor: Option<usize>,
    /// Bytes per second of catch-up copying (`rebalance_rate`); None =
    /// unbounded.
    pub rebalance_rate: Option<u64>,
    /// Certificate and key of an HTTPS listener; None = plain HTTP.
    pub tls: Option<TlsFiles>,
    /// CA certificates `https://` peers are verified against (`tls_ca`).
    pub tls_ca: Option<PathBuf>,
    /// Tiering store, keys and encoding; None = tiering off.
    pub tier: Option<TierConfig>,
    /// Extra `Host` names the HTTP listener answers (`allowed_hosts`:
    /// lower case, no port, IPv6 without brackets); None = only loopback
    /// names, checked only when `listen` is a loopback address.
    pub allowed_hosts: Option<Vec<String>>,
    /// Which receivers push subscriptions may reach (`webhook_allow`,
    /// `webhook_deny`).
    pub webhooks: WebhookPolicy,
    /// The Kafka wire-protocol listener; None = off (`kafka_listen`).
    pub kafka: Option<KafkaListen>,
}

/// Where the Kafka listener binds and what it advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaListen {
    /// Bind address (`kafka_listen`).
    pub listen: SocketAddr,
    /// Host and port given to clients (`kafka_advertise`); None = the
    /// bound address.
    pub advertise: Option<(String, u16)>,
    /// Copies an `acks=all` produce needs, the leader's included
    /// (`kafka_min_insync_replicas`, at least 1).
    pub min_insync_replicas: usize,
}

/// Settings applied while running when the config file changes.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    /// The other servers of the cluster (`peers`); empty = single node.
    /// Whether there are peers at all is fixed at start
    /// ([`StorageConfig::cluster`]).
    pub peers: Vec<Peer>,
    /// Bearer token required on every endpoint but `/healthz`; None = no auth.
    pub token: Option<Token>,
    /// Bearer token of the peer endpoints (`peer_token`); None = peers use
    /// [`LiveSettings::token`].
    pub peer_token: Option<Token>,
    /// Retention of sealed chunks.
    pub retention: RetentionConfig,
    /// When tiering uploads (used only when tiering is on).
    pub tier_thresholds: TierThresholds,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log_level: String,
}

impl LiveSettings {
    /// The token this server sends to its peers and their endpoints
    /// require: `peer_token`, else `token` (None: no auth).
    #[must_use]
    pub fn peer_credential(&self) -> Option<&Token> {
        self.peer_token.as_ref().or(self.token.as_ref())
    }
}

/// What happens to sealed chunks nobody deleted explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetentionMode {
    /// Keep them (until a chukcha `GET /ack`, or the hour/byte bounds).
    #[default]
    None,
    /// Delete a sealed chunk once every registered consumer group of its
    /// category has acked all of it (and refuse chukcha acks before that).
    Acked,
}

/// Retention settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionConfig {
    /// `retention`.
    pub mode: RetentionMode,
    /// `retention_hours`: age bound of sealed chunks; None = keep.
    pub max_age: Option<Duration>,
    /// `retention_bytes`: size bound per category; None = keep.
    pub max_bytes: Option<u64>,
}

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Chunk capacity in bytes (`max_chunk_size`).
    pub max_chunk_size: u64,
    /// Age (from first write) after which a non-empty chunk is sealed
    /// (`chunk_rotate_interval`).
    pub chunk_rotate_interval: Duration,
    /// Period of the background fdatasync (`flush_interval`).
    pub flush_interval: Duration,
    /// Every write waits for a group-committed fdatasync (`fsync_every_write`).
    pub fsync_every_write: bool,
    /// How appended bytes reach the chunk file (`append_mode`).
    pub append_mode: AppendMode,
    /// Most categories a write may create (`max_categories`).
    pub max_categories: usize,
    /// Chunks kept open, files and mappings (`max_open_chunks`).
    pub max_open_chunks: usize,
    /// Peers are configured: own chunks left open by a crash wait for the
    /// pull-back from replicas before sealing, and deletions of own chunks
    /// are logged as tombstones for replicas.
    pub cluster: bool,
}

impl Default for StorageConfig {
    /// The `make run` storage settings.
    fn default() -> Self {
        Config::defaults().startup.storage
    }
}

/// How appends copy bytes into a chunk file. Reads always use the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendMode {
    /// `pwrite(2)` into the page cache (default: measured faster here, see
    /// docs/architecture.md).
    #[default]
    Write,
    /// Stores through the shared `memmap2` mapping.
    Mmap,
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message in bytes, newline included (`max_message_size`).
    pub max_message_size: u64,
    /// Largest write body in bytes (`max_batch_size`).
    pub max_batch_size: u64,
}

impl Default for Limits {
    /// The `make run` limits.
    fn default() -> Self {
        Config::defaults().startup.limits
    }
}

/// Bounds on connections and on clients that stop sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once (`max_connections`).
    pub max_connections: MaxConnections,
    /// Longest pause allowed inside a request body (`body_idle_timeout`).
    pub body_idle_timeout: Duration,
}

/// The `max_connections` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxConnections {
    /// Derived from the open-file limit at start (`auto`; see
    /// `crate::connections`).
    Auto,
    /// This many.
    Fixed(usize),
}

/// PEM files of the HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

impl Config {
    /// The defaults: what `make run` uses.
    #[must_use]
    pub fn defaults() -> Self {
        super::RawSettings::default()
            .validate()
            .unwrap_or_else(|e| unreachable!("the built-in defaults are valid: {e}"))
    }

    /// The defaults with a given data dir and listen address.
    #[must_use]
    pub fn with_dir(data_dir: PathBuf, listen: SocketAddr) -> Self {
        let mut c = Self::defaults();
        c.startup.data_dir = data_dir;
        c.startup.listen = listen;
        c
    }
}
