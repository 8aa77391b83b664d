//! Topic administration over the Kafka protocol with confluent-kafka's
//! AdminClient (librdkafka): CreateTopics, DescribeConfigs, list_topics,
//! DeleteTopics, CreatePartitions are answered in their own formats with
//! Kafka's error codes, on a connection that stays open; an API the
//! listener does not serve is still answered.

use super::harness::TestBroker;
use super::kafka::{frame, kafka, py, raw, KAFKA};
use super::kafka_wire::describe_groups;

#[test]
fn admin_client_creates_describes_and_lists_topics() {
    let b = TestBroker::start(&[
        "--kafka-listen",
        "127.0.0.1:0",
        "--max-message-size",
        "64KiB",
        "--retention-hours",
        "2",
    ]);
    let r = py(&["admin", &kafka(&b), "made"], "");
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let out: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(out["create"], "ok", "{out}");
    assert_eq!(out["create_again"], "TOPIC_ALREADY_EXISTS", "{out}");
    assert_eq!(out["create_five_partitions"], "INVALID_PARTITIONS", "{out}");
    assert_eq!(out["create_bad_name"], "TOPIC_EXCEPTION", "{out}");
    assert_eq!(out["create_compacted"], "INVALID_CONFIG", "{out}");
    assert_eq!(out["delete"], "TOPIC_DELETION_DISABLED", "{out}");
    assert_eq!(out["create_partitions"], "INVALID_PARTITIONS", "{out}");
    // The real settings, read-only.
    let topic = &out["topic_configs"];
    assert_eq!(topic["max.message.bytes"][0], "65535", "{topic}");
    assert_eq!(topic["retention.ms"][0], "7200000", "{topic}");
    assert_eq!(topic["message.timestamp.type"][0], "LogAppendTime");
    assert_eq!(topic["cleanup.policy"][0], "delete");
    assert!(topic.as_object().unwrap().values().all(|v| v[1] == true));
    assert_eq!(out["broker_configs"]["message.max.bytes"], "65535");
    // Created means listed, over Kafka and over HTTP (an empty category).
    assert_eq!(out["topics"]["made"], 1, "{out}");
    let (status, chunks) = b.get_text("/listChunks?category=made");
    assert_eq!((status, chunks.trim()), (200, "[]"));
    assert!(
        out["topics"].get("made-five").is_none(),
        "refused: not created"
    );
}

#[test]
fn an_api_the_listener_does_not_serve_is_answered() {
    let b = TestBroker::start(KAFKA);
    let addr = b.kafka_addr.unwrap();
    // ElectLeaders (43), DescribeAcls (29), an unknown key: UNSUPPORTED_VERSION
    // (35) under the request's correlation id, never silence.
    for key in [43i16, 29, 31_000] {
        let mut req = key.to_be_bytes().to_vec();
        req.extend_from_slice(&0i16.to_be_bytes());
        req.extend_from_slice(&77i32.to_be_bytes());
        req.extend_from_slice(&[0xff, 0xff]); // null client id
        let got = raw(addr, &frame(&req));
        assert!(got.len() >= 10, "no answer to api {key}: {got:?}");
        assert_eq!(&got[4..8], &77i32.to_be_bytes());
        assert_eq!(&got[8..10], &35i16.to_be_bytes());
    }
}

#[test]
fn admin_client_lists_and_describes_consumer_groups() {
    let b = TestBroker::start(KAFKA);
    let (status, text) = b.write("listed", "a\nb\n");
    assert_eq!(status, 200, "{text}");
    // A chunkbus group only an HTTP consumer uses: listed as a simple
    // (offsets-only) consumer group, Empty.
    let chunk = &b.chunks("listed")[0].name;
    let (status, text) = b.post(
        &format!("/ack?category=listed&consumer=http-only&chunk={chunk}&off=2"),
        "",
    );
    assert_eq!(status, 200, "{text}");
    let r = py(
        &[
            "groups",
            &kafka(&b),
            "listed",
            "--group",
            "kgroup",
            "--stored",
            "http-only",
        ],
        "",
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let out: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    // While a member holds the partition.
    assert_eq!(
        out["listed"]["kgroup"],
        serde_json::json!(["STABLE", false]),
        "{out}"
    );
    assert_eq!(
        out["listed"]["http-only"],
        serde_json::json!(["EMPTY", true]),
        "{out}"
    );
    let live = &out["live"];
    assert_eq!(live["state"], "STABLE", "{out}");
    assert_eq!(live["assignor"], "range", "{out}");
    assert_eq!(
        live["members"],
        serde_json::json!([["member-a", "/127.0.0.1", [0]]]),
        "{out}"
    );
    // After the member committed and left (its position stays), for the
    // HTTP-only group, and for a group nobody uses.
    assert_eq!(out["after_leave"]["state"], "EMPTY", "{out}");
    assert_eq!(
        out["after_leave"]["members"],
        serde_json::json!([]),
        "{out}"
    );
    assert_eq!(out["stored"]["state"], "EMPTY", "{out}");
    assert_eq!(out["stored"]["simple"], true, "{out}");
    assert_eq!(out["nobody"]["state"], "DEAD", "{out}");
}

#[test]
fn describe_groups_answers_each_groups_error_and_keeps_the_connection() {
    let b = TestBroker::start(KAFKA);
    let addr = b.kafka_addr.unwrap();
    // An invalid name (24, state "" as Kafka answers) and a group nobody
    // uses (Dead, no error); ListGroups answers next on the same
    // connection, listing nothing.
    let (described, listed) = describe_groups(addr, &["my.group", "nobody"]);
    assert_eq!(described, vec![(24, String::new()), (0, "Dead".to_owned())]);
    assert!(listed.is_empty(), "{listed:?}");
}
