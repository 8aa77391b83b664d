//! `DescribeConfigs`: the topic and broker configs a Kafka client may ask
//! about, answered read-only from the server's real settings
//! (`max_message_size`, `max_batch_size`, `max_chunk_size`, the live
//! retention settings) and from what the mapping fixes (log append time,
//! delete-only cleanup, uncompressed storage). [`ConfigValues`] is pure;
//! `CreateTopics` (`admin.rs`) uses it to check the configs a create
//! names and to answer them (v5+).

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Broker;
use crate::config::RetentionConfig;
use crate::names::Category;

/// Kafka's resource type of a topic.
pub const TOPIC: i8 = 2;
/// Kafka's resource type of a broker.
pub const BROKER: i8 = 4;

/// Kafka's `ConfigSource.STATIC_BROKER_CONFIG`: a server setting.
const SOURCE_SERVER: i8 = 4;
/// Kafka's `ConfigSource.DEFAULT_CONFIG`: fixed by the mapping.
const SOURCE_FIXED: i8 = 5;

/// Kafka's `ConfigType` of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Boolean = 1,
    Str = 2,
    Int = 3,
    Long = 5,
}

/// One config entry: names for a topic and for a broker, value, type and
/// whether it comes from a server setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name as a topic config (`None`: broker only).
    pub topic: Option<&'static str>,
    /// Name as a broker config.
    pub broker: &'static str,
    /// The value.
    pub value: String,
    kind: Kind,
    from_setting: bool,
    doc: &'static str,
}

/// The settings configs are read from (a snapshot).
#[derive(Debug, Clone)]
pub struct ConfigValues {
    /// `max_message_size` (newline included).
    pub max_message_size: u64,
    /// `max_batch_size`.
    pub max_batch_size: u64,
    /// `max_chunk_size`.
    pub max_chunk_size: u64,
    /// The retention settings in force.
    pub retention: RetentionConfig,
}

impl ConfigValues {
    /// The settings `broker` runs with now.
    #[must_use]
    pub fn of(broker: &Broker) -> Self {
        let c = &broker.state.config.startup;
        Self {
            max_message_size: c.limits.max_message_size,
            max_batch_size: c.limits.max_batch_size,
            max_chunk_size: c.storage.max_chunk_size,
            retention: broker.state.live.retention(),
        }
    }

    /// Every entry, in a stable order.
    #[must_use]
    pub fn entries(&self) -> Vec<Entry> {
        let ms = |d: Option<std::time::Duration>| {
            d.map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        let e = |topic, broker, value: String, kind, from_setting, doc| Entry {
            topic,
            broker,
            value,
            kind,
            from_setting,
            doc,
        };
        vec![
            e(
                Some("max.message.bytes"),
                "message.max.bytes",
                self.max_message_size.saturating_sub(1).to_string(),
                Kind::Int,
                true,
                "largest record value: max_message_size minus the newline a record becomes a message with; the records of one partition of one request total at most max_batch_size",
            ),
            e(
                None,
                "chunkbus.max.batch.bytes",
                self.max_batch_size.to_string(),
                Kind::Int,
                true,
                "max_batch_size: largest total of the messages of one partition of one Produce request",
            ),
            e(
                Some("segment.bytes"),
                "log.segment.bytes",
                self.max_chunk_size.to_string(),
                Kind::Int,
                true,
                "max_chunk_size: a partition is a sequence of chunks of at most this size",
            ),
            e(
                Some("retention.ms"),
                "log.retention.ms",
                ms(self.retention.max_age).to_string(),
                Kind::Long,
                true,
                "retention_hours (-1: kept)",
            ),
            e(
                Some("retention.bytes"),
                "log.retention.bytes",
                self.retention
                    .max_bytes
                    .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX))
                    .to_string(),
                Kind::Long,
                true,
                "retention_bytes: per category, all partitions together (-1: no bound)",
            ),
            e(
                Some("cleanup.policy"),
                "log.cleanup.policy",
                "delete".to_owned(),
                Kind::Str,
                false,
                "chunks are deleted whole, never compacted",
            ),
            e(
                Some("message.timestamp.type"),
                "log.message.timestamp.type",
                "LogAppendTime".to_owned(),
                Kind::Str,
                false,
                "record timestamps are the chunk's creation time",
            ),
            e(
                Some("compression.type"),
                "compression.type",
                "uncompressed".to_owned(),
                Kind::Str,
                false,
                "records are stored as uncompressed newline-terminated messages",
            ),
            e(
                None,
                "auto.create.topics.enable",
                "true".to_owned(),
                Kind::Boolean,
                false,
                "every valid category name is a topic",
            ),
            e(
                None,
                "delete.topic.enable",
                "false".to_owned(),
                Kind::Boolean,
                false,
                "topics cannot be deleted over the Kafka protocol",
            ),
        ]
    }

    /// The value of topic config `name`, if described.
    #[must_use]
    pub fn topic_value(&self, name: &str) -> Option<String> {
        self.entries()
            .into_iter()
            .find(|e| e.topic == Some(name))
            .map(|e| e.value)
    }
}

/// Answers a `DescribeConfigs` request of version `version`.
#[must_use]
pub fn handle(
    broker: &Broker,
    req: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    describe(&ConfigValues::of(broker), req, version)
}

/// [`handle`] on a snapshot of the settings (pure).
#[must_use]
pub fn describe(
    values: &ConfigValues,
    req: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let entries = values.entries();
    let mut resp = DescribeConfigsResponse::default();
    for res in &req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let name = res.resource_name.as_str();
        let wanted = |n: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == n))
        };
        let refusal = match res.resource_type {
            TOPIC => Category::parse(name)
                .err()
                .map(|e| (ResponseError::InvalidTopicException, e.to_string())),
            BROKER if name.is_empty() || name.parse::<i32>().is_ok() => None,
            BROKER => Some((
                ResponseError::InvalidRequest,
                format!("broker resource name {name:?} is not a node id"),
            )),
            t => Some((
                ResponseError::InvalidRequest,
                format!(
                    "chunkbus describes topic (2) and broker (4) configs, not resource type {t}"
                ),
            )),
        };
        if let Some((code, message)) = refusal {
            r.error_code = code.code();
            r.error_message = Some(StrBytes::from_string(message));
        } else {
            r.configs = entries
                .iter()
                .filter_map(|e| {
                    let n = if res.resource_type == TOPIC {
                        e.topic?
                    } else {
                        e.broker
                    };
                    wanted(n).then(|| result(n, e, req.include_documentation, version))
                })
                .collect();
        }
        resp.results.push(r);
    }
    resp
}

fn result(
    name: &'static str,
    e: &Entry,
    documentation: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = StrBytes::from_static_str(name);
    c.value = Some(StrBytes::from_string(e.value.clone()));
    c.read_only = true;
    c.config_source = if e.from_setting {
        SOURCE_SERVER
    } else {
        SOURCE_FIXED
    };
    if version >= 3 {
        c.config_type = e.kind as i8;
        if documentation {
            c.documentation = Some(StrBytes::from_static_str(e.doc));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::protocol::Encodable;

    use super::*;

    fn values() -> ConfigValues {
        ConfigValues {
            max_message_size: 1 << 20,
            max_batch_size: 16 << 20,
            max_chunk_size: 64 << 20,
            retention: RetentionConfig {
                max_age: Some(std::time::Duration::from_secs(3600)),
                ..RetentionConfig::default()
            },
        }
    }

    fn resource(t: i8, name: &str, keys: Option<&[&str]>) -> DescribeConfigsResource {
        let mut r = DescribeConfigsResource::default();
        r.resource_type = t;
        r.resource_name = StrBytes::from_string(name.to_owned());
        r.configuration_keys = keys.map(|k| {
            k.iter()
                .map(|s| StrBytes::from_string((*s).to_owned()))
                .collect()
        });
        r
    }

    #[test]
    fn topic_configs_are_the_real_settings_and_encode_at_every_version() {
        let mut req = DescribeConfigsRequest::default();
        req.include_documentation = true;
        req.resources = vec![
            resource(TOPIC, "events", None),
            resource(TOPIC, "events", Some(&["retention.ms", "no.such.key"])),
            resource(BROKER, "0", Some(&["message.max.bytes"])),
            resource(TOPIC, "bad name", None),
            resource(8, "x", None),
        ];
        for version in 1..=4 {
            let resp = describe(&values(), &req, version);
            let mut out = bytes::BytesMut::new();
            resp.encode(&mut out, version).unwrap();
            let get = |i: usize, n: &str| {
                resp.results[i]
                    .configs
                    .iter()
                    .find(|c| c.name.as_str() == n)
                    .and_then(|c| c.value.as_ref().map(|v| v.as_str().to_owned()))
            };
            assert_eq!(get(0, "max.message.bytes").as_deref(), Some("1048575"));
            assert_eq!(get(0, "retention.ms").as_deref(), Some("3600000"));
            assert_eq!(get(0, "retention.bytes").as_deref(), Some("-1"));
            assert_eq!(
                get(0, "message.timestamp.type").as_deref(),
                Some("LogAppendTime")
            );
            assert!(resp.results[0].configs.iter().all(|c| c.read_only));
            assert_eq!(resp.results[1].configs.len(), 1);
            assert_eq!(get(2, "message.max.bytes").as_deref(), Some("1048575"));
            assert_eq!(
                resp.results[3].error_code,
                ResponseError::InvalidTopicException.code()
            );
            assert_eq!(
                resp.results[4].error_code,
                ResponseError::InvalidRequest.code()
            );
        }
    }
}
