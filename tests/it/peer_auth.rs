//! The peer credential and what peers may report (issue 15, point 9 and
//! the `/peer/fetch` bounds of point 12): with `--peer-token`, the peer
//! endpoints take only that token and the client token gets `401`; a
//! forged replica report cannot make a `min_sync_replicas` write succeed;
//! a cluster with a peer token replicates and follows a reload of it;
//! `/peer/fetch` refuses record numbers that overflow and bounds `max_size`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{free_port, TestBroker, TestCluster};

const CLIENT: &str = "client-token-15";
const PEER: &str = "peer-token-15";

/// A request with an optional bearer token: (status, body).
fn send(req: reqwest::blocking::RequestBuilder, token: Option<&str>) -> (u16, String) {
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let r = req.send().expect("request");
    (r.status().as_u16(), r.text().unwrap_or_default())
}

fn get(b: &TestBroker, path: &str, token: Option<&str>) -> (u16, String) {
    send(b.http.get(b.url(path)), token)
}

fn post(b: &TestBroker, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    send(
        b.http
            .post(b.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned()),
        token,
    )
}

/// A changes poll claiming to come from `from`, reporting `held`.
fn poll_body(from: &str, held: &[(&str, &str, u64)]) -> String {
    let held: Vec<serde_json::Value> = held
        .iter()
        .map(|(category, chunk, n)| {
            serde_json::json!({"category": category, "chunk": chunk, "written": n, "synced": n})
        })
        .collect();
    serde_json::json!({"from": from, "epoch": 0, "since": 0, "wait_ms": 0, "held": held})
        .to_string()
}

/// The chunks of `category` on `b`, listed with `token`.
fn list(b: &TestBroker, category: &str, token: Option<&str>) -> Vec<serde_json::Value> {
    let (s, body) = get(b, &format!("/listChunks?category={category}"), token);
    assert_eq!(s, 200, "{body}");
    serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
}

/// Waits until `b` lists `bytes` bytes of `category`.
fn wait_for_bytes(b: &TestBroker, category: &str, bytes: u64, token: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let have: u64 = list(b, category, token)
            .iter()
            .map(|c| c["size"].as_u64().unwrap())
            .sum();
        if have == bytes {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{category}: {have} of {bytes} bytes after 20 s:\n{}",
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One node of a cluster whose only peer (`n2`) never runs.
fn lone_node(extra: &[&str]) -> TestBroker {
    let peers = format!("n2=http://127.0.0.1:{}", free_port());
    let mut args = vec!["--name", "n1", "--peers", &peers];
    args.extend_from_slice(extra);
    TestBroker::start(&args)
}

#[test]
fn client_token_is_refused_on_peer_endpoints_when_a_peer_token_is_set() {
    let b = lone_node(&["--token", CLIENT, "--peer-token", PEER]);
    let (s, msg) = post(&b, "/write?category=c", "a\n", Some(CLIENT));
    assert_eq!(s, 200, "{msg}");
    let chunk = list(&b, "c", Some(CLIENT))[0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let fetch = format!("/peer/fetch?category=c&chunk={chunk}&off=0&rec=0&max_size=100");
    let ack = format!("/peer/ack?category=c&chunk={chunk}&size=2&from=n2");
    let poll = poll_body("n2", &[]);
    for token in [None, Some(CLIENT), Some("wrong"), Some(&PEER[1..])] {
        for (what, (s, msg)) in [
            ("changes", post(&b, "/peer/changes", &poll, token)),
            ("fetch", get(&b, &fetch, token)),
            ("held", get(&b, "/peer/held?owner=n2", token)),
            ("ack", post(&b, &ack, "", token)),
        ] {
            assert_eq!(s, 401, "/peer/{what} with {token:?}: {msg}");
            assert!(msg.contains("peer token"), "{msg}");
        }
    }
    // The peer token opens the peer endpoints …
    assert_eq!(post(&b, "/peer/changes", &poll, Some(PEER)).0, 200);
    assert_eq!(get(&b, &fetch, Some(PEER)).0, 200);
    assert_eq!(get(&b, "/peer/held?owner=n2", Some(PEER)).0, 200);
    let (s, msg) = post(&b, &ack, "", Some(PEER));
    assert_eq!(s, 400, "an open chunk cannot be acked: {msg}");
    // … and nothing else.
    assert_eq!(get(&b, "/listCategories", Some(PEER)).0, 401);
    assert_eq!(post(&b, "/write?category=c", "b\n", Some(PEER)).0, 401);
    // Only configured peers may poll or forward acks.
    let (s, msg) = post(&b, "/peer/changes", &poll_body("n9", &[]), Some(PEER));
    assert_eq!(s, 403, "{msg}");
    let (s, msg) = post(
        &b,
        &format!("/peer/ack?category=c&chunk={chunk}&size=2&from=n9"),
        "",
        Some(PEER),
    );
    assert_eq!(s, 403, "{msg}");
    let (s, msg) = post(
        &b,
        &format!("/peer/ack?category=c&chunk={chunk}&size=2"),
        "",
        Some(PEER),
    );
    assert_eq!(s, 400, "{msg}");
}

/// n1's chunk of `category` and the names of the next few it would create.
fn chunk_names(b: &TestBroker, category: &str, token: Option<&str>) -> Vec<String> {
    let first = list(b, category, token)[0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let (owner, index) = first.split_once("-chunk").unwrap();
    let index: u64 = index.parse().unwrap();
    (index..index + 4)
        .map(|i| format!("{owner}-chunk{i:09}"))
        .collect()
}

#[test]
fn forged_replica_report_does_not_satisfy_min_sync_replicas() {
    // Without a peer token (compatibility): any client may poll as a peer,
    // but what it reports is clamped to what the owner has written, and
    // chunks that do not exist are ignored.
    let mut c = TestCluster::start(2, &["--replication-timeout", "1s"]);
    assert_eq!(c.nodes[0].write("c", "a\n").0, 200);
    wait_for_bytes(&c.nodes[1], "c", 2, None);
    c.nodes[1].kill9();
    let names = chunk_names(&c.nodes[0], "c", None);
    let held: Vec<(&str, &str, u64)> = names.iter().map(|n| ("c", n.as_str(), u64::MAX)).collect();
    let (s, msg) = post(&c.nodes[0], "/peer/changes", &poll_body("n2", &held), None);
    assert_eq!(s, 200, "{msg}");
    for sync in ["0", "1"] {
        let t = Instant::now();
        let (s, msg) = c.nodes[0].post(
            &format!("/write?category=c&min_sync_replicas=1&sync={sync}"),
            "b\n",
        );
        assert_eq!(
            s, 503,
            "sync={sync}: a forged report counted as a replica: {msg}"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }
    let (_, status) = c.nodes[0].get_text("/peers");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        v["peers"][0]["holds_our_bytes"].as_u64(),
        Some(2),
        "the report was clamped to what n1 had written: {status}"
    );
    drop(c);

    // With a peer token, the client token cannot even report.
    let mut c = TestCluster::start(
        2,
        &[
            "--replication-timeout",
            "1s",
            "--token",
            CLIENT,
            "--peer-token",
            PEER,
        ],
    );
    let (s, msg) = post(&c.nodes[0], "/write?category=c", "a\n", Some(CLIENT));
    assert_eq!(s, 200, "{msg}");
    wait_for_bytes(&c.nodes[1], "c", 2, Some(CLIENT));
    c.nodes[1].kill9();
    let names = chunk_names(&c.nodes[0], "c", Some(CLIENT));
    let held: Vec<(&str, &str, u64)> = names.iter().map(|n| ("c", n.as_str(), u64::MAX)).collect();
    let (s, msg) = post(
        &c.nodes[0],
        "/peer/changes",
        &poll_body("n2", &held),
        Some(CLIENT),
    );
    assert_eq!(s, 401, "{msg}");
    let (s, msg) = post(
        &c.nodes[0],
        "/write?category=c&min_sync_replicas=1",
        "b\n",
        Some(CLIENT),
    );
    assert_eq!(s, 503, "{msg}");
}

fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn cluster_with_a_peer_token_replicates_and_follows_its_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    write_config(&file, "peer_token = \"peer-one\"\n");
    let cfg = file.display().to_string();
    let c = TestCluster::start(
        2,
        &[
            "--config",
            &cfg,
            "--token",
            CLIENT,
            "--replication-timeout",
            "5s",
        ],
    );
    // Replication works both ways: peers send the peer token, not the
    // client token (which the peer endpoints refuse).
    for (i, node) in c.nodes.iter().enumerate() {
        let (s, msg) = post(
            node,
            &format!("/write?category=r{i}&min_sync_replicas=1&sync=1"),
            "one\n",
            Some(CLIENT),
        );
        assert_eq!(s, 200, "{msg}");
        wait_for_bytes(&c.nodes[1 - i], &format!("r{i}"), 4, Some(CLIENT));
    }
    // `/peer/held` asked by the other node.
    let held = |i: usize| format!("/peer/held?owner=n{}", 2 - i);
    for (i, node) in c.nodes.iter().enumerate() {
        assert_eq!(get(node, &held(i), Some("peer-one")).0, 200);
        assert_eq!(get(node, &held(i), Some(CLIENT)).0, 401);
    }
    // A new peer token applies live on both servers.
    write_config(&file, "peer_token = \"peer-two\"\n");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !c
        .nodes
        .iter()
        .enumerate()
        .all(|(i, n)| get(n, &held(i), Some("peer-two")).0 == 200)
    {
        assert!(Instant::now() < deadline, "peer_token not reloaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (i, node) in c.nodes.iter().enumerate() {
        assert_eq!(get(node, &held(i), Some("peer-one")).0, 401);
    }
    for (i, node) in c.nodes.iter().enumerate() {
        let (s, msg) = post(
            node,
            &format!("/write?category=r{i}&min_sync_replicas=1"),
            "two\n",
            Some(CLIENT),
        );
        assert_eq!(s, 200, "replication with the reloaded peer token: {msg}");
        wait_for_bytes(&c.nodes[1 - i], &format!("r{i}"), 8, Some(CLIENT));
    }
}

#[test]
fn peer_fetch_refuses_overflowing_record_numbers_and_bounds_max_size() {
    let b = lone_node(&[]);
    // Five 4 MiB batches in one chunk (20 MiB, more than one fetch's bound).
    let line = format!("{}\n", "x".repeat(1023));
    let body = line.repeat(4096);
    for _ in 0..5 {
        let (s, msg) = b.write("big", body.clone());
        assert_eq!(s, 200, "{msg}");
    }
    let chunk = b.chunks("big")[0].name.clone();
    let base = format!("/peer/fetch?category=big&chunk={chunk}");
    for (off, rec) in [
        (0, u64::MAX),
        (4 << 20, u64::MAX),
        (4 << 20, u64::MAX / 16 + 1),
        (0, 1 << 60),
    ] {
        let (s, msg) = get(&b, &format!("{base}&off={off}&rec={rec}&max_size=1"), None);
        assert_eq!(s, 400, "off={off} rec={rec}: {msg}");
        assert!(msg.contains("boundary"), "{msg}");
    }
    assert_eq!(b.get_text("/healthz").0, 200, "still serving");
    // A huge max_size is clamped to 16 MiB (at least one batch).
    let r = b
        .http
        .get(b.url(&format!("{base}&off=0&rec=0&max_size={}", u64::MAX)))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let records: usize = r.headers()["chunkbus-records"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let len = r.bytes().unwrap().len();
    assert_eq!(records, 4, "16 MiB of 4 MiB batches");
    assert_eq!(len, 4 * 16 + (16 << 20));
}
