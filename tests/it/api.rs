//! Every endpoint and error row of the SPEC's producer/consumer API, over
//! real HTTP against the real binary.

use std::time::{Duration, Instant};

use crate::harness::{TestBroker, WriteReply};

#[test]
fn write_then_read_round_trip_and_json_shapes() {
    let b = TestBroker::start(&[]);
    let (s, body) = b.write("events", "hello\nworld\n");
    assert_eq!(s, 200, "{body}");
    let r: WriteReply = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (r.chunk.as_str(), r.offset, r.size),
        ("node1-chunk000000000", 0, 12)
    );
    let (s, body) = b.write("events", "third\n");
    assert_eq!(s, 200);
    let r: WriteReply = serde_json::from_str(&body).unwrap();
    assert_eq!((r.offset, r.size), (12, 6));

    let chunks = b.chunks("events");
    assert_eq!(chunks.len(), 1);
    assert_eq!((chunks[0].complete, chunks[0].size), (false, 18));
    let (s, cats) = b.get_text("/listCategories");
    assert_eq!((s, cats.trim()), (200, r#"["events"]"#));

    let (s, data) = b.get("/read?category=events&chunk=node1-chunk000000000&off=0&max_size=100");
    assert_eq!((s, data.as_slice()), (200, &b"hello\nworld\nthird\n"[..]));
    // max_size cuts at the last whole message, never inside one.
    let (s, data) = b.get("/read?category=events&chunk=node1-chunk000000000&off=0&max_size=14");
    assert_eq!((s, data.as_slice()), (200, &b"hello\nworld\n"[..]));
    let (s, data) = b.get("/read?category=events&chunk=node1-chunk000000000&off=6&max_size=6");
    assert_eq!((s, data.as_slice()), (200, &b"world\n"[..]));
    // At the end of an open chunk: empty body.
    let (s, data) = b.get("/read?category=events&chunk=node1-chunk000000000&off=18&max_size=100");
    assert_eq!((s, data.len()), (200, 0));
}

#[test]
fn write_errors() {
    let b = TestBroker::start(&["--max-message-size", "10", "--max-batch-size", "100"]);
    assert_eq!(b.write("c", "").0, 400, "empty body");
    assert_eq!(b.write("c", "no newline").0, 400);
    assert_eq!(b.write("c", "a\nb").0, 400, "last message lacks newline");
    let (s, msg) = b.write("c", "0123456789\n");
    assert_eq!(s, 413, "11-byte message > max_message_size 10: {msg}");
    assert!(msg.contains("max_message_size"), "{msg}");
    assert_eq!(
        b.write("c", "012345678\n").0,
        200,
        "exactly 10 bytes is allowed"
    );
    let (s, msg) = b.write("c", "abc\n".repeat(30));
    assert_eq!(s, 413, "{msg}");
    assert!(msg.contains("max_batch_size"), "{msg}");
    assert_eq!(b.post("/write", "a\n").0, 400, "missing category");
    assert_eq!(b.post("/write?category=c&sync=yes", "a\n").0, 400);
    let (s, msg) = b.post("/write?category=c&min_sync_replicas=1", "a\n");
    assert_eq!(s, 400, "more replicas than peers: {msg}");
    assert_eq!(
        b.post("/write?category=c&min_sync_replicas=0&sync=true", "a\n")
            .0,
        200
    );
    // Every error body is exactly one line.
    let (_, msg) = b.write("c", "");
    assert_eq!(msg.lines().count(), 1, "{msg:?}");
    assert!(msg.ends_with('\n'));
}

#[test]
fn oversize_declared_body_is_refused_without_reading_it() {
    use std::io::{Read, Write};
    let b = TestBroker::start(&[]);
    let mut s = std::net::TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Claim 10 GB but send nothing: the answer must come at once.
    write!(
        s,
        "POST /write?category=c HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[test]
fn chunked_oversize_body_is_refused() {
    let b = TestBroker::start(&["--max-batch-size", "64KiB"]);
    let big = "x".repeat(1000) + "\n";
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..200).map(|_| Ok(big.clone().into_bytes())).collect();
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(
        chunks.into_iter().flatten().flatten().collect::<Vec<u8>>(),
    ));
    let r = b.http.post(b.url("/write?category=c")).body(body).send();
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
    } // a reset after the early 413 is also acceptable for a client still sending
    assert!(b.chunks("c").is_empty());
}

#[test]
fn read_errors() {
    let b = TestBroker::start(&[]);
    b.write("r", "abc\ndefgh\n");
    let base = "/read?category=r&chunk=node1-chunk000000000";
    for (q, want) in [
        (format!("{base}&off=1&max_size=10"), 400), // not a boundary
        (format!("{base}&off=11&max_size=10"), 400), // beyond end
        (format!("{base}&off=4&max_size=3"), 400),  // too small for "defgh\n"
        (format!("{base}&off=-1&max_size=10"), 400),
        (format!("{base}&off=abc&max_size=10"), 400),
        (format!("{base}&off=1e3&max_size=10"), 400),
        (format!("{base}&off=99999999999999999999&max_size=10"), 400),
        (format!("{base}&off=0&max_size=16777217"), 400),
        (format!("{base}&off=0&max_size=10&wait_ms=60001"), 400),
        (format!("{base}&max_size=10"), 400),
        ("/read?category=r&chunk=bad&off=0&max_size=10".into(), 400),
        (
            "/read?category=r&chunk=node1-chunk000000009&off=0&max_size=10".into(),
            404,
        ),
        (
            "/read?category=nosuch&chunk=node1-chunk000000000&off=0&max_size=10".into(),
            404,
        ),
        (
            "/read?category=r&chunk=node2-chunk000000000&off=0&max_size=10".into(),
            404,
        ),
    ] {
        let (s, msg) = b.get_text(&q);
        assert_eq!(s, want, "{q}: {msg}");
        assert_eq!(msg.lines().count(), 1, "{q}: {msg:?}");
    }
    let (_, msg) = b.get_text(&format!("{base}&off=4&max_size=3"));
    assert!(msg.contains("6 bytes"), "says the next message size: {msg}");
}

#[test]
fn list_endpoints() {
    let b = TestBroker::start(&[]);
    let (s, body) = b.get_text("/listChunks?category=nothing_yet");
    assert_eq!(
        (s, body.trim()),
        (200, "[]"),
        "consumers may start before producers"
    );
    assert_eq!(b.get_text("/listChunks").0, 400);
    assert_eq!(b.get_text("/listChunks?category=a.b").0, 400);
    let (s, body) = b.get_text("/listCategories");
    assert_eq!((s, body.trim()), (200, "[]"));
    b.write("b_cat", "x\n");
    b.write("a-cat", "x\n");
    let (_, body) = b.get_text("/listCategories");
    assert_eq!(body.trim(), r#"["a-cat","b_cat"]"#);
}

#[test]
fn routing_and_methods() {
    let b = TestBroker::start(&[]);
    assert_eq!(b.get_text("/nope").0, 404);
    assert_eq!(b.get_text("/write?category=x").0, 405);
    let r = b.http.delete(b.url("/read")).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(r.headers().get("allow").is_some());
    assert_eq!(b.post("/listChunks?category=x", "").0, 405);
    let (s, body) = b.get_text("/healthz");
    assert_eq!((s, body.trim()), (200, "ok"));
}

#[test]
fn long_poll_wakes_on_write_and_times_out() {
    let b = TestBroker::start(&[]);
    b.write("lp", "first\n");
    let url =
        b.url("/read?category=lp&chunk=node1-chunk000000000&off=6&max_size=100&wait_ms=20000");
    let client = b.http.clone();
    let reader = std::thread::spawn(move || {
        let t = Instant::now();
        let r = client.get(url).send().unwrap();
        (
            r.status().as_u16(),
            r.bytes().unwrap().to_vec(),
            t.elapsed(),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let wrote = Instant::now();
    assert_eq!(b.write("lp", "second\n").0, 200);
    let (s, data, took) = reader.join().unwrap();
    assert_eq!((s, data.as_slice()), (200, &b"second\n"[..]));
    assert!(
        took >= Duration::from_millis(250),
        "it waited for the write"
    );
    assert!(
        wrote.elapsed() < Duration::from_secs(5),
        "woken by the write, not the timeout"
    );

    let t = Instant::now();
    let (s, data) =
        b.get("/read?category=lp&chunk=node1-chunk000000000&off=13&max_size=100&wait_ms=200");
    assert_eq!((s, data.len()), (200, 0));
    assert!(t.elapsed() >= Duration::from_millis(190));
}

#[test]
fn chunk_ack_deletes_only_sealed_fully_read_chunks() {
    let b = TestBroker::start(&["--max-chunk-size", "4096"]);
    let msg = "m".repeat(999) + "\n"; // 1000 bytes
    for _ in 0..10 {
        assert_eq!(b.write("ack", msg.clone()).0, 200);
    }
    let chunks = b.chunks("ack");
    assert!(chunks.len() >= 3, "{chunks:?}");
    // Wait for background sealing of the full chunks.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.chunks("ack")[0].complete {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = &chunks[0];
    let open = chunks.last().unwrap();
    assert!(!open.complete, "{chunks:?}");
    let q = |name: &str, size: u64| format!("/ack?category=ack&chunk={name}&size={size}");
    assert_eq!(b.get_text(&q(&open.name, 999_999)).0, 400, "open chunk");
    assert_eq!(
        b.get_text(&q(&first.name, first.size - 1)).0,
        400,
        "size too small"
    );
    assert_eq!(b.get_text(&q("node1-chunk000000777", 1)).0, 404);
    assert_eq!(b.get_text("/ack?category=ack&chunk=x&size=1").0, 400);
    assert_eq!(
        b.get_text(&format!("/ack?category=ack&chunk={}&size=-5", first.name))
            .0,
        400
    );
    assert_eq!(b.get_text(&q(&first.name, first.size)).0, 200);
    assert!(!b.data_dir().join("ack").join(&first.name).exists());
    assert!(!b
        .data_dir()
        .join("ack")
        .join(format!("{}.idx", first.name))
        .exists());
    assert_eq!(
        b.get_text(&q(&first.name, first.size)).0,
        404,
        "already gone"
    );
    assert!(b.chunks("ack").iter().all(|c| c.name != first.name));
}

/// A chukcha-style consumer: listChunks → read to the end → ack sealed
/// chunks, over several sealed chunks, while a producer keeps writing.
#[test]
fn chukcha_consumer_loop_sees_every_message_once() {
    let b = TestBroker::start(&[
        "--max-chunk-size",
        "8KiB",
        "--chunk-rotate-interval",
        "200ms",
    ]);
    let total = 3000u32;
    let producer = {
        let http = b.http.clone();
        let url = b.url("/write?category=loop");
        std::thread::spawn(move || {
            for start in (0..total).step_by(100) {
                let body: String = (start..start + 100).map(|i| format!("msg-{i}\n")).collect();
                let r = http.post(&url).body(body).send().unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
        })
    };
    let mut seen = Vec::new();
    let mut offsets = std::collections::HashMap::<String, u64>::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < total as usize {
        assert!(
            Instant::now() < deadline,
            "consumer stuck at {} messages",
            seen.len()
        );
        for c in b.chunks("loop") {
            let off = offsets.entry(c.name.clone()).or_default();
            loop {
                let (s, data) = b.get(&format!(
                    "/read?category=loop&chunk={}&off={off}&max_size=4096&wait_ms=50",
                    c.name
                ));
                assert_eq!(s, 200);
                if data.is_empty() {
                    break;
                }
                *off += data.len() as u64;
                seen.extend(String::from_utf8(data).unwrap().lines().map(str::to_owned));
            }
            if c.complete && *off == c.size {
                assert_eq!(
                    b.get_text(&format!(
                        "/ack?category=loop&chunk={}&size={}",
                        c.name, c.size
                    ))
                    .0,
                    200
                );
            }
        }
    }
    producer.join().unwrap();
    let expected: Vec<String> = (0..total).map(|i| format!("msg-{i}")).collect();
    assert_eq!(seen, expected, "one producer: every message once, in order");
}

/// Regression: a writer that found no pre-created chunk could activate index
/// N+1 before N (seen as a flaky "open chunk is sealed" failure). Chunks of
/// one owner must be written strictly in index order, including around
/// bodies larger than max_chunk_size.
#[test]
fn chunks_are_activated_in_index_order() {
    let b = TestBroker::start(&["--max-chunk-size", "4096"]);
    let mut last = (String::new(), 0u64);
    for i in 0..300 {
        let body = if i % 37 == 0 {
            "o".repeat(5000) + "\n"
        } else {
            "m".repeat(1499) + "\n"
        };
        let (s, reply) = b.write("order", body);
        assert_eq!(s, 200, "{reply}");
        let r: WriteReply = serde_json::from_str(&reply).unwrap();
        assert!(
            (r.chunk.clone(), r.offset) > last,
            "write {i} went to {} @{} after {:?}",
            r.chunk,
            r.offset,
            last
        );
        last = (r.chunk, r.offset);
    }
    let names: Vec<String> = b.chunks("order").into_iter().map(|c| c.name).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let open: Vec<_> = b
        .chunks("order")
        .into_iter()
        .filter(|c| !c.complete)
        .collect();
    assert!(
        open.len() <= 1 && open.iter().all(|c| Some(&c.name) == names.last()),
        "only the newest chunk may be open: {open:?}"
    );
}

#[test]
fn rotate_interval_seals_and_restart_continues_in_new_chunk() {
    let mut b = TestBroker::start(&["--chunk-rotate-interval", "100ms"]);
    b.write("rot", "a\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.chunks("rot")[0].complete {
        assert!(Instant::now() < deadline, "not sealed by rotate interval");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, body) = b.write("rot", "b\n");
    let r: WriteReply = serde_json::from_str(&body).unwrap();
    assert_ne!(r.chunk, "node1-chunk000000000");
    b.restart();
    let names: Vec<_> = b
        .chunks("rot")
        .into_iter()
        .map(|c| (c.name, c.complete))
        .collect();
    assert!(
        names.iter().all(|(_, c)| *c),
        "all sealed after crash restart: {names:?}"
    );
    let (_, body) = b.write("rot", "c\n");
    let r2: WriteReply = serde_json::from_str(&body).unwrap();
    assert!(
        r2.chunk > r.chunk,
        "index never reused: {} then {}",
        r.chunk,
        r2.chunk
    );
    assert_eq!(b.read_all("rot"), b"a\nb\nc\n");
}

#[test]
fn config_file_env_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "max_message_size = \"8\"\nname = \"fromfile\"\n").unwrap();
    let cfg_s = cfg.to_str().unwrap().to_owned();
    let b = TestBroker::start(&["--config", &cfg_s, "--name", "fromflag"]);
    let (_, body) = b.write("c", "1234567\n");
    assert!(body.contains("fromflag-chunk000000000"), "{body}");
    assert_eq!(b.write("c", "12345678\n").0, 413, "file setting applies");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .args(["serve", "--max-chunk-size", "12XB"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_chunk_size") && err.contains("KiB"),
        "{err}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--name",
        "--peers",
        "--max-chunk-size",
        "--chunk-rotate-interval",
        "--flush-interval",
        "--fsync-every-write",
        "--max-message-size",
        "--max-batch-size",
        "--replication-timeout",
        "--config",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    assert!(
        help.contains("Default = 64MiB") && help.contains("CHUNKBUS_DATA_DIR"),
        "{help}"
    );
}

#[test]
fn second_server_on_same_data_dir_is_refused() {
    let b = TestBroker::start(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(b.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// More concurrent bodies than the global body budget (64 × max_batch_size)
/// holds: writers wait for memory instead of the server growing, and
/// whole-body reservations cannot deadlock.
#[test]
fn more_concurrent_bodies_than_the_memory_budget_all_succeed() {
    let b = TestBroker::start(&["--max-batch-size", "256KiB", "--max-chunk-size", "4MiB"]);
    let body = ("q".repeat(1023) + "\n").repeat(256); // 256 KiB
    let writers: Vec<_> = (0..100) // 100 × 256 KiB = 25 MiB > 16 MiB budget
        .map(|_| {
            let (http, url, body) = (
                b.http.clone(),
                b.url("/write?category=budget"),
                body.clone(),
            );
            std::thread::spawn(move || http.post(url).body(body).send().unwrap().status().as_u16())
        })
        .collect();
    for w in writers {
        assert_eq!(w.join().unwrap(), 200);
    }
    assert_eq!(b.read_all("budget").len(), 100 * 256 * 1024);
}

#[test]
fn list_chunks_long_poll_waits_for_a_newer_chunk() {
    // 4 KiB chunks: every 3 KB body after the first starts a new one.
    let b = TestBroker::start(&["--max-chunk-size", "4096"]);
    let body = "x".repeat(2999) + "\n";
    assert_eq!(b.write("lc", body.clone()).0, 200);
    let base = "/listChunks?category=lc&after=node1-chunk000000000";
    // Times out with the current listing when nothing newer appears.
    let t = Instant::now();
    let (s, text) = b.get_text(&format!("{base}&wait_ms=300"));
    assert_eq!(s, 200, "{text}");
    assert!(t.elapsed() >= Duration::from_millis(250), "it waited");
    assert!(text.contains("node1-chunk000000000") && !text.contains("chunk000000001"));
    // Wakes when the next chunk gets its first bytes.
    let url = b.url(&format!("{base}&wait_ms=20000"));
    let client = b.http.clone();
    let waiter = std::thread::spawn(move || {
        let r = client.get(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap(), Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    let wrote = Instant::now();
    assert_eq!(b.write("lc", body.clone()).0, 200);
    let (s, text, at) = waiter.join().unwrap();
    assert_eq!(s, 200);
    assert!(text.contains("node1-chunk000000001"), "{text}");
    assert!(
        at.duration_since(wrote) < Duration::from_secs(5),
        "woken by the new chunk"
    );
    // Already newer: answers at once; plain listChunks is unchanged.
    let t = Instant::now();
    assert_eq!(b.get_text(&format!("{base}&wait_ms=20000")).0, 200);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(b.get_text("/listChunks?category=lc&wait_ms=20000").0, 200);
    // Bad extension parameters are 400s.
    assert_eq!(
        b.get_text("/listChunks?category=lc&after=../x&wait_ms=10")
            .0,
        400
    );
    assert_eq!(
        b.get_text(&format!("{base}&wait_ms=60001")).0,
        400,
        "wait_ms above the limit"
    );
}
