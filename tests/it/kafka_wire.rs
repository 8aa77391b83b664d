//! A minimal raw Kafka client for the Kafka tests: requests over a TCP
//! connection, encoded and decoded with the `kafka-protocol`
//! crate, so a test can send a request to one chosen broker (librdkafka
//! always follows Metadata) and see the exact error codes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorResponse, GroupId,
    JoinGroupResponse, ListGroupsRequest, ListGroupsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

/// One connection speaking requests built with the codec (correlation ids
/// counted, every answer's checked).
pub struct Wire {
    s: TcpStream,
    next: i32,
}

impl Wire {
    /// Connects to `addr`.
    pub fn open(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Self { s, next: 1 }
    }

    /// Sends `req` (API `key`, `version`) and decodes the answer.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Resp {
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = self.next;
        header.client_id = Some(StrBytes::from_static_str("chunkbus-test"));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        self.s
            .write_all(&i32::try_from(body.len()).unwrap().to_be_bytes())
            .unwrap();
        self.s.write_all(&body).unwrap();
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).unwrap();
        let mut answer = vec![0u8; usize::try_from(i32::from_be_bytes(len)).unwrap()];
        self.s.read_exact(&mut answer).unwrap();
        let mut buf = Bytes::from(answer);
        let h = ResponseHeader::decode(&mut buf, key.response_header_version(version)).unwrap();
        assert_eq!(h.correlation_id, self.next);
        self.next += 1;
        Resp::decode(&mut buf, version).unwrap()
    }
}

/// Sends `req` (API `key`, `version`) to `addr` on a fresh connection and
/// decodes the answer.
pub fn call<Req: Encodable, Resp: Decodable>(
    addr: SocketAddr,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    Wire::open(addr).call(key, version, req)
}

/// Metadata (v9) of `topic` as `addr` answers it.
pub fn metadata(addr: SocketAddr, topic: &str) -> MetadataResponse {
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.to_owned())));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    call(addr, ApiKey::Metadata, 9, &req)
}

/// An idempotent producer's fields of a batch: id, epoch, and the
/// sequence number of its first record.
pub type Sequenced = (i64, i16, i32);

/// Produces `values` to `topic`/`partition` on `addr` with `acks`;
/// returns the partition's (error code, base offset).
pub fn produce(
    addr: SocketAddr,
    topic: &str,
    partition: i32,
    values: &[&str],
    acks: i16,
    timeout_ms: i32,
) -> (i16, i64) {
    produce_on(
        &mut Wire::open(addr),
        topic,
        partition,
        values,
        None,
        acks,
        timeout_ms,
    )
}

/// Produces `values` as one batch on `wire` (an idempotent producer's
/// when `sequenced`); returns the partition's (error code, base offset).
pub fn produce_on(
    wire: &mut Wire,
    topic: &str,
    partition: i32,
    values: &[&str],
    sequenced: Option<Sequenced>,
    acks: i16,
    timeout_ms: i32,
) -> (i16, i64) {
    let (producer_id, producer_epoch, first) =
        sequenced.unwrap_or((NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE));
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::try_from(i).unwrap(),
            sequence: if sequenced.is_some() {
                first + i32::try_from(i).unwrap()
            } else {
                NO_SEQUENCE
            },
            timestamp: 1,
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(batch.freeze());
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_owned()));
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = timeout_ms;
    req.topic_data = vec![t];
    let resp: ProduceResponse = wire.call(ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// The coordinator node id `addr` names for `group` (error code, node).
pub fn find_coordinator(addr: SocketAddr, group: &str) -> (i16, i32) {
    let mut req = FindCoordinatorRequest::default();
    req.key = StrBytes::from_string(group.to_owned());
    let resp: FindCoordinatorResponse = call(addr, ApiKey::FindCoordinator, 3, &req);
    (resp.error_code, resp.node_id.0)
}

/// A JoinGroup of a new member of `group` sent to `addr`: its error code.
pub fn join_error(addr: SocketAddr, group: &str) -> i16 {
    let mut p = JoinGroupRequestProtocol::default();
    p.name = StrBytes::from_static_str("range");
    p.metadata = Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut req = JoinGroupRequest::default();
    req.group_id = GroupId(StrBytes::from_string(group.to_owned()));
    req.session_timeout_ms = 6000;
    req.rebalance_timeout_ms = 1000;
    req.protocol_type = StrBytes::from_static_str("consumer");
    req.protocols = vec![p];
    let resp: JoinGroupResponse = call(addr, ApiKey::JoinGroup, 5, &req);
    resp.error_code
}

/// DescribeGroups (v5) of `groups` on one connection to `addr`, then a
/// ListGroups (v4) on the same connection (it must stay open): each
/// group's (error code, state), and the listed group ids.
pub fn describe_groups(addr: SocketAddr, groups: &[&str]) -> (Vec<(i16, String)>, Vec<String>) {
    let mut w = Wire::open(addr);
    let mut req = DescribeGroupsRequest::default();
    req.groups = groups
        .iter()
        .map(|g| GroupId(StrBytes::from_string((*g).to_owned())))
        .collect();
    let resp: DescribeGroupsResponse = w.call(ApiKey::DescribeGroups, 5, &req);
    let described = resp
        .groups
        .iter()
        .map(|g| (g.error_code, g.group_state.as_str().to_owned()))
        .collect();
    let listed: ListGroupsResponse = w.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert_eq!(listed.error_code, 0);
    let ids = listed
        .groups
        .iter()
        .map(|g| g.group_id.0.as_str().to_owned())
        .collect();
    (described, ids)
}

/// The error code of a ListOffsets (latest) of `topic`/`partition` on `addr`.
pub fn list_offsets_error(addr: SocketAddr, topic: &str, partition: i32) -> i16 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_owned()));
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = kafka_protocol::messages::BrokerId(-1);
    req.topics = vec![t];
    let resp: ListOffsetsResponse = call(addr, ApiKey::ListOffsets, 5, &req);
    resp.topics[0].partitions[0].error_code
}

/// The error code of an OffsetCommit of `offset` for `group` (outside the
/// group protocol: generation -1) of `topic`/`partition` on `addr`.
pub fn commit_error(
    addr: SocketAddr,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> i16 {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = partition;
    p.committed_offset = offset;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_owned()));
    t.partitions = vec![p];
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(StrBytes::from_string(group.to_owned()));
    req.generation_id_or_member_epoch = -1;
    req.topics = vec![t];
    let resp: OffsetCommitResponse = call(addr, ApiKey::OffsetCommit, 7, &req);
    resp.topics[0].partitions[0].error_code
}

/// An OffsetFetch (v7) of `group`'s committed offset of `topic`/`partition`
/// on `addr`: (top-level error, partition error, committed offset).
pub fn offset_fetch(addr: SocketAddr, group: &str, topic: &str, partition: i32) -> (i16, i16, i64) {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_owned()));
    t.partition_indexes = vec![partition];
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(StrBytes::from_string(group.to_owned()));
    req.topics = Some(vec![t]);
    let resp: OffsetFetchResponse = call(addr, ApiKey::OffsetFetch, 7, &req);
    let p = &resp.topics[0].partitions[0];
    (resp.error_code, p.error_code, p.committed_offset)
}
