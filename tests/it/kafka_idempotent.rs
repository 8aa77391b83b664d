//! Idempotent Kafka producers: librdkafka's (`enable.idempotence=true`)
//! against the real binary, and Produce requests crafted with the
//! `kafka-protocol` crate and sent twice on a raw connection — a retried
//! batch is stored once and answered with its original base offset, also
//! after kill -9 and a restart (the dedup table is rebuilt from chunks).

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse};

use super::harness::TestBroker;
use super::kafka::{kafka, py, KAFKA};
use super::kafka_wire::{produce_on, Wire};

/// A raw connection to `b`'s Kafka listener.
fn open(b: &TestBroker) -> Wire {
    Wire::open(b.kafka_addr.unwrap())
}

/// A new idempotent producer id and epoch.
fn init_producer_id(c: &mut Wire) -> (i64, i16) {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    req.transaction_timeout_ms = 60_000;
    let resp: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &req);
    assert_eq!(resp.error_code, 0);
    (resp.producer_id.0, resp.producer_epoch)
}

/// Produces `values` as one idempotent batch (acks=all) to partition 0;
/// returns the partition's error code and base offset.
fn produce(
    c: &mut Wire,
    topic: &str,
    id: (i64, i16),
    first_seq: i32,
    values: &[&str],
) -> (i16, i64) {
    produce_on(
        c,
        topic,
        0,
        values,
        Some((id.0, id.1, first_seq)),
        -1,
        10_000,
    )
}

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;

#[test]
fn a_retried_idempotent_batch_is_stored_once_even_after_kill9() {
    let mut b = TestBroker::start(KAFKA);
    let mut c = open(&b);
    let id = init_producer_id(&mut c);
    assert!(id.0 > 0 && id.1 == 0, "{id:?}");
    let (e, base) = produce(&mut c, "idem", id, 0, &["a", "b", "c"]);
    assert_eq!(e, 0);
    assert!(base >= 0);
    // The same request again: stored once, answered with the original.
    assert_eq!(produce(&mut c, "idem", id, 0, &["a", "b", "c"]), (0, base));
    assert_eq!(produce(&mut c, "idem", id, 3, &["d"]), (0, base + 3));
    // A gap (sequence 5 after 3) and an overlap are Kafka's error 45; an
    // older batch was stored before: 46 (librdkafka counts it delivered).
    assert_eq!(
        produce(&mut c, "idem", id, 5, &["x"]).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        produce(&mut c, "idem", id, 2, &["c", "y"]).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        produce(&mut c, "idem", id, 0, &["a", "b", "c"]).0,
        DUPLICATE_SEQUENCE_NUMBER
    );
    // Another epoch of the same id numbers its records afresh.
    assert_eq!(produce(&mut c, "idem", (id.0, 1), 0, &["e"]), (0, base + 4));
    // kill -9 between the original and its retry: the table is rebuilt
    // from the chunks' index records.
    b.restart();
    let mut c = open(&b);
    assert_eq!(produce(&mut c, "idem", id, 3, &["d"]), (0, base + 3));
    assert_eq!(produce(&mut c, "idem", (id.0, 1), 0, &["e"]), (0, base + 4));
    assert_eq!(
        produce(&mut c, "idem", id, 5, &["x"]).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    let (e, f) = produce(&mut c, "idem", id, 4, &["f"]);
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
