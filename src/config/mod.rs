//! Settings: command-line flags, `CHUNKBUS_*` environment variables and a
//! TOML file (`--config`), merged in that order of precedence, then
//! validated into [`Config`]. Defaults are the `make run` defaults.
//!
//! # Layout
//! - [`settings`]: the one definition of every setting (key, flag,
//!   environment variable, help, default, live or restart-only).
//! - [`raw`]: [`RawSettings`], the settings as text: clap flags and
//!   environment built from the definitions, and the TOML file merge.
//! - [`parse`]: value parsers (sizes, durations, booleans, modes).
//! - `validate`: [`RawSettings::validate`], text → typed [`Config`].
//! - [`sections`]: the typed [`Config`] = [`Startup`] + [`LiveSettings`].
//!
//! This module never touches files other than the config file, and never
//! depends on the server's runtime parts (storage, HTTP, reload).

pub mod parse;
pub mod raw;
pub mod sections;
pub mod settings;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

pub use parse::{parse_append_mode, parse_bool, parse_duration, parse_size};
pub use raw::RawSettings;
pub use sections::{
    AppendMode, Config, ConnectionLimits, KafkaListen, Limits, LiveSettings, MaxConnections,
    RetentionConfig, RetentionMode, Startup, StorageConfig, TlsFiles,
};

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
}

#[cfg(test)]
mod tests {
    use super::settings::{self, Applies, ALL};
    use super::*;

    #[test]
    fn defaults_and_file_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "max_chunk_size = \"1MiB\"\nflush_interval = \"200ms\"\nfsync_every_write = true\nname = \"filenode\"\n").unwrap();
        let raw = RawSettings::default()
            .with_config_file(file)
            .with(&settings::NAME, "flagnode");
        let cfg = raw.merge_file().unwrap().validate().unwrap();
        let cfg = &cfg.startup;
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
        let err = RawSettings::default()
            .with_config_file(file)
            .merge_file()
            .unwrap_err();
        assert!(err.to_string().contains("unknown setting"), "{err}");
    }

    #[test]
    fn message_larger_than_batch_is_rejected() {
        let raw = RawSettings::default()
            .with(&settings::MAX_MESSAGE_SIZE, "2MiB")
            .with(&settings::MAX_BATCH_SIZE, "1MiB");
        assert!(raw.validate().is_err());
    }

    #[test]
    fn built_in_defaults() {
        let d = Config::defaults();
        assert_eq!(d.startup.storage.max_chunk_size, 64 << 20);
        assert_eq!(
            d.startup.storage.chunk_rotate_interval,
            Duration::from_secs(600)
        );
        assert_eq!(
            d.startup.limits,
            Limits {
                max_message_size: 1 << 20,
                max_batch_size: 4 << 20
            }
        );
        assert_eq!(d.startup.replication_timeout, Duration::from_secs(60));
        assert_eq!(d.startup.data_dir, PathBuf::from("./data"));
        assert!(d.startup.tier.is_none() && d.live.token.is_none() && d.live.peers.is_empty());
        assert_eq!(d.live.log_level, "info");
    }

    #[test]
    fn connection_limits_parse_and_default() {
        let d = Config::defaults().startup.connections;
        assert_eq!(d.max_connections, MaxConnections::Auto);
        assert_eq!(d.body_idle_timeout, Duration::from_secs(5));
        let c = RawSettings::default()
            .with(&settings::MAX_CONNECTIONS, "50")
            .with(&settings::BODY_IDLE_TIMEOUT, "1500ms")
            .validate()
            .unwrap()
            .startup
            .connections;
        assert_eq!(c.max_connections, MaxConnections::Fixed(50));
        assert_eq!(c.body_idle_timeout, Duration::from_millis(1500));
        for (s, v) in [
            (&settings::MAX_CONNECTIONS, "0"),
            (&settings::MAX_CONNECTIONS, "many"),
            (&settings::MAX_CONNECTIONS, "1000001"),
            (&settings::BODY_IDLE_TIMEOUT, "0s"),
            (&settings::BODY_IDLE_TIMEOUT, "soon"),
        ] {
            let err = RawSettings::default().with(s, v).validate().unwrap_err();
            assert!(err.to_string().contains(s.key), "{err}");
        }
    }

    #[test]
    fn secrets_are_not_echoed_in_errors() {
        let err = RawSettings::default()
            .with(&settings::TOKEN, "has space")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("token") && !err.contains("has space"), "{err}");
    }

    #[test]
    fn numbers_ignore_whitespace_names_and_secrets_do_not() {
        let c = RawSettings::default()
            .with(&settings::MAX_CHUNK_SIZE, " 1MiB ")
            .with(&settings::FSYNC_EVERY_WRITE, "true\n")
            .validate()
            .unwrap();
        assert_eq!(c.startup.storage.max_chunk_size, 1 << 20);
        assert!(c.startup.storage.fsync_every_write);
        for (s, v) in [
            (&settings::TOKEN, "abc "),
            (&settings::NAME, " n1"),
            (&settings::LISTEN, "127.0.0.1:1 "),
        ] {
            let err = RawSettings::default().with(s, v).validate().unwrap_err();
            assert!(err.to_string().contains(s.key), "{err}");
        }
    }

    /// A config using every setting, so that each one matters.
    fn everything_on() -> RawSettings {
        [
            (&settings::PEERS, "n2=http://127.0.0.1:8082"),
            (&settings::TOKEN, "t0"),
            (&settings::TLS_CERT, "cert.pem"),
            (&settings::TLS_KEY, "key.pem"),
            (&settings::TLS_CA, "ca.pem"),
            (&settings::TIER_AFTER, "1h"),
            (&settings::LOCAL_BYTES_BUDGET, "1GiB"),
            (&settings::TIER_DIR, "/tmp/tier"),
            (&settings::S3_BUCKET, "bucket"),
            (&settings::S3_ENDPOINT, "http://127.0.0.1:9000"),
            (&settings::S3_PREFIX, "p"),
            (&settings::S3_ACCESS_KEY_ID, "AKID"),
            (&settings::S3_SECRET_ACCESS_KEY, "secret"),
            (&settings::RETENTION_HOURS, "48"),
            (&settings::RETENTION_BYTES, "1GiB"),
            (&settings::KAFKA_LISTEN, "127.0.0.1:19092"),
            (
                &settings::ENCRYPTION_KEY,
                "1111111111111111111111111111111111111111111111111111111111111111",
            ),
            (
                &settings::ENCRYPTION_OLD_KEYS,
                "4444444444444444444444444444444444444444444444444444444444444444",
            ),
        ]
        .into_iter()
        .fold(RawSettings::default(), |raw, (s, v)| raw.with(s, v))
    }

    /// `Debug` of the settings as given and as validated (with the S3
    /// settings, keys and tokens inside) never shows a secret: every secret
    /// setting is set to its example value, and none appears in the output.
    #[test]
    fn debug_output_never_shows_a_secret() {
        let secrets: Vec<&settings::Setting> = ALL.iter().copied().filter(|s| s.secret).collect();
        let raw = secrets
            .iter()
            .fold(everything_on(), |raw, s| raw.with(s, s.example));
        let cfg = raw.clone().validate().unwrap();
        // The secrets are really in there (so this test can fail).
        assert_eq!(
            cfg.live.token.as_ref().unwrap().as_str(),
            settings::TOKEN.example
        );
        assert_eq!(
            cfg.live.peer_token.as_ref().unwrap().as_str(),
            settings::PEER_TOKEN.example
        );
        let s3 = cfg.startup.tier.as_ref().unwrap().s3.as_ref().unwrap();
        assert_eq!(
            s3.credentials.as_ref().unwrap().1,
            settings::S3_SECRET_ACCESS_KEY.example
        );
        let tier = cfg.startup.tier.as_ref().unwrap();
        for text in [
            format!("{raw:?}"),
            format!("{raw:#?}"),
            format!("{cfg:?}"),
            format!("{cfg:#?}"),
            format!("{:?}", cfg.live),
            format!("{tier:?}"),
            format!("{s3:?}"),
        ] {
            for s in &secrets {
                assert!(!text.contains(s.example), "{} shown: {text}", s.key);
            }
            assert!(
                text.contains("redacted") || text.contains("Token(..)"),
                "{text}"
            );
        }
    }

    #[test]
    fn peer_token_must_differ_from_the_client_token() {
        let err = RawSettings::default()
            .with(&settings::TOKEN, "same-token")
            .with(&settings::PEER_TOKEN, "same-token")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("peer_token") && !err.contains("same-token"),
            "{err}"
        );
        let cfg = RawSettings::default()
            .with(&settings::TOKEN, "client")
            .with(&settings::PEER_TOKEN, "peer")
            .validate()
            .unwrap();
        assert_eq!(cfg.live.peer_credential().unwrap().as_str(), "peer");
        let cfg = RawSettings::default()
            .with(&settings::TOKEN, "client")
            .validate()
            .unwrap();
        assert_eq!(cfg.live.peer_credential().unwrap().as_str(), "client");
    }

    #[test]
    fn kafka_min_insync_replicas_is_a_count_and_needs_the_listener() {
        let kafka = |v: Option<&str>| {
            let raw = RawSettings::default().with(&settings::KAFKA_LISTEN, "127.0.0.1:0");
            match v {
                Some(v) => raw.with(&settings::KAFKA_MIN_INSYNC_REPLICAS, v),
                None => raw,
            }
            .validate()
            .map(|c| c.startup.kafka.unwrap().min_insync_replicas)
        };
        assert_eq!(kafka(None).unwrap(), 1);
        assert_eq!(kafka(Some("3")).unwrap(), 3);
        assert!(kafka(Some("0")).is_err());
        assert!(kafka(Some("x")).is_err());
        let err = RawSettings::default()
            .with(&settings::KAFKA_MIN_INSYNC_REPLICAS, "2")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs --kafka-listen"), "{err}");
    }

    /// The definition's live/restart flag matches where validation puts
    /// the value: changing a live setting changes only `Config::live`, a
    /// restart-only one only `Config::startup`.
    #[test]
    fn live_and_restart_split_matches_the_definitions() {
        let base = everything_on();
        let before = base.clone().validate().unwrap();
        for s in ALL {
            let after = base
                .clone()
                .with(s, s.example)
                .validate()
                .unwrap_or_else(|e| {
                    panic!("example of {}: {e}", s.key);
                });
            let (startup, live) = (before.startup != after.startup, before.live != after.live);
            match s.applies {
                Applies::Live => assert!(live && !startup, "{} is live", s.key),
                Applies::Restart => assert!(startup && !live, "{} is restart-only", s.key),
            }
        }
    }
}
