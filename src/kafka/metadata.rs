//! `Metadata`: the reachable brokers of the cluster (this server and the
//! peers whose Kafka address it knows), and for each topic asked (or
//! every category) its partitions with leader, replicas and isr (rules in
//! `topology.rs`). Every valid category name is a topic (a category
//! exists from its first write, as over HTTP); an invalid name gets
//! `INVALID_TOPIC_EXCEPTION`.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::topology::View;
use super::Broker;
use crate::names::Category;

/// Kafka's "authorized operations not requested" value.
const NO_OPERATIONS: i32 = i32::MIN;

/// Answers a `Metadata` request of version `version`.
#[must_use]
pub fn handle(broker: &Broker, req: &MetadataRequest, version: i16) -> MetadataResponse {
    let view = broker.view();
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
    resp.brokers = view
        .live()
        .map(|n| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(n.id);
            b.host = StrBytes::from_string(n.host.clone());
            b.port = i32::from(n.port);
            b
        })
        .collect();
    resp.cluster_id = Some(StrBytes::from_static_str("chunkbus"));
    // No controller: a live broker (here, the lowest id) so admin clients
    // have one to talk to.
    resp.controller_id = BrokerId(view.live().map(|n| n.id).min().unwrap_or(-1));
    resp.cluster_authorized_operations = NO_OPERATIONS;
    resp.topics = names.into_iter().map(|n| topic(broker, &view, n)).collect();
    resp
}

fn topic(broker: &Broker, view: &View<'_>, name: String) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.topic_authorized_operations = NO_OPERATIONS;
    if Category::parse(&name).is_err() {
        t.error_code = ResponseError::InvalidTopicException.code();
    } else if broker.state.storage.get().is_none() {
        t.error_code = ResponseError::LeaderNotAvailable.code();
    } else {
        t.partitions = (0..broker.topology.partitions())
            .map(|p| {
                let holders = broker.holders(&name, p);
                let (replicas, isr) = view.replicas(&holders);
                let mut part = MetadataResponsePartition::default();
                part.partition_index = p;
                match view.leader(p, &holders) {
                    Some(l) => part.leader_id = BrokerId(l),
                    None => {
                        part.error_code = ResponseError::LeaderNotAvailable.code();
                        part.leader_id = BrokerId(-1);
                    }
                }
                part.leader_epoch = 0;
                part.offline_replicas = replicas
                    .iter()
                    .filter(|r| !isr.contains(r))
                    .map(|r| BrokerId(*r))
                    .collect();
                part.replica_nodes = replicas.into_iter().map(BrokerId).collect();
                part.isr_nodes = isr.into_iter().map(BrokerId).collect();
                part
            })
            .collect();
    }
    t.name = Some(TopicName(StrBytes::from_string(name)));
    t
}
