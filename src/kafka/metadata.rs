//! `Metadata`: this server as the one broker, and for each topic asked
//! (or every category) its partitions, all led by this server. Every
//! valid category name is a topic (a category exists from its first
//! write, as over HTTP); an invalid name gets `INVALID_TOPIC_EXCEPTION`.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Broker;
use crate::names::Category;

/// Kafka's "authorized operations not requested" value.
const NO_OPERATIONS: i32 = i32::MIN;

/// Answers a `Metadata` request of version `version`.
#[must_use]
pub fn handle(broker: &Broker, req: &MetadataRequest, version: i16) -> MetadataResponse {
    let topo = &broker.topology;
    let node = BrokerId(topo.node_id());
    let mut me = MetadataResponseBroker::default();
    me.node_id = node;
    me.host = StrBytes::from_string(topo.host().to_owned());
    me.port = i32::from(topo.port());
    let names: Vec<String> = match &req.topics {
        // v0: an empty list means every topic; v1+: null does.
        Some(t) if !(t.is_empty() && version == 0) => t
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str().to_owned()))
            .collect(),
        _ => broker
            .state
            .storage
            .get()
            .map(|s| s.category_names())
            .unwrap_or_default(),
    };
    let mut resp = MetadataResponse::default();
    resp.brokers = vec![me];
    resp.cluster_id = Some(StrBytes::from_static_str("chunkbus"));
    resp.controller_id = node;
    resp.cluster_authorized_operations = NO_OPERATIONS;
    resp.topics = names.into_iter().map(|n| topic(broker, n, node)).collect();
    resp
}

fn topic(broker: &Broker, name: String, node: BrokerId) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.topic_authorized_operations = NO_OPERATIONS;
    if Category::parse(&name).is_err() {
        t.error_code = ResponseError::InvalidTopicException.code();
    } else if broker.state.storage.get().is_none() {
        t.error_code = ResponseError::LeaderNotAvailable.code();
    } else {
        t.partitions = (0..broker.topology.partitions())
            .map(|p| {
                let mut part = MetadataResponsePartition::default();
                part.partition_index = p;
                part.leader_id = node;
                part.leader_epoch = 0;
                part.replica_nodes = vec![node];
                part.isr_nodes = vec![node];
                part
            })
            .collect();
    }
    t.name = Some(TopicName(StrBytes::from_string(name)));
    t
}
