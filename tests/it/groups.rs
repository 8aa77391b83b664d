//! Consumer groups and retention against the real binary.

use std::process::Command;
use std::time::{Duration, Instant};

use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions};

use crate::harness::TestBroker;

/// Writes `n` numbered messages (`m<i>\n`, 100 per body) to `category`.
fn fill(b: &TestBroker, category: &str, from: u64, n: u64) {
    let mut i = from;
    while i < from + n {
        let mut body = String::new();
        for _ in 0..100.min(from + n - i) {
            body.push_str(&format!("m{i:07}\n"));
            i += 1;
        }
        assert_eq!(b.write(category, body).0, 200);
    }
}

fn consumers(b: &TestBroker, category: &str) -> serde_json::Value {
    let (s, text) = b.get_text(&format!("/consumers?category={category}"));
    assert_eq!(s, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn group<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    v.as_array().unwrap().iter().find(|g| g["consumer"] == name)
}

/// Consumes with `group` until `limit` messages or the end; acks each batch.
async fn consume_group(url: &str, category: &str, group: &str, limit: usize) -> Vec<String> {
    let config = ConsumerConfig::default()
        .follow(false)
        .max_read_bytes(2048)
        .group(Some(group.to_owned()));
    let mut c = Consumer::start(
        Client::new(url).unwrap(),
        category,
        config,
        Positions::default(),
    )
    .unwrap();
    let mut got = Vec::new();
    while got.len() < limit {
        let Some(batch) = c.next().await.unwrap() else {
            break;
        };
        got.extend(
            batch
                .messages()
                .map(|m| String::from_utf8_lossy(m).trim_end().to_owned()),
        );
        c.ack(&batch).await.unwrap();
    }
    got
}

#[test]
fn two_groups_are_independent_and_resume_after_kill9() {
    let mut b = TestBroker::start(&["--max-chunk-size", "4096"]);
    fill(&b, "g", 0, 3000); // 9 bytes each: 27000 bytes, ~7 chunks
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{}", b.addr);
    let all = rt.block_on(consume_group(&url, "g", "A", usize::MAX));
    assert_eq!(all.len(), 3000);
    let half = rt.block_on(consume_group(&url, "g", "B", 1500));
    assert!(half.len() >= 1500 && half.len() < 3000, "{}", half.len());

    let v = consumers(&b, "g");
    let a = group(&v, "A").expect("group A listed");
    assert_eq!(a["lag_bytes"], 0);
    assert_eq!(a["lag_messages"], 0);
    let bg = group(&v, "B").expect("group B listed");
    let left = 3000 - half.len() as u64;
    assert_eq!(bg["lag_messages"], left, "{v}");
    assert_eq!(bg["lag_bytes"], left * 9, "{v}");

    // Positions are durable: kill -9, restart, B resumes exactly after its
    // last acked batch; A has nothing left.
    b.restart();
    let url = format!("http://{}", b.addr);
    let rest = rt.block_on(consume_group(&url, "g", "B", usize::MAX));
    let mut seen: Vec<String> = half.iter().chain(rest.iter()).cloned().collect();
    assert_eq!(seen.len(), 3000, "no message lost or repeated");
    seen.dedup();
    assert_eq!(seen.len(), 3000);
    assert!(rt
        .block_on(consume_group(&url, "g", "A", usize::MAX))
        .is_empty());
    // New messages go to both groups.
    fill(&b, "g", 3000, 10);
    assert_eq!(
        rt.block_on(consume_group(&url, "g", "A", usize::MAX)).len(),
        10
    );
    assert_eq!(
        rt.block_on(consume_group(&url, "g", "B", usize::MAX)).len(),
        10
    );
}

#[test]
fn group_ack_errors_and_delete() {
    let b = TestBroker::start(&[]);
    fill(&b, "e", 0, 10); // 90 bytes in node1-chunk000000000
    let base = "/ack?category=e&consumer=G&chunk=node1-chunk000000000";
    assert_eq!(b.post(&format!("{base}&off=45"), "").0, 200);
    assert_eq!(
        b.post(&format!("{base}&off=45"), "").0,
        200,
        "same position again is fine"
    );
    let (s, msg) = b.post(&format!("{base}&off=18"), "");
    assert_eq!(s, 409, "{msg}");
    assert!(
        msg.contains("45"),
        "the body names the stored position: {msg}"
    );
    assert_eq!(
        b.post(&format!("{base}&off=46"), "").0,
        400,
        "not a boundary"
    );
    assert_eq!(
        b.post(&format!("{base}&off=91"), "").0,
        400,
        "beyond the end"
    );
    assert_eq!(b.post(&format!("{base}&off=abc"), "").0, 400);
    let (s, msg) = b.post(&format!("{base}&off=-1"), "");
    assert_eq!(s, 400, "{msg}");
    assert_eq!(
        b.post(
            "/ack?category=e&consumer=../x&chunk=node1-chunk000000000&off=0",
            ""
        )
        .0,
        400
    );
    assert_eq!(
        b.post(
            "/ack?category=e&consumer=G&chunk=node1-chunk000000009&off=0",
            ""
        )
        .0,
        404
    );
    // 400 before 409: a bad offset that is also behind is a 400.
    assert_eq!(b.post(&format!("{base}&off=17"), "").0, 400);
    assert_eq!(b.post(&format!("{base}&off=90"), "").0, 200);
    let v = consumers(&b, "e");
    assert_eq!(group(&v, "G").unwrap()["lag_bytes"], 0);
    assert_eq!(group(&v, "G").unwrap()["positions"][0]["offset"], 90, "{v}");
    // Delete: gone from the listing, 404 the second time, nothing left on disk.
    let r = b
        .http
        .delete(b.url("/consumers?category=e&consumer=G"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(group(&consumers(&b, "e"), "G").is_none());
    let r = b
        .http
        .delete(b.url("/consumers?category=e&consumer=G"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(!b.data_dir().join(".chunkbus/groups/e/G.pos").exists());
    // A deleted group starts over on its next ack.
    assert_eq!(b.post(&format!("{base}&off=9"), "").0, 200);
    assert_eq!(consumers(&b, "nosuch"), serde_json::json!([]));
    assert_eq!(b.get_text("/consumers?category=a/b").0, 400);
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn acked_retention_deletes_exactly_what_every_group_finished() {
    let b = TestBroker::start(&["--max-chunk-size", "4096", "--retention", "acked"]);
    fill(&b, "r", 0, 2000); // ~5 sealed chunks + an open one
    let chunks = b.chunks("r");
    let sealed: Vec<_> = chunks.iter().filter(|c| c.complete).cloned().collect();
    assert!(sealed.len() >= 3, "{chunks:?}");
    // Nobody registered: nothing is deleted by acked retention.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(b.chunks("r").len(), chunks.len());
    // A acks every sealed chunk; B only the first two.
    for (i, c) in sealed.iter().enumerate() {
        let ack = |g: &str| {
            b.post(
                &format!(
                    "/ack?category=r&consumer={g}&chunk={}&off={}",
                    c.name, c.size
                ),
                "",
            )
            .0
        };
        assert_eq!(ack("A"), 200);
        if i < 2 {
            assert_eq!(ack("B"), 200);
        }
    }
    // A chukcha ack of a chunk B has not finished is refused.
    let (s, msg) = b.get_text(&format!(
        "/ack?category=r&chunk={}&size={}",
        sealed[2].name, sealed[2].size
    ));
    assert_eq!(s, 409, "{msg}");
    assert!(msg.contains('B'), "{msg}");
    wait_until("the two finished chunks are deleted", || {
        b.chunks("r").len() == chunks.len() - 2
    });
    std::thread::sleep(Duration::from_millis(1500));
    let left: Vec<String> = b.chunks("r").into_iter().map(|c| c.name).collect();
    let expect: Vec<String> = chunks.iter().skip(2).map(|c| c.name.clone()).collect();
    assert_eq!(left, expect, "exactly those, nothing else");
    assert!(b.logs().contains("retention deleted chunk"));
}

#[test]
fn byte_and_age_bounds_delete_oldest_sealed_chunks() {
    let b = TestBroker::start(&["--max-chunk-size", "4096", "--retention-bytes", "10KiB"]);
    fill(&b, "rb", 0, 3000); // ~27 KB
    wait_until("category under 10 KiB plus the open chunk", || {
        let total: u64 = b.chunks("rb").iter().map(|c| c.size).sum();
        total <= 10 * 1024
    });
    let left = b.chunks("rb");
    let last = left.last().unwrap();
    assert!(
        b.read_all("rb").ends_with(b"m0002999\n"),
        "the newest data is kept ({last:?})"
    );

    let b = TestBroker::start(&["--max-chunk-size", "4096", "--retention-hours", "0.0003"]);
    fill(&b, "ra", 0, 1000);
    wait_until("sealed chunks older than ~1 s are deleted", || {
        b.chunks("ra").iter().all(|c| !c.complete)
    });
    assert!(!b.chunks("ra").is_empty(), "the open chunk stays");
}

#[test]
fn bad_retention_settings_are_refused() {
    let cases: [&[&str]; 4] = [
        &["--retention", "sometimes"],
        &["--retention-hours=-1"],
        &["--retention-hours", "0"],
        &["--retention-bytes", "0"],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_chunkbus"))
            .arg("serve")
            .args(args)
            .args(["--data-dir", "/nonexistent/never-created"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("retention"), "{err}");
    }
}

#[test]
fn cli_consume_with_a_group_resumes() {
    let b = TestBroker::start(&[]);
    fill(&b, "cg", 0, 500);
    let server = format!("http://{}", b.addr);
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_chunkbus"))
            .args([
                "consume",
                "--category",
                "cg",
                "--group",
                "cli",
                "--server",
                &server,
            ])
            .env("CHUNKBUS_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run().lines().count(), 500);
    assert_eq!(run(), "", "everything was acked");
    fill(&b, "cg", 500, 7);
    let more = run();
    assert_eq!(more.lines().count(), 7);
    assert!(more.starts_with("m0000500\n"));
}

#[test]
fn metrics_show_requests_chunks_and_consumer_lag() {
    let b = TestBroker::start(&[]);
    fill(&b, "mt", 0, 10); // 90 bytes
    assert_eq!(
        b.post(
            "/ack?category=mt&consumer=slow&chunk=node1-chunk000000000&off=36",
            ""
        )
        .0,
        200
    );
    assert_eq!(
        b.get_text("/read?category=mt&chunk=node1-chunk000000009&off=0&max_size=9")
            .0,
        404
    );
    let (s, text) = b.get_text("/metrics");
    assert_eq!(s, 200);
    for line in [
        "chunkbus_writes_total 1",
        "chunkbus_write_bytes_total 90",
        "chunkbus_http_errors_total{status=\"404\"} 1",
        "chunkbus_chunks{category=\"mt\",state=\"open\"} 1",
        "chunkbus_consumer_lag_bytes{category=\"mt\",consumer=\"slow\"} 54",
        "chunkbus_consumer_lag_messages{category=\"mt\",consumer=\"slow\"} 6",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    // The durable group ack above was fdatasync'd: the histogram saw it.
    let fsyncs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("chunkbus_fsync_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no chunkbus_fsync_seconds_count in:\n{text}"));
    assert!(fsyncs >= 1, "{fsyncs} fsyncs counted");
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
}
