//! The one definition of every `serve` setting.
//!
//! Each entry of [`ALL`] drives everything else about its setting: the
//! `--flag` and its `--help` text and default (see [`super::raw`]), the
//! `CHUNKBUS_<KEY>` environment variable, the TOML key (unknown keys are
//! refused), and whether an edit of the config file applies live or needs a
//! restart ([`Applies`], used by `crate::reload`). Adding a setting means one
//! entry here plus its typed field in [`super::sections`] and one line in
//! [`super::validate`]; the unit tests fail until those agree.
//!
//! This module holds data only: it never parses values.

/// When an edit of the setting in the `--config` file takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// At once (the running value is replaced).
    Live,
    /// After a restart (the running value is kept and a warning logged).
    Restart,
}

/// A setting's value when none is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// This text, parsed as if it had been given.
    Value(&'static str),
    /// No value; the text says what that means (shown in `--help`).
    Unset(&'static str),
}

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// TOML key; the flag is `--<key with - for _>`, the environment
    /// variable `CHUNKBUS_<KEY>`.
    pub key: &'static str,
    /// Placeholder in `--help` (`SIZE`, `DURATION`, …).
    pub value_name: &'static str,
    /// What it does (one or two sentences; `--help` appends the default).
    pub help: &'static str,
    /// The `--help` section, also named in reload warnings.
    pub section: &'static str,
    /// Default.
    pub default: DefaultValue,
    /// Live or restart-only.
    pub applies: Applies,
    /// Never shown: not in `--help` environment values nor in errors.
    pub secret: bool,
    /// A boolean: `--flag` alone means `true`.
    pub switch: bool,
    /// A valid value different from the default (docs and the tests that
    /// check the live/restart split).
    pub example: &'static str,
}

impl Setting {
    /// The command-line flag without its leading `--`.
    #[must_use]
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// The environment variable.
    #[must_use]
    pub fn env(&self) -> String {
        format!("CHUNKBUS_{}", self.key.to_ascii_uppercase())
    }

    /// `--help` text: the description, the default and whether it reloads.
    #[must_use]
    pub fn help_text(&self) -> String {
        let default = match self.default {
            DefaultValue::Value(v) | DefaultValue::Unset(v) => v,
        };
        let live = match self.applies {
            Applies::Live => " Reloads live from --config.",
            Applies::Restart => "",
        };
        format!("{}{live} Default = {default}", self.help)
    }
}

const SERVER: &str = "server";
const STORAGE: &str = "storage";
const LIMITS: &str = "message and batch limits";
const CLUSTER: &str = "cluster";
const RETENTION: &str = "retention";
const TLS: &str = "TLS";
const TIERING: &str = "tiering";
const SUBSCRIPTIONS: &str = "push subscriptions";
const KAFKA: &str = "Kafka protocol";

/// Fields an entry of [`settings!`] does not name.
const BASE: Setting = Setting {
    key: "",
    value_name: "",
    help: "",
    section: SERVER,
    default: DefaultValue::Unset("unset"),
    applies: Applies::Restart,
    secret: false,
    switch: false,
    example: "",
};

/// Defines one `pub const` per setting and [`ALL`], listing each once.
macro_rules! settings {
    ($( $id:ident = $key:literal { $($field:ident : $value:expr),* $(,)? } )*) => {
        $(
            #[doc = concat!("The `", $key, "` setting.")]
            pub const $id: Setting = Setting { key: $key, $($field: $value,)* ..BASE };
        )*
        /// Every setting, in `--help` order.
        pub const ALL: &[&Setting] = &[$(&$id),*];
    };
}

use DefaultValue::{Unset, Value};

settings! {
    LISTEN = "listen" {
        value_name: "ADDR",
        help: "Address to listen on for HTTP (port 0 picks a free port).",
        default: Value("127.0.0.1:8080"),
        example: "127.0.0.1:9090",
    }
    DATA_DIR = "data_dir" {
        value_name: "DIR",
        help: "Directory for chunks and state; created if missing.",
        default: Value("./data"),
        example: "/var/lib/chunkbus",
    }
    NAME = "name" {
        value_name: "NAME",
        help: "This server's name, unique in the cluster, [A-Za-z0-9_-]{1,64}.",
        default: Value("node1"),
        example: "node7",
    }
    TOKEN = "token" {
        value_name: "TOKEN",
        help: "Bearer token required on every endpoint but /healthz (clients send Authorization: Bearer <token>; peers send it too).",
        default: Unset("unset (no auth)"),
        applies: Applies::Live,
        secret: true,
        example: "s3cret-token",
    }
    ALLOWED_HOSTS = "allowed_hosts" {
        value_name: "HOSTS",
        help: "Host names or addresses (comma separated, no port) the HTTP listener answers besides localhost, 127.0.0.0/8, [::1] and names without dots, against DNS rebinding. Unset, the Host header is checked only when --listen is a loopback address; set, on every listener (list every name clients and peers use).",
        default: Unset("unset (loopback names only, checked on a loopback listener)"),
        example: "broker.internal",
    }
    LOG_LEVEL = "log_level" {
        value_name: "FILTER",
        help: "Log filter: error, warn, info, debug, trace, or tracing directives like info,chunkbus::cluster=debug (CHUNKBUS_LOG, if set, overrides it at start).",
        default: Value("info"),
        applies: Applies::Live,
        example: "debug",
    }
    MAX_CHUNK_SIZE = "max_chunk_size" {
        value_name: "SIZE",
        help: "Seal a chunk when the next body would not fit. Bytes, or KiB/MiB/GiB.",
        section: STORAGE,
        default: Value("64MiB"),
        example: "16MiB",
    }
    CHUNK_ROTATE_INTERVAL = "chunk_rotate_interval" {
        value_name: "DURATION",
        help: "Seal a non-empty chunk this long after its first write. ms/s/m/h.",
        section: STORAGE,
        default: Value("10m"),
        example: "1h",
    }
    FLUSH_INTERVAL = "flush_interval" {
        value_name: "DURATION",
        help: "Background fdatasync period: bounds what a machine crash can lose. ms/s/m/h.",
        section: STORAGE,
        default: Value("1s"),
        example: "200ms",
    }
    FSYNC_EVERY_WRITE = "fsync_every_write" {
        value_name: "BOOL",
        help: "Treat every write as sync=1 (group-committed fdatasync before the reply).",
        section: STORAGE,
        default: Value("false"),
        switch: true,
        example: "true",
    }
    APPEND_MODE = "append_mode" {
        value_name: "MODE",
        help: "How appends reach chunk files: write (pwrite into the page cache) or mmap (store through the mapping).",
        section: STORAGE,
        default: Value("write"),
        example: "mmap",
    }
    MAX_CATEGORIES = "max_categories" {
        value_name: "N",
        help: "Most categories this server holds: a write that would create one more gets 409 and stores nothing (copies of peers' categories are never refused, and count).",
        section: STORAGE,
        default: Value("100000"),
        example: "1000",
    }
    MAX_OPEN_CHUNKS = "max_open_chunks" {
        value_name: "N",
        help: "Chunks kept open (an open chunk: 2 file descriptors and a mapping, 4 with a busy category's spare; a chunk being read: a mapping); the least recently used, and any idle for 60s, are closed and reopened on their next write or read.",
        section: STORAGE,
        default: Value("1024"),
        example: "256",
    }
    MAX_MESSAGE_SIZE = "max_message_size" {
        value_name: "SIZE",
        help: "Largest message, newline included. Bytes, or KiB/MiB/GiB.",
        section: LIMITS,
        default: Value("1MiB"),
        example: "64KiB",
    }
    MAX_BATCH_SIZE = "max_batch_size" {
        value_name: "SIZE",
        help: "Largest /write body. Bytes, or KiB/MiB/GiB (at most 1GiB).",
        section: LIMITS,
        default: Value("4MiB"),
        example: "8MiB",
    }
    BODY_IDLE_TIMEOUT = "body_idle_timeout" {
        value_name: "DURATION",
        help: "A request body (write, subscription, peer poll) that sends no byte for this long is answered 408 and its connection closed; it holds no memory before its bytes arrive. ms/s/m/h.",
        section: LIMITS,
        default: Value("5s"),
        example: "30s",
    }
    MAX_CONNECTIONS = "max_connections" {
        value_name: "N",
        help: "Connections served at once (clients and peers). A connection beyond it gets one answer, 503 (GET /healthz is answered as usual), and is closed. auto = half the open-file limit, which is raised to its hard limit at start, at most 65536.",
        default: Value("auto"),
        example: "5000",
    }
    PEERS = "peers" {
        value_name: "LIST",
        help: "Other servers of the cluster, name=url,... (a single node stays one until restarted, and vice versa).",
        section: CLUSTER,
        default: Unset("none (single node)"),
        applies: Applies::Live,
        example: "n3=http://127.0.0.1:8083",
    }
    PEER_TOKEN = "peer_token" {
        value_name: "TOKEN",
        help: "Bearer token of the peer endpoints (/peer/*): when set, they take only this token (the client token gets 401) and servers send it to their peers; give every server of the cluster the same one, different from --token. Unset, peers use --token, so any client holding it could act as a peer.",
        section: CLUSTER,
        default: Unset("unset (peers use --token)"),
        applies: Applies::Live,
        secret: true,
        example: "peer-s3cret",
    }
    REPLICATION_TIMEOUT = "replication_timeout" {
        value_name: "DURATION",
        help: "How long a write with min_sync_replicas waits before 503. ms/s/m/h.",
        section: CLUSTER,
        default: Value("60s"),
        example: "5s",
    }
    REPLICATION_FACTOR = "replication_factor" {
        value_name: "R",
        help: "Copies of each chunk, the owner's included: each (category, owner) pair is copied only to the R-1 peers that rendezvous hashing over the server list picks (docs/peers.md); every server still lists every chunk and answers reads of chunks it does not hold from a holder. min_sync_replicas may be at most R-1.",
        section: CLUSTER,
        default: Unset("every server (each server copies every peer's chunks)"),
        example: "2",
    }
    REBALANCE_RATE = "rebalance_rate" {
        value_name: "SIZE",
        help: "Bytes per second this server copies of sealed chunks it lacks (a placement change moving pairs here, catching up after a restart), over all peers; the live tail of open chunks is never slowed. Sizes as for max_chunk_size.",
        section: CLUSTER,
        default: Unset("unbounded"),
        example: "64MiB",
    }
    RETENTION_MODE = "retention" {
        value_name: "MODE",
        help: "none (keep chunks until acked with GET /ack) or acked (also delete a sealed chunk once every registered consumer group has acked all of it).",
        section: RETENTION,
        default: Value("none"),
        applies: Applies::Live,
        example: "acked",
    }
    RETENTION_HOURS = "retention_hours" {
        value_name: "HOURS",
        help: "Delete sealed chunks last written longer ago than this many hours (acked or not).",
        section: RETENTION,
        default: Unset("unset (keep)"),
        applies: Applies::Live,
        example: "24",
    }
    RETENTION_BYTES = "retention_bytes" {
        value_name: "SIZE",
        help: "Per category: delete the oldest sealed chunks while the category holds more than this. Bytes, or KiB/MiB/GiB.",
        section: RETENTION,
        default: Unset("unset (keep)"),
        applies: Applies::Live,
        example: "10GiB",
    }
    KAFKA_LISTEN = "kafka_listen" {
        value_name: "ADDR",
        help: "Address of a Kafka wire-protocol listener next to HTTP (port 0 picks a free port; see docs/kafka.md). TLS and SASL/PLAIN follow --tls-cert and --token.",
        section: KAFKA,
        default: Unset("unset (no Kafka listener)"),
        example: "127.0.0.1:9092",
    }
    KAFKA_ADVERTISE = "kafka_advertise" {
        value_name: "HOST:PORT",
        help: "Address Kafka clients are told to connect to (Metadata, FindCoordinator); needed when --kafka-listen is a wildcard or behind NAT.",
        section: KAFKA,
        default: Unset("unset (the bound --kafka-listen address)"),
        example: "broker1.internal:9092",
    }
    KAFKA_MIN_INSYNC_REPLICAS = "kafka_min_insync_replicas" {
        value_name: "N",
        help: "Copies an acks=all Kafka produce needs, the leader's included (Kafka's min.insync.replicas): N-1 replicas must be reachable before appending (else NOT_ENOUGH_REPLICAS, nothing stored) and must confirm the bytes fdatasync'd within replication_timeout (else NOT_ENOUGH_REPLICAS_AFTER_APPEND, stored). 1 = the leader only.",
        section: KAFKA,
        default: Value("1"),
        example: "2",
    }
    TLS_CERT = "tls_cert" {
        value_name: "FILE",
        help: "PEM certificate chain: with --tls-key, the listener speaks HTTPS only (rustls, TLS 1.2/1.3).",
        section: TLS,
        default: Unset("unset (plain HTTP)"),
        example: "other-cert.pem",
    }
    TLS_KEY = "tls_key" {
        value_name: "FILE",
        help: "PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.",
        section: TLS,
        example: "other-key.pem",
    }
    TLS_CA = "tls_ca" {
        value_name: "FILE",
        help: "PEM CA certificates that https:// peers are verified against (required for https:// peers).",
        section: TLS,
        example: "other-ca.pem",
    }
    WEBHOOK_ALLOW = "webhook_allow" {
        value_name: "LIST",
        help: "Push subscription receivers allowed (comma separated addresses, CIDRs, host names, *.domain); when set, nothing else is. An address or CIDR entry also lifts the default denial of link-local and cloud metadata addresses.",
        section: SUBSCRIPTIONS,
        default: Unset("unset (any receiver but link-local and cloud metadata addresses)"),
        example: "10.0.0.0/8",
    }
    WEBHOOK_DENY = "webhook_deny" {
        value_name: "LIST",
        help: "Push subscription receivers refused (comma separated addresses, CIDRs, host names, *.domain), e.g. 127.0.0.0/8,::1 to refuse loopback. Checked when a subscription is created and against every resolved address at each connect.",
        section: SUBSCRIPTIONS,
        default: Unset("none (loopback and private ranges are allowed)"),
        example: "127.0.0.0/8",
    }
    TIER_AFTER = "tier_after" {
        value_name: "DURATION",
        help: "Tier (upload to the object store, then remove locally) own sealed chunks older than this. ms/s/m/h. Tiering is on when this or local_bytes_budget is set (switching it on or off needs a restart).",
        section: TIERING,
        default: Unset("unset (tiering off unless local_bytes_budget is set)"),
        applies: Applies::Live,
        example: "2h",
    }
    LOCAL_BYTES_BUDGET = "local_bytes_budget" {
        value_name: "SIZE",
        help: "Tier the oldest own sealed chunks while local chunk bytes exceed this. Bytes, or KiB/MiB/GiB.",
        section: TIERING,
        applies: Applies::Live,
        example: "100GiB",
    }
    TIER_DIR = "tier_dir" {
        value_name: "DIR",
        help: "Directory of the local object store, used when --s3-bucket is not set.",
        section: TIERING,
        default: Unset("<data_dir>/.chunkbus/tier"),
        example: "/srv/tier",
    }
    S3_ENDPOINT = "s3_endpoint" {
        value_name: "URL",
        help: "S3 endpoint URL, e.g. http://127.0.0.1:9000.",
        section: TIERING,
        default: Unset("AWS's endpoint for the region"),
        example: "http://127.0.0.1:9001",
    }
    S3_BUCKET = "s3_bucket" {
        value_name: "BUCKET",
        help: "S3 bucket; tiered objects go to S3 when set.",
        section: TIERING,
        default: Unset("unset (local tier dir)"),
        example: "other-bucket",
    }
    S3_PREFIX = "s3_prefix" {
        value_name: "PREFIX",
        help: "Key prefix of tiered objects (<prefix>/<category>/<chunk>).",
        section: TIERING,
        default: Unset("empty"),
        example: "cluster-a",
    }
    S3_REGION = "s3_region" {
        value_name: "REGION",
        help: "S3 region.",
        section: TIERING,
        default: Value("us-east-1"),
        example: "eu-west-1",
    }
    S3_PATH_STYLE = "s3_path_style" {
        value_name: "BOOL",
        help: "Path-style S3 addressing (most S3-compatible servers need it).",
        section: TIERING,
        default: Value("false"),
        switch: true,
        example: "true",
    }
    S3_ACCESS_KEY_ID = "s3_access_key_id" {
        value_name: "ID",
        help: "S3 access key id (with --s3-secret-access-key).",
        section: TIERING,
        default: Unset("AWS_ACCESS_KEY_ID or the AWS profile file"),
        example: "AKIDOTHER",
    }
    S3_SECRET_ACCESS_KEY = "s3_secret_access_key" {
        value_name: "SECRET",
        help: "S3 secret access key.",
        section: TIERING,
        default: Unset("AWS_SECRET_ACCESS_KEY or the AWS profile file"),
        secret: true,
        example: "other-secret",
    }
    ENCRYPTION_KEY = "encryption_key" {
        value_name: "KEY",
        help: "Master key encrypting tiered objects: 64 hex digits or base64:<32 bytes>. Required when tiering is on.",
        section: TIERING,
        secret: true,
        example: "2222222222222222222222222222222222222222222222222222222222222222",
    }
    ENCRYPTION_OLD_KEYS = "encryption_old_keys" {
        value_name: "KEYS",
        help: "Earlier master keys (comma separated), still used to read objects written before a rotation.",
        section: TIERING,
        default: Unset("none"),
        secret: true,
        example: "3333333333333333333333333333333333333333333333333333333333333333",
    }
    TIER_COMPRESSION_LEVEL = "tier_compression_level" {
        value_name: "LEVEL",
        help: "zstd level of tiered objects (1-19).",
        section: TIERING,
        default: Value("1"),
        example: "3",
    }
    TIER_CACHE_BYTES = "tier_cache_bytes" {
        value_name: "SIZE",
        help: "Memory for decoded frames of tiered chunks (re-reads are served from it). Bytes, or KiB/MiB/GiB.",
        section: TIERING,
        default: Value("256MiB"),
        example: "64MiB",
    }
    TIER_CONCURRENCY = "tier_concurrency" {
        value_name: "N",
        help: "Uploads running at once.",
        section: TIERING,
        default: Value("2"),
        example: "4",
    }
}

/// The setting with this TOML key.
#[must_use]
pub fn by_key(key: &str) -> Option<&'static Setting> {
    ALL.iter().copied().find(|s| s.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for s in ALL {
            assert!(seen.insert(s.key), "{} twice", s.key);
            assert!(
                !s.key.is_empty()
                    && s.key
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                s.key
            );
            assert!(!s.value_name.is_empty() && !s.help.is_empty(), "{}", s.key);
            assert!(!s.example.is_empty(), "{} needs an example", s.key);
            assert_ne!(s.default, DefaultValue::Value(s.example), "{}", s.key);
        }
        assert_eq!(MAX_CHUNK_SIZE.flag(), "max-chunk-size");
        assert_eq!(MAX_CHUNK_SIZE.env(), "CHUNKBUS_MAX_CHUNK_SIZE");
        assert_eq!(by_key("retention"), Some(&RETENTION_MODE));
        assert_eq!(by_key("config"), None);
    }

    #[test]
    fn readme_documents_every_setting() {
        let readme = include_str!("../../README.md");
        for s in ALL {
            assert!(
                readme.contains(&format!("`--{}`", s.flag())),
                "README's configuration table lacks --{}",
                s.flag()
            );
        }
    }
}
