//! Topic administration, as far as it maps: `CreateTopics` creates the
//! category (empty, as its first write would), `DeleteTopics` and
//! `CreatePartitions` are refused with their own error codes. Every valid
//! category name is a topic with one partition per server and the
//! cluster's replication, so a create may only ask for those (or leave
//! them at -1), and topic configs are server settings (`configs.rs`): a
//! create may name one only with the value it has.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::configs::ConfigValues;
use super::error::PartitionError;
use super::Broker;
use crate::names::Category;

/// Kafka's `ConfigSource.STATIC_BROKER_CONFIG`.
const SOURCE_SERVER: i8 = 4;

/// What a topic is in this cluster.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Partitions per topic (servers in the cluster).
    pub partitions: i32,
    /// Copies of each chunk (the cluster's replication factor).
    pub replication: i16,
    /// The configs every topic has.
    pub configs: ConfigValues,
}

impl Shape {
    /// The shape of topics on `broker`.
    #[must_use]
    pub fn of(broker: &Broker) -> Self {
        let partitions = broker.topology.partitions();
        let copies = broker
            .state
            .cluster
            .get()
            .map_or(1, |c| c.assignment.copies());
        Self {
            partitions,
            replication: i16::try_from(copies).unwrap_or(i16::MAX),
            configs: ConfigValues::of(broker),
        }
    }

    /// Why `t` cannot be created as asked (`None`: it can).
    #[must_use]
    pub fn refusal(&self, t: &CreatableTopic) -> Option<PartitionError> {
        let name = t.name.0.as_str();
        if let Err(e) = Category::parse(name) {
            return Some(PartitionError::new(
                ResponseError::InvalidTopicException,
                e.to_string(),
            ));
        }
        if !t.assignments.is_empty() {
            return Some(PartitionError::new(
                ResponseError::InvalidReplicaAssignment,
                "partitions are the servers' own chunks: replica assignments cannot be chosen",
            ));
        }
        if t.num_partitions != -1 && t.num_partitions != self.partitions {
            return Some(PartitionError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "every topic has {} partition(s), one per server of the cluster; ask for {} or -1",
                    self.partitions, self.partitions
                ),
            ));
        }
        if t.replication_factor != -1 && t.replication_factor != self.replication {
            return Some(PartitionError::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "the replication factor is the cluster's ({}); ask for {} or -1",
                    self.replication, self.replication
                ),
            ));
        }
        for c in &t.configs {
            let have = self.configs.topic_value(c.name.as_str());
            let asked = c.value.as_ref().map(|v| v.as_str().to_owned());
            if have.is_none() || (asked.is_some() && asked != have) {
                return Some(PartitionError::new(
                    ResponseError::InvalidConfig,
                    format!(
                        "topic config {} is a server setting in chunkbus ({}); it cannot be set per topic",
                        c.name.as_str(),
                        have.map_or_else(|| "not supported".to_owned(), |v| format!("it is {v}"))
                    ),
                ));
            }
        }
        None
    }
}

/// Answers `CreateTopics`: a valid name asked with this cluster's shape
/// is created (an empty category), or is `TOPIC_ALREADY_EXISTS` when the
/// category exists on this server; `validate_only` creates nothing.
#[must_use]
pub fn create_topics(
    broker: &Broker,
    req: &CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let shape = Shape::of(broker);
    let mut resp = CreateTopicsResponse::default();
    for t in &req.topics {
        let outcome = match shape.refusal(t) {
            Some(e) => Err(e),
            None => create(broker, t.name.0.as_str(), req.validate_only),
        };
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        match outcome {
            Ok(()) => {
                if version >= 5 {
                    r.num_partitions = shape.partitions;
                    r.replication_factor = shape.replication;
                    r.configs = Some(
                        shape
                            .configs
                            .entries()
                            .into_iter()
                            .filter_map(|e| {
                                let mut c = CreatableTopicConfigs::default();
                                c.name = StrBytes::from_static_str(e.topic?);
                                c.value = Some(StrBytes::from_string(e.value));
                                c.read_only = true;
                                c.config_source = SOURCE_SERVER;
                                Some(c)
                            })
                            .collect(),
                    );
                }
            }
            Err(e) => {
                r.error_code = e.code.code();
                if version >= 1 {
                    r.error_message = Some(StrBytes::from_string(e.message));
                }
                if version >= 5 {
                    r.num_partitions = -1;
                    r.replication_factor = -1;
                }
            }
        }
        resp.topics.push(r);
    }
    resp
}

fn create(broker: &Broker, name: &str, validate_only: bool) -> Result<(), PartitionError> {
    let category = Category::parse(name)
        .map_err(|e| PartitionError::new(ResponseError::InvalidTopicException, e.to_string()))?;
    let storage = broker.storage()?;
    let exists = || {
        PartitionError::new(
            ResponseError::TopicAlreadyExists,
            format!("topic {name} exists (category {name} has data or was created)"),
        )
    };
    if storage.category(&category).is_some() {
        return Err(exists());
    }
    if validate_only {
        return storage
            .admits(&category)
            .map_err(|e| PartitionError::from_domain(&e));
    }
    match storage.create(&category) {
        Ok(true) => Ok(()),
        Ok(false) => Err(exists()),
        Err(e) => Err(PartitionError::from_domain(&e)),
    }
}

/// Answers `DeleteTopics`: `TOPIC_DELETION_DISABLED` for every topic.
#[must_use]
pub fn delete_topics(req: &DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let mut resp = DeleteTopicsResponse::default();
    let names = req
        .topic_names
        .iter()
        .cloned()
        .map(Some)
        .chain(req.topics.iter().map(|t| t.name.clone()));
    for name in names {
        let mut r = DeletableTopicResult::default();
        r.name = name;
        r.error_code = ResponseError::TopicDeletionDisabled.code();
        if version >= 5 {
            r.error_message = Some(StrBytes::from_static_str(
                "topics are chunkbus categories and are not deleted over the Kafka protocol (retention deletes chunks)",
            ));
        }
        resp.responses.push(r);
    }
    resp
}

/// Answers `CreatePartitions`: `INVALID_PARTITIONS` for every topic (the
/// partition count is the number of servers).
#[must_use]
pub fn create_partitions(
    broker: &Broker,
    req: &CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let partitions = broker.topology.partitions();
    let mut resp = CreatePartitionsResponse::default();
    for t in &req.topics {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        r.error_code = ResponseError::InvalidPartitions.code();
        r.error_message = Some(StrBytes::from_string(format!(
            "every topic has {partitions} partition(s), one per server; add servers to add partitions"
        )));
        resp.results.push(r);
    }
    resp
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::Encodable;

    use super::*;

    fn shape() -> Shape {
        Shape {
            partitions: 3,
            replication: 2,
            configs: ConfigValues {
                max_message_size: 1 << 20,
                max_batch_size: 16 << 20,
                max_chunk_size: 64 << 20,
                retention: crate::config::RetentionConfig::default(),
            },
        }
    }

    fn topic(name: &str, partitions: i32, replication: i16) -> CreatableTopic {
        let mut t = CreatableTopic::default();
        t.name = TopicName(StrBytes::from_string(name.to_owned()));
        t.num_partitions = partitions;
        t.replication_factor = replication;
        t
    }

    #[test]
    fn a_create_may_ask_only_for_what_every_topic_is() {
        let s = shape();
        assert!(s.refusal(&topic("events", -1, -1)).is_none());
        assert!(s.refusal(&topic("events", 3, 2)).is_none());
        let code = |t: &CreatableTopic| s.refusal(t).map(|e| e.code);
        assert_eq!(
            code(&topic("events", 4, -1)),
            Some(ResponseError::InvalidPartitions)
        );
        assert_eq!(
            code(&topic("events", -1, 3)),
            Some(ResponseError::InvalidReplicationFactor)
        );
        assert_eq!(
            code(&topic("no/such", -1, -1)),
            Some(ResponseError::InvalidTopicException)
        );
        let mut with = topic("events", -1, -1);
        let mut c = CreatableTopicConfig::default();
        c.name = StrBytes::from_static_str("cleanup.policy");
        c.value = Some(StrBytes::from_static_str("delete"));
        with.configs.push(c.clone());
        assert!(s.refusal(&with).is_none(), "the value it has");
        c.value = Some(StrBytes::from_static_str("compact"));
        with.configs = vec![c];
        assert_eq!(code(&with), Some(ResponseError::InvalidConfig));
    }

    #[test]
    fn refusals_encode_at_every_version() {
        let mut req = DeleteTopicsRequest::default();
        req.topic_names = vec![TopicName(StrBytes::from_static_str("events"))];
        for version in 1..=6 {
            let mut r = req.clone();
            if version >= 6 {
                r.topics = vec![Default::default()];
                r.topics[0].name = Some(TopicName(StrBytes::from_static_str("events")));
                r.topic_names.clear();
            }
            let resp = delete_topics(&r, version);
            assert_eq!(resp.responses.len(), 1);
            assert_eq!(
                resp.responses[0].error_code,
                ResponseError::TopicDeletionDisabled.code()
            );
            resp.encode(&mut bytes::BytesMut::new(), version).unwrap();
        }
    }
}
