//! Smaller hardening points of issue 15: secrets never reach the log, a
//! subscription's `from` must name a chunk held here and a message
//! boundary, reads racing with the eviction of a tiered chunk never answer
//! `500`, and the tier warm-up does not hold up shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{free_port, TestBroker};

const KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn post_json(b: &TestBroker, path: &str, body: &serde_json::Value) -> (u16, String) {
    let r = b
        .http
        .post(b.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap_or_default())
}

#[test]
fn secrets_and_webhook_header_values_never_reach_the_log() {
    let token = "tok-secret-3141";
    let peer_token = "peer-secret-2718";
    let hook = "hook-secret-1618";
    let peers = format!("n2=http://127.0.0.1:{}", free_port());
    let mut b = TestBroker::start_logging_by_settings(&[
        "--log-level",
        "debug",
        "--name",
        "n1",
        "--peers",
        &peers,
        "--token",
        token,
        "--peer-token",
        peer_token,
        "--tier-after",
        "1h",
        "--encryption-key",
        KEY,
    ]);
    // A stored subscription that no longer validates is logged (and
    // skipped) at start: its header values must not be.
    let stored = serde_json::json!([{
        "category": "bad name",
        "url": "http://127.0.0.1:9/hook",
        "group": "g",
        "headers": {"authorization": format!("Bearer {hook}"), "x-api-key": hook},
    }]);
    let file = b.data_dir().join(".chunkbus").join("subscriptions.json");
    std::fs::write(&file, stored.to_string()).unwrap();
    b.restart();
    assert!(
        b.logs().contains("ignoring an invalid stored subscription"),
        "{}",
        b.logs()
    );
    // Requests with wrong and right tokens, and a subscription whose
    // receiver refuses connections (delivery failures are logged).
    let r = b
        .http
        .post(b.url("/write?category=c"))
        .bearer_auth(token)
        .body("a\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for t in ["wrong", token, peer_token] {
        let _ = b
            .http
            .get(b.url("/peer/held?owner=n2"))
            .bearer_auth(t)
            .send();
        let _ = b.http.get(b.url("/listCategories")).bearer_auth(t).send();
    }
    let spec = serde_json::json!({
        "category": "c",
        "url": format!("http://127.0.0.1:{}/hook", free_port()),
        "group": "g",
        "headers": {"authorization": format!("Bearer {hook}")},
        // A refused connection is reported after the subscription's
        // timeout (like a silent port; see hostile_web.rs): keep it short.
        "timeout_ms": 500,
    });
    let r = b
        .http
        .post(b.url("/subscriptions"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(spec.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.logs().contains("push delivery failed") {
        assert!(Instant::now() < deadline, "{}", b.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = b.logs();
    for secret in [token, peer_token, hook, KEY] {
        assert!(!logs.contains(secret), "{secret} in the log:\n{logs}");
    }
}

#[test]
fn subscription_from_must_name_a_chunk_held_here_and_a_message_boundary() {
    let b = TestBroker::start(&[]);
    assert_eq!(b.write("c", "ab\ncd\n").0, 200);
    let chunk = b.chunks("c")[0].name.clone();
    let (owner, index) = chunk.split_once("-chunk").unwrap();
    let missing = format!("{owner}-chunk{:09}", index.parse::<u64>().unwrap() + 7);
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let spec = |group: &str, chunk: &str, offset: u64| {
        serde_json::json!({
            "category": "c", "url": url, "group": group,
            "from": {"chunk": chunk, "offset": offset},
        })
    };
    for (group, chunk, offset, why) in [
        ("g1", missing.as_str(), 0, "does not exist"),
        ("g2", "n9-chunk000000000", 0, "does not exist"),
        ("g3", chunk.as_str(), 1, "boundary"),
        ("g4", chunk.as_str(), 4, "boundary"),
        ("g5", chunk.as_str(), 7, "beyond"),
        ("g6", chunk.as_str(), u64::MAX, "beyond"),
    ] {
        let (s, msg) = post_json(&b, "/subscriptions", &spec(group, chunk, offset));
        assert_eq!(s, 400, "from {chunk}@{offset}: {msg}");
        assert!(
            msg.contains("from") && msg.contains(why),
            "from {chunk}@{offset}: {msg}"
        );
    }
    for (group, offset) in [("ok0", 0), ("ok3", 3), ("ok6", 6)] {
        let (s, msg) = post_json(&b, "/subscriptions", &spec(group, &chunk, offset));
        assert_eq!(s, 201, "from {chunk}@{offset}: {msg}");
    }
}

#[test]
fn reads_racing_with_tier_eviction_never_answer_500() {
    let peers = format!("n2=http://127.0.0.1:{}", free_port());
    let b = TestBroker::start(&[
        "--name",
        "n1",
        "--peers",
        &peers,
        "--max-chunk-size",
        "4KiB",
        "--tier-after",
        "1ms",
        "--tier-concurrency",
        "64",
        "--encryption-key",
        KEY,
    ]);
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let failures = parking_lot::Mutex::new(Vec::<String>::new());
    let line = format!("{}\n", "r".repeat(99));
    std::thread::scope(|s| {
        s.spawn(|| {
            let body = line.repeat(10); // 1000 bytes: four per chunk
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                let (st, msg) = b.write("race", body.clone());
                assert_eq!(st, 200, "{msg}");
            }
            stop.store(true, Ordering::SeqCst);
        });
        for _ in 0..8 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let list = b.chunks("race");
                    // The newest sealed chunks are the ones being tiered.
                    for (i, c) in list.iter().rev().filter(|c| c.complete).take(8).enumerate() {
                        let path = if i % 2 == 0 {
                            format!(
                                "/read?category=race&chunk={}&off=0&max_size=16777216",
                                c.name
                            )
                        } else {
                            format!(
                                "/peer/fetch?category=race&chunk={}&off=0&rec=0&max_size=16777216",
                                c.name
                            )
                        };
                        let (st, body) = b.get(&path);
                        reads.fetch_add(1, Ordering::Relaxed);
                        if st != 200 {
                            failures.lock().push(format!(
                                "{}: {st} {}",
                                c.name,
                                String::from_utf8_lossy(&body)
                            ));
                        } else if i % 2 == 0 {
                            assert_eq!(body.len() as u64, c.size, "{}", c.name);
                        }
                    }
                }
            });
        }
    });
    let tiered = {
        let (_, status) = b.get_text("/tier");
        status.matches("\"tiered\"").count()
    };
    let failures = failures.into_inner();
    eprintln!(
        "{} reads, {} failed, {tiered} chunks tiered",
        reads.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(tiered > 20, "chunks were tiered meanwhile ({tiered})");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn tier_warm_up_on_a_silent_store_does_not_hold_up_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let tiering = [
        "--max-chunk-size",
        "4KiB",
        "--tier-after",
        "1ms",
        "--encryption-key",
        KEY,
    ];
    // 1. Tier a few chunks (local store).
    let mut b = TestBroker::start_in(&data, &tiering);
    let body = format!("{}\n", "w".repeat(99)).repeat(40);
    for _ in 0..6 {
        assert_eq!(b.write("warm", body.clone()).0, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.get_text("/tier").1.matches("\"tiered\"").count() < 3 {
        assert!(Instant::now() < deadline, "{}", b.get_text("/tier").1);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(b.terminate(Duration::from_secs(10)).success());
    drop(b);
    // 2. Start again with an S3 endpoint that takes connections and never
    // answers: the warm-up's prefetches hang there.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    hole.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    // (`tier_after` 1h: nothing new to upload, only the warm-up's reads.)
    let mut args = vec![
        "--max-chunk-size",
        "4KiB",
        "--tier-after",
        "1h",
        "--encryption-key",
        KEY,
    ];
    args.extend([
        "--s3-endpoint",
        &endpoint,
        "--s3-bucket",
        "silent",
        "--s3-path-style",
        "--s3-access-key-id",
        "AKIDSILENT",
        "--s3-secret-access-key",
        "silent-secret",
    ]);
    let mut b = TestBroker::start_in(&data, &args);
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while held.is_empty() {
        match hole.accept() {
            Ok((conn, _)) => held.push(conn),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no warm-up request:\n{}",
                    b.logs()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
    // The warm-up is stuck on the silent store; SIGTERM still ends the
    // server in time, cleanly.
    let t = Instant::now();
    assert!(b.terminate(Duration::from_secs(10)).success());
    assert!(t.elapsed() < Duration::from_secs(7), "{:?}", t.elapsed());
    assert!(b.logs().contains("stopped cleanly"), "{}", b.logs());
}
