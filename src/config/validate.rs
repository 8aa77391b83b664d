//! [`RawSettings::validate`]: parses and checks every setting, applying the
//! defaults of [`super::settings`], into a [`Config`]. The only place that
//! turns setting text into typed values; errors name the setting and say
//! what is allowed (secret values are never echoed).

use std::path::{Path, PathBuf};

use super::parse::{
    parse_append_mode, parse_bool, parse_duration, parse_host_list, parse_hours,
    parse_retention_mode, parse_size,
};
use super::sections::{
    Config, ConnectionLimits, KafkaListen, LiveSettings, MaxConnections, RetentionConfig, Startup,
    StorageConfig, TlsFiles,
};
use super::settings::{self as s, DefaultValue, Setting};
use super::{ConfigError, Limits, RawSettings};
use crate::auth::Token;
use crate::names::ServerName;
use crate::subscriptions::WebhookPolicy;
use crate::tier::keys::{KeyRing, Keys};
use crate::tier::store::S3Settings;
use crate::tier::{TierConfig, TierThresholds};

impl RawSettings {
    /// Parses and checks every setting, applying defaults.
    ///
    /// # Errors
    /// The first invalid setting.
    pub fn validate(self) -> Result<Config, ConfigError> {
        // Paths are taken as given (not trimmed).
        let data_dir = PathBuf::from(self.text_or_default(&s::DATA_DIR));
        let name = self.required(&s::NAME, |v| {
            ServerName::parse(v).map_err(|e| e.to_string())
        })?;
        let peers = self
            .optional(&s::PEERS, |v| {
                crate::cluster::peers::parse_peers(v, &name).map_err(|e| e.to_string())
            })?
            .unwrap_or_default();
        let storage = StorageConfig {
            cluster: !peers.is_empty(),
            max_chunk_size: self.required(&s::MAX_CHUNK_SIZE, parse_size)?,
            chunk_rotate_interval: self.required(&s::CHUNK_ROTATE_INTERVAL, positive_duration)?,
            flush_interval: self.required(&s::FLUSH_INTERVAL, positive_duration)?,
            fsync_every_write: self.required(&s::FSYNC_EVERY_WRITE, parse_bool)?,
            append_mode: self.required(&s::APPEND_MODE, parse_append_mode)?,
            max_categories: self.required(&s::MAX_CATEGORIES, |v| count(v, 1_000_000_000))?,
            max_open_chunks: self.required(&s::MAX_OPEN_CHUNKS, |v| count(v, 1_000_000))?,
        };
        check_range(&s::MAX_CHUNK_SIZE, storage.max_chunk_size, 4096, 64 << 30)?;
        let max_batch_size = self.required(&s::MAX_BATCH_SIZE, parse_size)?;
        check_range(&s::MAX_BATCH_SIZE, max_batch_size, 1, 1 << 30)?;
        let mut max_message_size = self.required(&s::MAX_MESSAGE_SIZE, parse_size)?;
        if self.get(&s::MAX_MESSAGE_SIZE).is_none() {
            // Unset, the message limit follows a smaller batch limit down.
            max_message_size = max_message_size.min(max_batch_size);
        }
        check_range(&s::MAX_MESSAGE_SIZE, max_message_size, 1, max_batch_size)?;
        let retention = RetentionConfig {
            mode: self.required(&s::RETENTION_MODE, parse_retention_mode)?,
            max_age: self.optional(&s::RETENTION_HOURS, parse_hours)?,
            max_bytes: self.optional(&s::RETENTION_BYTES, |v| {
                parse_size(v).and_then(|n| {
                    if n == 0 {
                        Err("must be more than 0".into())
                    } else {
                        Ok(n)
                    }
                })
            })?,
        };
        let tls = match (self.get(&s::TLS_CERT), self.get(&s::TLS_KEY)) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            }),
            (Some(_), None) => {
                return Err(invalid(
                    &s::TLS_KEY,
                    "",
                    "tls_cert is set: give tls_key too",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    &s::TLS_CERT,
                    "",
                    "tls_key is set: give tls_cert too",
                ))
            }
        };
        let log_level = self.required(&s::LOG_LEVEL, |v| {
            tracing_subscriber::EnvFilter::try_new(v)
                .map(|_| v.to_owned())
                .map_err(|e| e.to_string())
        })?;
        let tls_ca = self.get(&s::TLS_CA).map(PathBuf::from);
        if tls_ca.is_none() {
            if let Some(p) = peers.iter().find(|p| p.url.starts_with("https://")) {
                return Err(invalid(
                    &s::TLS_CA,
                    "",
                    &format!(
                        "peer {} is https:// ({}): give the CA certificates its certificate is verified against",
                        p.name, p.url
                    ),
                ));
            }
        }
        let tier_thresholds = TierThresholds {
            tier_after: self.optional(&s::TIER_AFTER, parse_duration)?,
            local_bytes_budget: self.optional(&s::LOCAL_BYTES_BUDGET, parse_size)?,
        };
        let tier = self.tier_config(&data_dir, tier_thresholds)?;
        Ok(Config {
            startup: Startup {
                listen: self.required(&s::LISTEN, |v| {
                    v.parse()
                        .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:8080".to_owned())
                })?,
                data_dir,
                name,
                storage,
                limits: Limits {
                    max_message_size,
                    max_batch_size,
                },
                connections: ConnectionLimits {
                    max_connections: self.required(&s::MAX_CONNECTIONS, parse_max_connections)?,
                    body_idle_timeout: self.required(&s::BODY_IDLE_TIMEOUT, positive_duration)?,
                },
                replication_timeout: self.required(&s::REPLICATION_TIMEOUT, positive_duration)?,
                replication_factor: self
                    .optional(&s::REPLICATION_FACTOR, |v| count(v, MAX_REPLICATION_FACTOR))?,
                rebalance_rate: self.optional(&s::REBALANCE_RATE, |v| {
                    parse_size(v).and_then(|n| {
                        if n == 0 {
                            Err("must be more than 0 (leave it unset for no bound)".into())
                        } else {
                            Ok(n)
                        }
                    })
                })?,
                tls,
                tls_ca,
                tier,
                allowed_hosts: self.optional(&s::ALLOWED_HOSTS, parse_host_list)?,
                kafka: self.kafka()?,
                webhooks: WebhookPolicy::new(
                    self.optional(&s::WEBHOOK_ALLOW, WebhookPolicy::parse_rules)?
                        .unwrap_or_default(),
                    self.optional(&s::WEBHOOK_DENY, WebhookPolicy::parse_rules)?
                        .unwrap_or_default(),
                ),
            },
            live: LiveSettings {
                peers,
                token: self.optional(&s::TOKEN, Token::parse)?,
                peer_token: self.peer_token()?,
                retention,
                tier_thresholds,
                log_level,
            },
        })
    }

    /// The Kafka listener: `kafka_listen`, `kafka_advertise` and
    /// `kafka_min_insync_replicas` (which need the listener).
    fn kafka(&self) -> Result<Option<KafkaListen>, ConfigError> {
        let listen = self.optional(&s::KAFKA_LISTEN, |v| {
            v.parse()
                .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:9092".to_owned())
        })?;
        let advertise = self.optional(&s::KAFKA_ADVERTISE, parse_host_port)?;
        let min_insync_replicas = self.required(&s::KAFKA_MIN_INSYNC_REPLICAS, |v| {
            count(v, MAX_REPLICATION_FACTOR)
        })?;
        match (listen, advertise) {
            (None, None) if self.get(&s::KAFKA_MIN_INSYNC_REPLICAS).is_some() => Err(invalid(
                &s::KAFKA_MIN_INSYNC_REPLICAS,
                self.get(&s::KAFKA_MIN_INSYNC_REPLICAS).unwrap_or_default(),
                "needs --kafka-listen",
            )),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(invalid(
                &s::KAFKA_ADVERTISE,
                self.get(&s::KAFKA_ADVERTISE).unwrap_or_default(),
                "needs --kafka-listen",
            )),
            (Some(listen), advertise) => Ok(Some(KafkaListen {
                listen,
                advertise,
                min_insync_replicas,
            })),
        }
    }

    /// `peer_token`, which must differ from `token` (otherwise every
    /// client could act as a peer).
    fn peer_token(&self) -> Result<Option<Token>, ConfigError> {
        let peer = self.optional(&s::PEER_TOKEN, Token::parse)?;
        if peer.is_some()
            && self.get(&s::PEER_TOKEN).map(str::trim) == self.get(&s::TOKEN).map(str::trim)
        {
            return Err(invalid(
                &s::PEER_TOKEN,
                "(hidden)",
                "must differ from token: with the same value every client could act as a peer",
            ));
        }
        Ok(peer)
    }

    /// The tiering store settings, or None when tiering is off (neither
    /// `tier_after` nor `local_bytes_budget` is set).
    fn tier_config(
        &self,
        data_dir: &Path,
        thresholds: TierThresholds,
    ) -> Result<Option<TierConfig>, ConfigError> {
        if thresholds == TierThresholds::default() {
            return Ok(None);
        }
        let current = self
            .optional(&s::ENCRYPTION_KEY, |v| Keys::parse(v).map_err(|e| e.to_string()))?
            .ok_or_else(|| ConfigError::Invalid {
                key: s::ENCRYPTION_KEY.key,
                value: String::new(),
                why: "tiering is on (tier_after or local_bytes_budget is set) and needs --encryption-key or CHUNKBUS_ENCRYPTION_KEY".into(),
            })?;
        let old = self
            .optional(&s::ENCRYPTION_OLD_KEYS, |v| {
                v.split(',')
                    .filter(|k| !k.trim().is_empty())
                    .map(|k| Keys::parse(k).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()
            })?
            .unwrap_or_default();
        let s3 = match self.get(&s::S3_BUCKET).map(str::trim) {
            None | Some("") => None,
            Some(bucket) => Some(self.s3_settings(bucket)?),
        };
        let cache_bytes = self.required(&s::TIER_CACHE_BYTES, parse_size)?;
        Ok(Some(TierConfig {
            dir: self
                .get(&s::TIER_DIR)
                .map_or_else(|| data_dir.join(".chunkbus").join("tier"), PathBuf::from),
            s3,
            keys: KeyRing::new(current, old),
            level: self.required(&s::TIER_COMPRESSION_LEVEL, |v| {
                v.trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|l| (1..=19).contains(l))
                    .ok_or_else(|| "expected 1 to 19".to_owned())
            })?,
            frame_size: crate::tier::format::DEFAULT_FRAME_SIZE,
            cache_bytes: usize::try_from(cache_bytes).unwrap_or(usize::MAX),
            concurrency: self.required(&s::TIER_CONCURRENCY, |v| {
                v.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| "expected 1 to 64".to_owned())
            })?,
        }))
    }

    fn s3_settings(&self, bucket: &str) -> Result<S3Settings, ConfigError> {
        let credentials = match (
            self.get(&s::S3_ACCESS_KEY_ID),
            self.get(&s::S3_SECRET_ACCESS_KEY),
        ) {
            (Some(a), Some(k)) => Some((a.to_owned(), k.to_owned())),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    &s::S3_ACCESS_KEY_ID,
                    "",
                    "give both s3_access_key_id and s3_secret_access_key, or neither",
                ))
            }
        };
        Ok(S3Settings {
            endpoint: self.optional(&s::S3_ENDPOINT, |e| {
                if e.starts_with("http://") || e.starts_with("https://") {
                    Ok(e.to_owned())
                } else {
                    Err("expected an http:// or https:// URL".to_owned())
                }
            })?,
            region: self.required(&s::S3_REGION, |v| Ok(v.to_owned()))?,
            bucket: bucket.to_owned(),
            prefix: self
                .get(&s::S3_PREFIX)
                .unwrap_or_default()
                .trim_matches('/')
                .to_owned(),
            path_style: self.required(&s::S3_PATH_STYLE, parse_bool)?,
            credentials,
        })
    }

    /// The given value of `setting` parsed (as given: parsers that ignore
    /// whitespace trim it themselves), or None when it was not given.
    fn optional<T>(
        &self,
        setting: &'static Setting,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(setting)
            .map(|v| parse(v).map_err(|why| invalid(setting, v, &why)))
            .transpose()
    }

    /// The given value of `setting`, else its default value, as text.
    fn text_or_default(&self, setting: &'static Setting) -> &str {
        match (self.get(setting), setting.default) {
            (Some(v), _) | (None, DefaultValue::Value(v)) => v,
            (None, DefaultValue::Unset(_)) => "",
        }
    }

    /// The given value of `setting` parsed, else its default parsed.
    fn required<T>(
        &self,
        setting: &'static Setting,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let text = match (self.get(setting), setting.default) {
            (Some(v), _) | (None, DefaultValue::Value(v)) => v,
            (None, DefaultValue::Unset(_)) => {
                return Err(invalid(setting, "", "is required"));
            }
        };
        parse(text).map_err(|why| invalid(setting, text, &why))
    }
}

fn positive_duration(v: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(v)?;
    if d.is_zero() {
        return Err("must be longer than 0".into());
    }
    Ok(d)
}

/// Largest `replication_factor` accepted (far above any cluster size).
const MAX_REPLICATION_FACTOR: usize = 10_000;

/// A count from 1 to `max`.
fn count(v: &str, max: usize) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("expected a whole number from 1 to {max}"))
}

/// `auto` or a number of connections, 1 to 1000000.
fn parse_max_connections(v: &str) -> Result<MaxConnections, String> {
    if v == "auto" {
        return Ok(MaxConnections::Auto);
    }
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .map(MaxConnections::Fixed)
        .ok_or_else(|| "expected auto or a number from 1 to 1000000".to_owned())
}

/// An invalid-value error naming `setting`; secret values are not echoed.
fn invalid(setting: &'static Setting, value: &str, why: &str) -> ConfigError {
    ConfigError::Invalid {
        key: setting.key,
        value: if setting.secret && !value.is_empty() {
            "(hidden)".to_owned()
        } else {
            value.to_owned()
        },
        why: why.to_owned(),
    }
}

fn check_range(setting: &'static Setting, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if v < min || v > max {
        return Err(invalid(
            setting,
            &v.to_string(),
            &format!("must be between {min} and {max} bytes"),
        ));
    }
    Ok(())
}

/// `HOST:PORT` with a non-empty host of letters, digits, `.`, `-`, `_`
/// (or a bracketed IPv6 address) and a non-zero port.
fn parse_host_port(v: &str) -> Result<(String, u16), String> {
    let bad = || format!("expected HOST:PORT, e.g. broker1.internal:9092, got {v:?}");
    let (host, port) = v.trim().rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    let v6 = host.starts_with('[')
        && host.ends_with(']')
        && host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    if !(plain || v6) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}
