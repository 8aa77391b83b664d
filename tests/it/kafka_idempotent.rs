//! Idempotent Kafka producers: librdkafka's (`enable.idempotence=true`)
//! against the real binary, and Produce requests crafted with the
//! `kafka-protocol` crate and sent twice on a raw connection — a retried
//! batch is stored once and answered with its original base offset, also
//! after kill -9 and a restart (the dedup table is rebuilt from chunks).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::harness::TestBroker;
use super::kafka::{kafka, py, KAFKA};

/// One connection speaking requests built with the codec.
struct Conn {
    s: TcpStream,
    next: i32,
}

impl Conn {
    fn open(b: &TestBroker) -> Self {
        let s = TcpStream::connect(b.kafka_addr.unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Self { s, next: 1 }
    }

    /// Sends `req` as `key` v`version`; returns the answer's body.
    fn call<T: Encodable>(&mut self, key: ApiKey, version: i16, req: &T) -> Bytes {
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = self.next;
        header.client_id = Some(StrBytes::from_static_str("it"));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        let mut out = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        self.s.write_all(&out).unwrap();
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).unwrap();
        let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut answer).unwrap();
        let mut answer = Bytes::from(answer);
        let h = ResponseHeader::decode(&mut answer, key.response_header_version(version)).unwrap();
        assert_eq!(h.correlation_id, self.next);
        self.next += 1;
        answer
    }

    fn init_producer_id(&mut self) -> (i64, i16) {
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = 60_000;
        let mut a = self.call(ApiKey::InitProducerId, 4, &req);
        let resp = InitProducerIdResponse::decode(&mut a, 4).unwrap();
        assert_eq!(resp.error_code, 0);
        (resp.producer_id.0, resp.producer_epoch)
    }

    /// Produces `values` as one idempotent batch (acks=all); returns the
    /// partition's error code and base offset.
    fn produce(
        &mut self,
        topic: &str,
        id: (i64, i16),
        first_seq: i32,
        values: &[&str],
    ) -> (i16, i64) {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: id.0,
                producer_epoch: id.1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: first_seq + i as i32,
                timestamp: 0,
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
        let mut part = PartitionProduceData::default();
        part.index = 0;
        part.records = Some(batch.freeze());
        let mut t = TopicProduceData::default();
        t.name = TopicName(StrBytes::from_string(topic.to_owned()));
        t.partition_data = vec![part];
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.timeout_ms = 10_000;
        req.topic_data = vec![t];
        let mut a = self.call(ApiKey::Produce, 9, &req);
        let resp = ProduceResponse::decode(&mut a, 9).unwrap();
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }
}

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;

#[test]
fn a_retried_idempotent_batch_is_stored_once_even_after_kill9() {
    let mut b = TestBroker::start(KAFKA);
    let mut c = Conn::open(&b);
    let id = c.init_producer_id();
    assert!(id.0 > 0 && id.1 == 0, "{id:?}");
    let (e, base) = c.produce("idem", id, 0, &["a", "b", "c"]);
    assert_eq!(e, 0);
    assert!(base >= 0);
    // The same request again: stored once, answered with the original.
    assert_eq!(c.produce("idem", id, 0, &["a", "b", "c"]), (0, base));
    assert_eq!(c.produce("idem", id, 3, &["d"]), (0, base + 3));
    // A gap (sequence 5 after 3) and an overlap are Kafka's error 45; an
    // older batch was stored before: 46 (librdkafka counts it delivered).
    assert_eq!(
        c.produce("idem", id, 5, &["x"]).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        c.produce("idem", id, 2, &["c", "y"]).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        c.produce("idem", id, 0, &["a", "b", "c"]).0,
        DUPLICATE_SEQUENCE_NUMBER
    );
    // Another epoch of the same id numbers its records afresh.
    assert_eq!(c.produce("idem", (id.0, 1), 0, &["e"]), (0, base + 4));
    // kill -9 between the original and its retry: the table is rebuilt
    // from the chunks' index records.
    b.restart();
    let mut c = Conn::open(&b);
    assert_eq!(c.produce("idem", id, 3, &["d"]), (0, base + 3));
    assert_eq!(c.produce("idem", (id.0, 1), 0, &["e"]), (0, base + 4));
    assert_eq!(
        c.produce("idem", id, 5, &["x"]).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    let (e, f) = c.produce("idem", id, 4, &["f"]);
    assert_eq!(e, 0);
    assert!(f > base + 4, "{f} after {base}");
    let http = String::from_utf8(b.read_all("idem")).unwrap();
    assert_eq!(http, "a\nb\nc\nd\ne\nf\n");
}

#[test]
fn librdkafkas_idempotent_producer_delivers_every_record_exactly_once() {
    let b = TestBroker::start(KAFKA);
    let values: Vec<String> = (0..2000).map(|i| format!("idem-{i}")).collect();
    let r = py(
        &[
            "produce",
            &kafka(&b),
            "once",
            "--acks",
            "all",
            "--idempotent",
        ],
        &(values.join("\n") + "\n"),
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let reply: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(reply["errors"].as_array().unwrap().len(), 0, "{reply}");
    assert_eq!(reply["delivered"].as_array().unwrap().len(), 2000);
    let http = String::from_utf8(b.read_all("once")).unwrap();
    let got: Vec<&str> = http.lines().collect();
    assert_eq!(got, values, "every record once, in order");
}
