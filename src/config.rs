//! Settings: command-line flags, `CHUNKBUS_*` environment variables and a
//! TOML file (`--config`), merged in that order of precedence, then
//! validated into [`Config`]. Defaults are the `make run` defaults.
//!
//! Raw input stays strings until [`RawSettings::validate`], which is the only
//! place that parses sizes (`256KiB`) and durations (`500ms`) and reports
//! errors naming the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::names::ServerName;

/// Largest `max_size` a `/read` accepts (SPEC: 16 MiB).
pub const MAX_READ_SIZE: u64 = 16 << 20;
/// Longest `wait_ms` a `/read` accepts (SPEC: 60000).
pub const MAX_WAIT_MS: u64 = 60_000;
/// How long in-flight requests may take after SIGTERM (SPEC: 5 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A setting could not be used; the message names it and what is allowed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value did not parse.
    #[error("invalid {key} {value:?}: {why}")]
    Invalid {
        /// Setting name (TOML key).
        key: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        why: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys.
    #[error("config file {}: {why}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A setting this version cannot honour yet.
    #[error("{key} is set, but {what} is not available in this version of chunkbus")]
    Unsupported {
        /// Setting name.
        key: &'static str,
        /// The feature.
        what: &'static str,
    },
}

/// Raw `serve` settings as given on the command line or in the environment.
/// Every field is optional; unset ones come from the config file, then the
/// defaults listed in each help text.
#[derive(Debug, Clone, Default, Args)]
#[command(
    next_help_heading = "Settings (flag > CHUNKBUS_<KEY> environment > --config file > default)"
)]
pub struct RawSettings {
    /// TOML config file; keys are the flag names with `_` for `-`.
    #[arg(long, env = "CHUNKBUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on for HTTP. Default = 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, env = "CHUNKBUS_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory for chunks and state; created if missing. Default = ./data
    #[arg(long, env = "CHUNKBUS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<String>,
    /// This server's name, unique in the cluster, [A-Za-z0-9_-]{1,64}. Default = node1
    #[arg(long, env = "CHUNKBUS_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Other servers of the cluster, name=url,... Default = none (single node).
    #[arg(long, env = "CHUNKBUS_PEERS", value_name = "LIST")]
    pub peers: Option<String>,
    /// Seal a chunk when the next body would not fit. Bytes, or KiB/MiB/GiB. Default = 64MiB
    #[arg(long, env = "CHUNKBUS_MAX_CHUNK_SIZE", value_name = "SIZE")]
    pub max_chunk_size: Option<String>,
    /// Seal a non-empty chunk this long after its first write. ms/s/m/h. Default = 10m
    #[arg(long, env = "CHUNKBUS_CHUNK_ROTATE_INTERVAL", value_name = "DURATION")]
    pub chunk_rotate_interval: Option<String>,
    /// Background fdatasync period: bounds what a machine crash can lose. ms/s/m/h. Default = 1s
    #[arg(long, env = "CHUNKBUS_FLUSH_INTERVAL", value_name = "DURATION")]
    pub flush_interval: Option<String>,
    /// Treat every write as sync=1 (group-committed fdatasync before the reply). Default = false
    #[arg(long, env = "CHUNKBUS_FSYNC_EVERY_WRITE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub fsync_every_write: Option<String>,
    /// Largest message, newline included. Bytes, or KiB/MiB/GiB. Default = 1MiB
    #[arg(long, env = "CHUNKBUS_MAX_MESSAGE_SIZE", value_name = "SIZE")]
    pub max_message_size: Option<String>,
    /// Largest /write body. Bytes, or KiB/MiB/GiB (at most 1GiB). Default = 4MiB
    #[arg(long, env = "CHUNKBUS_MAX_BATCH_SIZE", value_name = "SIZE")]
    pub max_batch_size: Option<String>,
    /// How appends reach chunk files: write (pwrite into the page cache) or mmap (store through the mapping). Default = write
    #[arg(long, env = "CHUNKBUS_APPEND_MODE", value_name = "MODE")]
    pub append_mode: Option<String>,
    /// How long a write with min_sync_replicas waits before 503. ms/s/m/h. Default = 60s
    #[arg(long, env = "CHUNKBUS_REPLICATION_TIMEOUT", value_name = "DURATION")]
    pub replication_timeout: Option<String>,
    /// none (keep chunks until acked with GET /ack) or acked (also delete a sealed chunk once every registered consumer group has acked all of it). Default = none
    #[arg(long, env = "CHUNKBUS_RETENTION", value_name = "MODE")]
    pub retention: Option<String>,
    /// Delete sealed chunks last written longer ago than this many hours (acked or not). Default = unset (keep)
    #[arg(long, env = "CHUNKBUS_RETENTION_HOURS", value_name = "HOURS")]
    pub retention_hours: Option<String>,
    /// Per category: delete the oldest sealed chunks while the category holds more than this. Bytes, or KiB/MiB/GiB. Default = unset (keep)
    #[arg(long, env = "CHUNKBUS_RETENTION_BYTES", value_name = "SIZE")]
    pub retention_bytes: Option<String>,
    /// Bearer token required on every endpoint but /healthz (clients send Authorization: Bearer <token>; peers send it too). Default = unset (no auth)
    #[arg(
        long,
        env = "CHUNKBUS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or tracing directives like info,chunkbus::cluster=debug (CHUNKBUS_LOG, if set, overrides it at start). Default = info
    #[arg(long, env = "CHUNKBUS_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// PEM certificate chain: with --tls-key, the listener speaks HTTPS only (rustls, TLS 1.2/1.3). Default = unset (plain HTTP)
    #[arg(long, env = "CHUNKBUS_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert. Default = unset
    #[arg(long, env = "CHUNKBUS_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,
    /// PEM CA certificates that https:// peers are verified against (required for https:// peers). Default = unset
    #[arg(long, env = "CHUNKBUS_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<String>,
    /// Tier (upload to the object store, then remove locally) own sealed chunks older than this. ms/s/m/h. Default = unset (tiering off unless local_bytes_budget is set)
    #[arg(long, env = "CHUNKBUS_TIER_AFTER", value_name = "DURATION")]
    pub tier_after: Option<String>,
    /// Tier the oldest own sealed chunks while local chunk bytes exceed this. Bytes, or KiB/MiB/GiB. Default = unset
    #[arg(long, env = "CHUNKBUS_LOCAL_BYTES_BUDGET", value_name = "SIZE")]
    pub local_bytes_budget: Option<String>,
    /// Directory of the local object store, used when --s3-bucket is not set. Default = <data_dir>/.chunkbus/tier
    #[arg(long, env = "CHUNKBUS_TIER_DIR", value_name = "DIR")]
    pub tier_dir: Option<String>,
    /// S3 endpoint URL, e.g. http://127.0.0.1:9000. Default = AWS's endpoint for the region
    #[arg(long, env = "CHUNKBUS_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 bucket; tiered objects go to S3 when set. Default = unset (local tier dir)
    #[arg(long, env = "CHUNKBUS_S3_BUCKET", value_name = "BUCKET")]
    pub s3_bucket: Option<String>,
    /// Key prefix of tiered objects (<prefix>/<category>/<chunk>). Default = empty
    #[arg(long, env = "CHUNKBUS_S3_PREFIX", value_name = "PREFIX")]
    pub s3_prefix: Option<String>,
    /// S3 region. Default = us-east-1
    #[arg(long, env = "CHUNKBUS_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Path-style S3 addressing (most S3-compatible servers need it). Default = false
    #[arg(long, env = "CHUNKBUS_S3_PATH_STYLE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub s3_path_style: Option<String>,
    /// S3 access key id (with --s3-secret-access-key). Default = AWS_ACCESS_KEY_ID or the AWS profile file
    #[arg(long, env = "CHUNKBUS_S3_ACCESS_KEY_ID", value_name = "ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key. Default = AWS_SECRET_ACCESS_KEY or the AWS profile file
    #[arg(
        long,
        env = "CHUNKBUS_S3_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<String>,
    /// Master key encrypting tiered objects: 64 hex digits or base64:<32 bytes>. Required when tiering is on. Default = unset
    #[arg(
        long,
        env = "CHUNKBUS_ENCRYPTION_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub encryption_key: Option<String>,
    /// Earlier master keys (comma separated), still used to read objects written before a rotation. Default = none
    #[arg(
        long,
        env = "CHUNKBUS_ENCRYPTION_OLD_KEYS",
        value_name = "KEYS",
        hide_env_values = true
    )]
    pub encryption_old_keys: Option<String>,
    /// zstd level of tiered objects (1-19). Default = 1
    #[arg(long, env = "CHUNKBUS_TIER_COMPRESSION_LEVEL", value_name = "LEVEL")]
    pub tier_compression_level: Option<String>,
    /// Memory for decoded frames of tiered chunks (re-reads are served from it). Bytes, or KiB/MiB/GiB. Default = 256MiB
    #[arg(long, env = "CHUNKBUS_TIER_CACHE_BYTES", value_name = "SIZE")]
    pub tier_cache_bytes: Option<String>,
    /// Uploads running at once. Default = 2
    #[arg(long, env = "CHUNKBUS_TIER_CONCURRENCY", value_name = "N")]
    pub tier_concurrency: Option<String>,
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
    /// `retention`. Default = none.
    pub mode: RetentionMode,
    /// `retention_hours`: age bound of sealed chunks. Default = unset.
    pub max_age: Option<Duration>,
    /// `retention_bytes`: size bound per category. Default = unset.
    pub max_bytes: Option<u64>,
}

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Chunk capacity in bytes. Default = 64 MiB.
    pub max_chunk_size: u64,
    /// Age (from first write) after which a non-empty chunk is sealed. Default = 10 min.
    pub chunk_rotate_interval: Duration,
    /// Period of the background fdatasync. Default = 1 s.
    pub flush_interval: Duration,
    /// Every write waits for a group-committed fdatasync. Default = false.
    pub fsync_every_write: bool,
    /// How appended bytes reach the chunk file. Default = write.
    pub append_mode: AppendMode,
    /// Peers are configured: own chunks left open by a crash wait for the
    /// pull-back from replicas before sealing, and deletions of own chunks
    /// are logged as tombstones for replicas. Default = false.
    pub cluster: bool,
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

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            max_chunk_size: 64 << 20,
            chunk_rotate_interval: Duration::from_secs(600),
            flush_interval: Duration::from_secs(1),
            fsync_every_write: false,
            cluster: false,
            append_mode: AppendMode::Write,
        }
    }
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message in bytes, newline included. Default = 1 MiB.
    pub max_message_size: u64,
    /// Largest write body in bytes. Default = 4 MiB.
    pub max_batch_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 1 << 20,
            max_batch_size: 4 << 20,
        }
    }
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address. Default = 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Data directory. Default = ./data.
    pub data_dir: PathBuf,
    /// This server's name. Default = node1.
    pub name: ServerName,
    /// Storage settings.
    pub storage: StorageConfig,
    /// Request limits.
    pub limits: Limits,
    /// `min_sync_replicas` wait limit. Default = 60 s.
    pub replication_timeout: Duration,
    /// Retention of sealed chunks.
    pub retention: RetentionConfig,
    /// The other servers of the cluster. Default = none (single node).
    pub peers: Vec<crate::cluster::Peer>,
    /// Tiering to an object store; None = off (the default).
    pub tier: Option<TierConfig>,
    /// Bearer token required on every endpoint but `/healthz`; None = no auth.
    pub token: Option<Token>,
    /// Certificate and key of an HTTPS listener; None = plain HTTP.
    pub tls: Option<TlsFiles>,
    /// CA certificates `https://` peers are verified against.
    pub tls_ca: Option<PathBuf>,
    /// Log filter (tracing `EnvFilter` syntax). Default = info.
    pub log_level: String,
}

/// PEM files of the HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// A bearer token (its `Debug` never shows it).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Validates a token: 1–4096 visible ASCII characters.
    ///
    /// # Errors
    /// What is allowed (the value is not echoed).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 4096 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("expected 1-4096 visible ASCII characters (no spaces)".into());
        }
        Ok(Self(s.to_owned()))
    }

    /// The token text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Tiering settings (on when `tier_after` or `local_bytes_budget` is set).
#[derive(Debug, Clone)]
pub struct TierConfig {
    /// Tier own sealed chunks older than this.
    pub tier_after: Option<Duration>,
    /// Tier the oldest own sealed chunks while local bytes exceed this.
    pub local_bytes_budget: Option<u64>,
    /// Local object store directory (when `s3` is None).
    pub dir: PathBuf,
    /// S3 store, when `--s3-bucket` is set.
    pub s3: Option<crate::tier::store::S3Settings>,
    /// Current and old encryption keys.
    pub keys: crate::tier::keys::KeyRing,
    /// zstd level. Default = 1.
    pub level: i32,
    /// Plaintext bytes per frame. Default = 1 MiB.
    pub frame_size: u32,
    /// Decoded-frame cache bound. Default = 256 MiB.
    pub cache_bytes: usize,
    /// Concurrent uploads. Default = 2.
    pub concurrency: usize,
}

impl TierConfig {
    /// Whether `other` uses the same store, keys and encoding (everything
    /// but the thresholds, which can change while running).
    #[must_use]
    pub fn same_store_and_keys(&self, other: &Self) -> bool {
        self.dir == other.dir
            && self.s3 == other.s3
            && self.keys.ids() == other.keys.ids()
            && self.level == other.level
            && self.frame_size == other.frame_size
            && self.cache_bytes == other.cache_bytes
            && self.concurrency == other.concurrency
    }
}

impl Config {
    /// The defaults (what `make run` uses), with a given data dir and listen address.
    #[must_use]
    pub fn with_dir(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            listen,
            data_dir,
            name: ServerName::parse("node1").unwrap_or_else(|_| unreachable!("valid literal")),
            storage: StorageConfig::default(),
            limits: Limits::default(),
            replication_timeout: Duration::from_secs(60),
            retention: RetentionConfig::default(),
            peers: Vec::new(),
            tier: None,
            token: None,
            tls: None,
            tls_ca: None,
            log_level: "info".to_owned(),
        }
    }
}

const FILE_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "name",
    "peers",
    "max_chunk_size",
    "chunk_rotate_interval",
    "flush_interval",
    "fsync_every_write",
    "max_message_size",
    "max_batch_size",
    "replication_timeout",
    "append_mode",
    "retention",
    "retention_hours",
    "retention_bytes",
    "token",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "log_level",
    "tier_after",
    "local_bytes_budget",
    "tier_dir",
    "s3_endpoint",
    "s3_bucket",
    "s3_prefix",
    "s3_region",
    "s3_path_style",
    "s3_access_key_id",
    "s3_secret_access_key",
    "encryption_key",
    "encryption_old_keys",
    "tier_compression_level",
    "tier_cache_bytes",
    "tier_concurrency",
];

impl RawSettings {
    /// Fills unset fields from the `--config` TOML file, if one was given.
    ///
    /// # Errors
    /// The file is unreadable, not TOML, or has unknown keys or bad types.
    pub fn merge_file(mut self) -> Result<Self, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File {
                path: path.clone(),
                why: e.to_string().replace('\n', " "),
            })?;
        for (key, value) in table {
            if !FILE_KEYS.contains(&key.as_str()) {
                return Err(ConfigError::File {
                    path,
                    why: format!(
                        "unknown setting {key:?}; known settings: {}",
                        FILE_KEYS.join(", ")
                    ),
                });
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::File {
                        path,
                        why: format!(
                            "setting {key:?} must be a string, integer or boolean, not {}",
                            other.type_str()
                        ),
                    })
                }
            };
            let slot = match key.as_str() {
                "listen" => &mut self.listen,
                "data_dir" => &mut self.data_dir,
                "name" => &mut self.name,
                "peers" => &mut self.peers,
                "max_chunk_size" => &mut self.max_chunk_size,
                "chunk_rotate_interval" => &mut self.chunk_rotate_interval,
                "flush_interval" => &mut self.flush_interval,
                "fsync_every_write" => &mut self.fsync_every_write,
                "max_message_size" => &mut self.max_message_size,
                "max_batch_size" => &mut self.max_batch_size,
                "append_mode" => &mut self.append_mode,
                "retention" => &mut self.retention,
                "retention_hours" => &mut self.retention_hours,
                "retention_bytes" => &mut self.retention_bytes,
                "token" => &mut self.token,
                "tls_cert" => &mut self.tls_cert,
                "tls_key" => &mut self.tls_key,
                "tls_ca" => &mut self.tls_ca,
                "log_level" => &mut self.log_level,
                "tier_after" => &mut self.tier_after,
                "local_bytes_budget" => &mut self.local_bytes_budget,
                "tier_dir" => &mut self.tier_dir,
                "s3_endpoint" => &mut self.s3_endpoint,
                "s3_bucket" => &mut self.s3_bucket,
                "s3_prefix" => &mut self.s3_prefix,
                "s3_region" => &mut self.s3_region,
                "s3_path_style" => &mut self.s3_path_style,
                "s3_access_key_id" => &mut self.s3_access_key_id,
                "s3_secret_access_key" => &mut self.s3_secret_access_key,
                "encryption_key" => &mut self.encryption_key,
                "encryption_old_keys" => &mut self.encryption_old_keys,
                "tier_compression_level" => &mut self.tier_compression_level,
                "tier_cache_bytes" => &mut self.tier_cache_bytes,
                "tier_concurrency" => &mut self.tier_concurrency,
                _ => &mut self.replication_timeout,
            };
            if slot.is_none() {
                *slot = Some(text);
            }
        }
        Ok(self)
    }

    /// Parses and checks every setting, applying defaults.
    ///
    /// # Errors
    /// The first invalid or unsupported setting.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let d = Config::with_dir(
            PathBuf::from("./data"),
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        );
        let data_dir = self
            .data_dir
            .clone()
            .map_or(d.data_dir.clone(), PathBuf::from);
        let tier = self.tier_config(&data_dir)?;
        let token = self
            .token
            .as_deref()
            .map(|t| {
                Token::parse(t).map_err(|why| ConfigError::Invalid {
                    key: "token",
                    value: "(hidden)".into(),
                    why,
                })
            })
            .transpose()?;
        let listen = match self.listen {
            None => d.listen,
            Some(v) => v
                .parse()
                .map_err(|_| invalid("listen", &v, "expected IP:PORT, e.g. 127.0.0.1:8080"))?,
        };
        let name = match self.name {
            None => d.name,
            Some(v) => ServerName::parse(&v).map_err(|e| invalid("name", &v, &e.to_string()))?,
        };
        let peers = match &self.peers {
            None => Vec::new(),
            Some(v) => crate::cluster::peers::parse_peers(v, &name)
                .map_err(|why| invalid("peers", v, &why))?,
        };
        let storage = StorageConfig {
            cluster: !peers.is_empty(),
            max_chunk_size: opt(
                self.max_chunk_size,
                "max_chunk_size",
                d.storage.max_chunk_size,
                parse_size,
            )?,
            chunk_rotate_interval: opt(
                self.chunk_rotate_interval,
                "chunk_rotate_interval",
                d.storage.chunk_rotate_interval,
                parse_duration,
            )?,
            flush_interval: opt(
                self.flush_interval,
                "flush_interval",
                d.storage.flush_interval,
                parse_duration,
            )?,
            fsync_every_write: opt(
                self.fsync_every_write,
                "fsync_every_write",
                false,
                parse_bool,
            )?,
            append_mode: opt(
                self.append_mode,
                "append_mode",
                AppendMode::Write,
                parse_append_mode,
            )?,
        };
        let max_batch_size = opt(
            self.max_batch_size,
            "max_batch_size",
            d.limits.max_batch_size,
            parse_size,
        )?;
        // Unset, the message limit follows a smaller batch limit down.
        let limits = Limits {
            max_message_size: opt(
                self.max_message_size,
                "max_message_size",
                d.limits.max_message_size.min(max_batch_size),
                parse_size,
            )?,
            max_batch_size,
        };
        let replication_timeout = opt(
            self.replication_timeout,
            "replication_timeout",
            d.replication_timeout,
            parse_duration,
        )?;
        check_range("max_chunk_size", storage.max_chunk_size, 4096, 64 << 30)?;
        check_range("max_batch_size", limits.max_batch_size, 1, 1 << 30)?;
        check_range(
            "max_message_size",
            limits.max_message_size,
            1,
            limits.max_batch_size,
        )?;
        for (key, v) in [
            ("chunk_rotate_interval", storage.chunk_rotate_interval),
            ("flush_interval", storage.flush_interval),
            ("replication_timeout", replication_timeout),
        ] {
            if v.is_zero() {
                return Err(invalid(key, "0", "must be longer than 0"));
            }
        }
        let retention = RetentionConfig {
            mode: opt(
                self.retention,
                "retention",
                RetentionMode::None,
                parse_retention_mode,
            )?,
            max_age: self
                .retention_hours
                .map(|v| parse_hours(v.trim()).map_err(|why| invalid("retention_hours", &v, &why)))
                .transpose()?,
            max_bytes: self
                .retention_bytes
                .map(|v| parse_size(v.trim()).map_err(|why| invalid("retention_bytes", &v, &why)))
                .transpose()?,
        };
        if retention.max_bytes == Some(0) {
            return Err(invalid("retention_bytes", "0", "must be more than 0"));
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            }),
            (Some(_), None) => {
                return Err(invalid("tls_key", "", "tls_cert is set: give tls_key too"))
            }
            (None, Some(_)) => {
                return Err(invalid("tls_cert", "", "tls_key is set: give tls_cert too"))
            }
        };
        let log_level = self
            .log_level
            .clone()
            .unwrap_or_else(|| d.log_level.clone());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(invalid("log_level", &log_level, &e.to_string()));
        }
        let tls_ca = self.tls_ca.clone().map(PathBuf::from);
        if tls_ca.is_none() {
            if let Some(p) = peers.iter().find(|p| p.url.starts_with("https://")) {
                return Err(invalid(
                    "tls_ca",
                    "",
                    &format!(
                        "peer {} is https:// ({}): give the CA certificates its certificate is verified against",
                        p.name, p.url
                    ),
                ));
            }
        }
        Ok(Config {
            listen,
            data_dir,
            name,
            storage,
            limits,
            replication_timeout,
            retention,
            peers,
            tier,
            token,
            tls,
            tls_ca,
            log_level,
        })
    }

    /// The tiering settings, or None when neither `tier_after` nor
    /// `local_bytes_budget` is set.
    fn tier_config(&self, data_dir: &std::path::Path) -> Result<Option<TierConfig>, ConfigError> {
        let tier_after = self
            .tier_after
            .as_deref()
            .map(|v| parse_duration(v.trim()).map_err(|why| invalid("tier_after", v, &why)))
            .transpose()?;
        let local_bytes_budget = self
            .local_bytes_budget
            .as_deref()
            .map(|v| parse_size(v.trim()).map_err(|why| invalid("local_bytes_budget", v, &why)))
            .transpose()?;
        if tier_after.is_none() && local_bytes_budget.is_none() {
            return Ok(None);
        }
        let key = self.encryption_key.as_deref().ok_or(ConfigError::Invalid {
            key: "encryption_key",
            value: String::new(),
            why: "tiering is on (tier_after or local_bytes_budget is set) and needs --encryption-key or CHUNKBUS_ENCRYPTION_KEY".into(),
        })?;
        let secret = |key: &'static str, why: String| ConfigError::Invalid {
            key,
            value: "(hidden)".into(),
            why,
        };
        let current = crate::tier::keys::Keys::parse(key)
            .map_err(|why| secret("encryption_key", why.to_string()))?;
        let old = self
            .encryption_old_keys
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|k| !k.trim().is_empty())
            .map(|k| {
                crate::tier::keys::Keys::parse(k)
                    .map_err(|why| secret("encryption_old_keys", why.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let s3 = match self.s3_bucket.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(bucket) => {
                let credentials = match (&self.s3_access_key_id, &self.s3_secret_access_key) {
                    (Some(a), Some(k)) => Some((a.clone(), k.clone())),
                    (None, None) => None,
                    _ => {
                        return Err(invalid(
                            "s3_access_key_id",
                            "",
                            "give both s3_access_key_id and s3_secret_access_key, or neither",
                        ))
                    }
                };
                if let Some(e) = &self.s3_endpoint {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        return Err(invalid(
                            "s3_endpoint",
                            e,
                            "expected an http:// or https:// URL",
                        ));
                    }
                }
                Some(crate::tier::store::S3Settings {
                    endpoint: self.s3_endpoint.clone().filter(|e| !e.trim().is_empty()),
                    region: self.s3_region.clone().unwrap_or_else(|| "us-east-1".into()),
                    bucket: bucket.to_owned(),
                    prefix: self
                        .s3_prefix
                        .clone()
                        .unwrap_or_default()
                        .trim_matches('/')
                        .to_owned(),
                    path_style: opt(
                        self.s3_path_style.clone(),
                        "s3_path_style",
                        false,
                        parse_bool,
                    )?,
                    credentials,
                })
            }
        };
        let level = match &self.tier_compression_level {
            None => 1,
            Some(v) => v
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|l| (1..=19).contains(l))
                .ok_or_else(|| invalid("tier_compression_level", v, "expected 1 to 19"))?,
        };
        let concurrency = match &self.tier_concurrency {
            None => 2,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| invalid("tier_concurrency", v, "expected 1 to 64"))?,
        };
        let cache_bytes = opt(
            self.tier_cache_bytes.clone(),
            "tier_cache_bytes",
            256 << 20,
            parse_size,
        )?;
        Ok(Some(TierConfig {
            tier_after,
            local_bytes_budget,
            dir: self
                .tier_dir
                .as_ref()
                .map_or_else(|| data_dir.join(".chunkbus").join("tier"), PathBuf::from),
            s3,
            keys: crate::tier::keys::KeyRing::new(current, old),
            level,
            frame_size: crate::tier::format::DEFAULT_FRAME_SIZE,
            cache_bytes: usize::try_from(cache_bytes).unwrap_or(usize::MAX),
            concurrency,
        }))
    }
}

fn invalid(key: &'static str, value: &str, why: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_owned(),
        why: why.to_owned(),
    }
}

fn opt<T>(
    v: Option<String>,
    key: &'static str,
    default: T,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse(s.trim()).map_err(|why| invalid(key, &s, &why)),
    }
}

fn check_range(key: &'static str, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if v < min || v > max {
        return Err(invalid(
            key,
            &v.to_string(),
            &format!("must be between {min} and {max} bytes"),
        ));
    }
    Ok(())
}

fn parse_retention_mode(s: &str) -> Result<RetentionMode, String> {
    match s {
        "none" => Ok(RetentionMode::None),
        "acked" => Ok(RetentionMode::Acked),
        _ => Err("expected none or acked".into()),
    }
}

/// Parses a positive number of hours (`24`, `0.5`).
fn parse_hours(s: &str) -> Result<Duration, String> {
    let h: f64 = s
        .parse()
        .map_err(|_| "expected a number of hours, e.g. 24 or 0.5".to_owned())?;
    if !(h > 0.0 && h <= 1e6) {
        return Err("must be more than 0 and at most 1000000 hours".into());
    }
    Ok(Duration::from_secs_f64(h * 3600.0))
}

/// Parses `4194304`, `256KiB`, `1MiB`, `2GiB` into bytes.
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let why =
        || "expected bytes or a number with KiB, MiB or GiB, e.g. 4194304 or 256KiB".to_string();
    let (num, mult) = if let Some(n) = s.strip_suffix("KiB") {
        (n, 1u64 << 10)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("GiB") {
        (n, 1 << 30)
    } else {
        (s, 1)
    };
    let n = parse_digits(num.trim()).ok_or_else(why)?;
    n.checked_mul(mult).ok_or_else(why)
}

/// Parses `500ms`, `1s`, `10m`, `2h`.
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let why = || "expected a number with ms, s, m or h, e.g. 500ms, 1s, 10m".to_string();
    let (num, ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1u64)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        return Err(why());
    };
    let n = parse_digits(num.trim()).ok_or_else(why)?;
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(why)
}

/// Parses `write|mmap`.
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_append_mode(s: &str) -> Result<AppendMode, String> {
    match s {
        "write" => Ok(AppendMode::Write),
        "mmap" => Ok(AppendMode::Mmap),
        _ => Err("expected write or mmap".into()),
    }
}

/// Parses `true|false|1|0`.
///
/// # Errors
/// A message saying what is allowed.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true, false, 1 or 0".into()),
    }
}

fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4194304"), Ok(4_194_304));
        assert_eq!(parse_size("256KiB"), Ok(256 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in ["", "-1", "1KB", "1.5MiB", "MiB", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "5", "1d", "s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_file_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "max_chunk_size = \"1MiB\"\nflush_interval = \"200ms\"\nfsync_every_write = true\nname = \"filenode\"\n").unwrap();
        let raw = RawSettings {
            config: Some(file),
            name: Some("flagnode".into()),
            ..RawSettings::default()
        };
        let cfg = raw.merge_file().unwrap().validate().unwrap();
        assert_eq!(cfg.name.as_str(), "flagnode");
        assert_eq!(cfg.storage.max_chunk_size, 1 << 20);
        assert_eq!(cfg.storage.flush_interval, Duration::from_millis(200));
        assert!(cfg.storage.fsync_every_write);
        assert_eq!(cfg.limits.max_batch_size, 4 << 20);
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn file_with_unknown_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "max_chunk_sise = 5\n").unwrap();
        let err = RawSettings {
            config: Some(file),
            ..RawSettings::default()
        }
        .merge_file()
        .unwrap_err();
        assert!(err.to_string().contains("unknown setting"), "{err}");
    }

    #[test]
    fn message_larger_than_batch_is_rejected() {
        let raw = RawSettings {
            max_message_size: Some("2MiB".into()),
            max_batch_size: Some("1MiB".into()),
            ..RawSettings::default()
        };
        assert!(raw.validate().is_err());
    }
}
