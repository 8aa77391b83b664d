//! Idempotent producers over raw HTTP (`/write?producer=P&seq=N`): a batch
//! is stored once whatever repeats it — a retry, a restart after kill -9,
//! the same batch sent to another server of the cluster after the copy
//! reached it — and plain writes are unchanged.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{TestBroker, TestCluster};

fn tagged(b: &TestBroker, cat: &str, producer: u64, seq: u64, body: &str) -> (u16, Value) {
    let (s, text) = b.post(
        &format!("/write?category={cat}&producer={producer}&seq={seq}"),
        body,
    );
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (s, v)
}

fn position(v: &Value) -> (String, u64, u64) {
    (
        v["chunk"].as_str().unwrap_or_default().to_owned(),
        v["offset"].as_u64().unwrap_or(u64::MAX),
        v["size"].as_u64().unwrap_or(u64::MAX),
    )
}

#[test]
fn a_repeated_batch_is_stored_once_and_answered_with_its_position_across_kill9() {
    let mut b = TestBroker::start(&[]);
    let (s, first) = tagged(&b, "idem", 7, 1, "a\n");
    assert_eq!(s, 200, "{first}");
    assert!(first.get("duplicate").is_none(), "{first}");
    let (s, again) = tagged(&b, "idem", 7, 1, "a\n");
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["duplicate"], Value::Bool(true), "{again}");
    assert_eq!(position(&again), position(&first));
    // Plain writes and other producers are independent.
    assert_eq!(b.write("idem", "plain\n").0, 200);
    assert_eq!(tagged(&b, "idem", 8, 1, "x\n").0, 200);
    let (s, second) = tagged(&b, "idem", 7, 2, "b\n");
    assert_eq!(s, 200, "{second}");
    // A sequence number below the last stored one is refused.
    let (s, stale) = tagged(&b, "idem", 7, 1, "a\n");
    assert_eq!(s, 409, "{stale}");
    assert!(stale.to_string().contains("older"), "{stale}");
    // Half a tag, or producer 0, is a 400 with nothing stored.
    for q in [
        "producer=7",
        "seq=3",
        "producer=0&seq=3",
        "producer=x&seq=1",
    ] {
        let (s, body) = b.post(&format!("/write?category=idem&{q}"), "no\n");
        assert_eq!(s, 400, "{q}: {body}");
    }
    // kill -9 and restart: the table comes back from the index records.
    b.kill9();
    b.start_again();
    let (s, after) = tagged(&b, "idem", 7, 2, "b\n");
    assert_eq!(s, 200, "{after}");
    assert_eq!(after["duplicate"], Value::Bool(true), "{after}");
    assert_eq!(position(&after), position(&second));
    assert_eq!(tagged(&b, "idem", 7, 1, "a\n").0, 409);
    assert_eq!(
        tagged(&b, "idem", 8, 1, "x\n").1["duplicate"],
        Value::Bool(true)
    );
    // Gaps are allowed: a producer that dropped batches goes on.
    assert_eq!(tagged(&b, "idem", 7, 10, "c\n").0, 200);
    assert_eq!(b.read_all("idem"), b"a\nplain\nx\nb\nc\n");
    let (_, metrics) = b.get_text("/metrics");
    assert!(
        metrics.contains("chunkbus_duplicate_writes_total 2"),
        "{metrics}"
    );
}

#[test]
fn a_duplicate_with_sync_or_replicas_waits_like_the_original() {
    let mut c = TestCluster::start(2, &["--replication-timeout", "2s"]);
    let (s, first) = tagged(&c.nodes[0], "idem", 5, 1, "one\n");
    assert_eq!(s, 200, "{first}");
    let (s, again) = c.nodes[0].post(
        "/write?category=idem&producer=5&seq=1&sync=1&min_sync_replicas=1",
        "one\n",
    );
    assert_eq!(s, 200, "{again}");
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(position(&again), position(&first));
    // The only peer is down: the duplicate cannot be replicated further,
    // and says so like a fresh write would (written: it is stored).
    c.nodes[1].kill9();
    let (s, _) = tagged(&c.nodes[0], "idem", 5, 2, "two\n");
    assert_eq!(s, 200);
    let r = c.nodes[0]
        .http
        .post(c.nodes[0].url("/write?category=idem&producer=5&seq=2&min_sync_replicas=1"))
        .body("two\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.headers()
            .get("chunkbus-written")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
}

#[test]
fn a_server_that_copied_a_batch_answers_its_repeat_as_a_duplicate() {
    let mut c = TestCluster::start(2, &[]);
    let (s, first) = tagged(&c.nodes[0], "idem", 9, 4, "from n1\n");
    assert_eq!(s, 200, "{first}");
    c.converge("idem", Duration::from_secs(20), |l| !l.is_empty());
    // The producer fails over to n2 and repeats the batch: n2 holds the
    // copy and its tag, so the batch is not stored twice.
    let (s, on_n2) = tagged(&c.nodes[1], "idem", 9, 4, "from n1\n");
    assert_eq!(s, 200, "{on_n2}");
    assert_eq!(on_n2["duplicate"], Value::Bool(true), "{on_n2}");
    assert_eq!(position(&on_n2), position(&first));
    // It goes on at n2; after a restart n2 still knows both batches.
    assert_eq!(tagged(&c.nodes[1], "idem", 9, 5, "from n2\n").0, 200);
    c.nodes[1].kill9();
    c.nodes[1].start_again();
    assert_eq!(
        tagged(&c.nodes[1], "idem", 9, 4, "from n1\n").0,
        409,
        "older than the last batch n2 stored"
    );
    assert_eq!(
        tagged(&c.nodes[1], "idem", 9, 5, "from n2\n").1["duplicate"],
        Value::Bool(true)
    );
    let all = c.converge("idem", Duration::from_secs(20), |l| l.len() == 2);
    assert_eq!(all.iter().map(|e| e.size).sum::<u64>(), 16);
}

#[test]
fn a_probe_stores_nothing_and_a_reused_tag_with_another_body_is_a_conflict() {
    let b = TestBroker::start(&[]);
    // Not held: 404, written false, nothing stored (the body is ignored).
    let r = b
        .http
        .post(b.url("/write?category=probe&producer=3&seq=1&probe=1"))
        .body("ignored\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.headers()
            .get("chunkbus-written")
            .and_then(|v| v.to_str().ok()),
        Some("false")
    );
    assert!(b.read_all("probe").is_empty());
    let (s, body) = b.post("/write?category=probe&probe=1", "");
    assert_eq!(s, 400, "a probe needs a tag: {body}");
    // Held: the position, as a duplicate.
    let (_, first) = tagged(&b, "probe", 3, 1, "one\n");
    let (s, probe) = b.post("/write?category=probe&producer=3&seq=1&probe=1", "");
    assert_eq!(s, 200, "{probe}");
    let probe: Value = serde_json::from_str(&probe).unwrap();
    assert_eq!(probe["duplicate"], Value::Bool(true));
    assert_eq!(position(&probe), position(&first));
    // The same tag with another body is not a repeat: 409, nothing stored.
    let (s, other) = tagged(&b, "probe", 3, 1, "two\n");
    assert_eq!(s, 409, "{other}");
    assert!(other.to_string().contains("other content"), "{other}");
    assert_eq!(b.read_all("probe"), b"one\n");
}

/// A producer's last batch is remembered after a restart even when plain
/// writes filled several newer chunks after it (the rebuild reads every
/// chunk written within its window, not only the newest ones).
#[test]
fn a_repeat_after_a_restart_is_recognised_behind_newer_chunks() {
    let mut b = TestBroker::start(&["--max-chunk-size", "4KiB"]);
    let (s, first) = tagged(&b, "window", 11, 7, "tagged\n");
    assert_eq!(s, 200, "{first}");
    let line = "x".repeat(1000) + "\n";
    for _ in 0..20 {
        assert_eq!(b.write("window", line.clone()).0, 200);
    }
    assert!(b.chunks("window").len() >= 5, "{:?}", b.chunks("window"));
    b.kill9();
    b.start_again();
    let (s, again) = tagged(&b, "window", 11, 7, "tagged\n");
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["duplicate"], Value::Bool(true), "{again}");
    assert_eq!(position(&again), position(&first));
}
