//! Push subscriptions against the real binary and a real HTTP receiver
//! (hyper on 127.0.0.1) that fails on purpose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;

use crate::harness::TestBroker;

/// One batch the receiver accepted (answered 2xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Got {
    pub(crate) chunk: String,
    pub(crate) offset: u64,
    pub(crate) next: u64,
    pub(crate) body: Bytes,
}

#[derive(Default)]
struct ReceiverState {
    accepted: Vec<Got>,
    attempts: u64,
    seed: u64,
}

/// A webhook receiver: until `flaky_until`, each request randomly gets a
/// 500, an answer slower than the broker's timeout, or a dropped
/// connection; after that, 200 to everything.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    pub(crate) fn start(flaky_for: Duration, delay: Duration) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(Mutex::new(ReceiverState {
            seed: 0x9e37_79b9_7f4a_7c15,
            ..ReceiverState::default()
        }));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let flaky_until = Instant::now() + flaky_for;
        let st = Arc::clone(&state);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let st = Arc::clone(&st);
                        async move { handle(req, st, flaky_until, delay).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            _rt: rt,
        }
    }

    pub(crate) fn accepted(&self) -> Vec<Got> {
        self.state.lock().accepted.clone()
    }

    fn attempts(&self) -> u64 {
        self.state.lock().attempts
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    st: Arc<Mutex<ReceiverState>>,
    flaky_until: Instant,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let h = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (chunk, offset, next) = (
        h("chunkbus-chunk"),
        h("chunkbus-offset"),
        h("chunkbus-next-offset"),
    );
    let secret = h("x-receiver-token");
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let roll = {
        let mut s = st.lock();
        s.attempts += 1;
        // xorshift64
        s.seed ^= s.seed << 13;
        s.seed ^= s.seed >> 7;
        s.seed ^= s.seed << 17;
        s.seed % 4
    };
    if secret != "s3cret" {
        return Ok(status(401));
    }
    if Instant::now() < flaky_until {
        match roll {
            0 => return Ok(status(500)),
            1 => tokio::time::sleep(Duration::from_millis(800)).await, // > timeout_ms, then 200
            2 => return Err(std::io::Error::other("drop the connection")),
            _ => {}
        }
    }
    tokio::time::sleep(delay).await;
    st.lock().accepted.push(Got {
        chunk,
        offset: offset.parse().unwrap_or(u64::MAX),
        next: next.parse().unwrap_or(u64::MAX),
        body,
    });
    Ok(status(200))
}

fn status(code: u16) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
    r
}

fn subscribe(b: &TestBroker, json: &str) -> (u16, String) {
    b.post("/subscriptions", json.to_owned())
}

fn write_numbers(b: &TestBroker, category: &str, from: u64, to: u64) {
    let mut n = from;
    while n < to {
        let mut body = String::new();
        for _ in 0..50 {
            if n >= to {
                break;
            }
            body.push_str(&format!("{n}\n"));
            n += 1;
        }
        assert_eq!(b.write(category, body).0, 200);
    }
}

/// Checks the accepted batches: every message 0..n exactly in order once
/// duplicates are removed, and duplicates only as whole re-sent batches.
/// Returns the number of duplicate batches.
fn check_delivery(got: &[Got], n: u64) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut unique = Vec::new();
    let mut dups = 0;
    for g in got {
        assert_eq!(
            g.next - g.offset,
            g.body.len() as u64,
            "headers match the body"
        );
        if seen.insert((g.chunk.clone(), g.offset)) {
            unique.push(g);
        } else {
            dups += 1;
        }
    }
    let mut expect = 0u64;
    let mut pos: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for g in unique {
        let at = pos.entry(g.chunk.clone()).or_insert(0);
        assert_eq!(g.offset, *at, "no gap inside {}", g.chunk);
        *at = g.next;
        for line in String::from_utf8_lossy(&g.body).lines() {
            assert_eq!(
                line.parse::<u64>().unwrap(),
                expect,
                "in order, nothing skipped"
            );
            expect += 1;
        }
    }
    assert_eq!(expect, n, "every message delivered");
    dups
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn delivered(r: &Receiver) -> u64 {
    let mut seen = std::collections::HashSet::new();
    r.accepted()
        .iter()
        .filter(|g| seen.insert((g.chunk.clone(), g.offset)))
        .map(|g| g.body.iter().filter(|&&c| c == b'\n').count() as u64)
        .sum()
}

#[test]
fn flaky_receiver_gets_everything_in_order() {
    let b = TestBroker::start(&["--max-chunk-size", "16KiB"]);
    write_numbers(&b, "wh", 0, 5_000);
    let r = Receiver::start(Duration::from_secs(3), Duration::ZERO);
    let (s, msg) = subscribe(
        &b,
        &format!(
            r#"{{"category":"wh","url":"http://{}/hook","group":"hook","max_batch_bytes":2048,"timeout_ms":300,"headers":{{"x-receiver-token":"s3cret"}}}}"#,
            r.addr
        ),
    );
    assert_eq!(s, 201, "{msg}");
    // More data arrives while delivery (and failure) is going on.
    write_numbers(&b, "wh", 5_000, 8_000);
    wait_for(
        "all 8000 messages delivered",
        Duration::from_secs(90),
        || delivered(&r) >= 8_000,
    );
    let dups = check_delivery(&r.accepted(), 8_000);
    assert!(
        r.attempts() > r.accepted().len() as u64,
        "the receiver did fail"
    );
    // Duplicates only come from answers the broker did not see (timeouts).
    assert!(dups < r.accepted().len(), "{dups}");
    // Position and progress are visible; header values are not.
    let (_, list) = b.get_text("/subscriptions");
    assert!(list.contains("\"delivered_batches\""), "{list}");
    assert!(
        !list.contains("s3cret"),
        "header values are redacted: {list}"
    );
    let (_, groups) = b.get_text("/consumers?category=wh");
    let v: serde_json::Value = serde_json::from_str(&groups).unwrap();
    assert_eq!(v[0]["consumer"], "hook");
    assert_eq!(v[0]["lag_messages"], 0, "{v}");
}

#[test]
fn delivery_resumes_after_kill9_from_the_stored_position() {
    let mut b = TestBroker::start(&["--max-chunk-size", "16KiB"]);
    write_numbers(&b, "k", 0, 6_000);
    let r = Receiver::start(Duration::ZERO, Duration::from_millis(5));
    let (s, msg) = subscribe(
        &b,
        &format!(
            r#"{{"category":"k","url":"http://{}/","group":"g","max_batch_bytes":1024,"headers":{{"x-receiver-token":"s3cret"}}}}"#,
            r.addr
        ),
    );
    assert_eq!(s, 201, "{msg}");
    wait_for("some batches delivered", Duration::from_secs(30), || {
        r.accepted().len() >= 20
    });
    b.kill9();
    let before = delivered(&r);
    assert!(before < 6_000, "killed mid-delivery ({before} delivered)");
    b.start_again();
    wait_for(
        "delivery resumes and completes",
        Duration::from_secs(60),
        || delivered(&r) >= 6_000,
    );
    let dups = check_delivery(&r.accepted(), 6_000);
    assert!(dups <= 1, "at most the batch in flight at the kill: {dups}");
}

#[test]
fn subscription_api_validates_persists_and_starts_from_a_position() {
    let mut b = TestBroker::start(&[]);
    write_numbers(&b, "api", 0, 100); // "0\n".."99\n": 290 bytes
    for (body, want) in [
        ("not json", 400),
        (r#"{"category":"api","group":"g"}"#, 400),
        (
            r#"{"category":"a/b","url":"http://127.0.0.1:9/","group":"g"}"#,
            400,
        ),
        (
            r#"{"category":"api","url":"https://127.0.0.1:9/","group":"g"}"#,
            400,
        ),
        (r#"{"category":"api","url":"ftp://x/","group":"g"}"#, 400),
        (
            r#"{"category":"api","url":"http://127.0.0.1:9/","group":"../g"}"#,
            400,
        ),
        (
            r#"{"category":"api","url":"http://127.0.0.1:9/","group":"g","max_batch_bytes":0}"#,
            400,
        ),
        (
            r#"{"category":"api","url":"http://127.0.0.1:9/","group":"g","headers":{"chunkbus-chunk":"x"}}"#,
            400,
        ),
        (
            r#"{"category":"api","url":"http://127.0.0.1:9/","group":"g","surprise":1}"#,
            400,
        ),
    ] {
        let (s, msg) = subscribe(&b, body);
        assert_eq!(s, want, "{body}: {msg}");
        assert_eq!(msg.lines().count(), 1);
    }
    let r = Receiver::start(Duration::ZERO, Duration::ZERO);
    // Start at message 90 ("90\n" starts at byte 10 + 80*3 = 260).
    let spec = format!(
        r#"{{"category":"api","url":"http://{}/","group":"late","from":{{"chunk":"node1-chunk000000000","offset":260}},"headers":{{"x-receiver-token":"s3cret"}}}}"#,
        r.addr
    );
    assert_eq!(subscribe(&b, &spec).0, 201);
    assert_eq!(
        subscribe(&b, &spec).0,
        409,
        "one subscription per (category, group)"
    );
    wait_for("messages 90..99 delivered", Duration::from_secs(20), || {
        delivered(&r) >= 10
    });
    let first = &r.accepted()[0];
    assert!(first.body.starts_with(b"90\n"), "{first:?}");
    // Survives a restart; delete stops it; delete twice is a 404.
    b.restart();
    let (_, list) = b.get_text("/subscriptions");
    assert!(list.contains("\"late\""), "{list}");
    let del = |b: &TestBroker| {
        b.http
            .delete(b.url("/subscriptions?category=api&group=late"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(del(&b), 200);
    assert_eq!(del(&b), 404);
    assert_eq!(b.get_text("/subscriptions").1.trim(), "[]");
    let n = r.accepted().len();
    write_numbers(&b, "api", 100, 110);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(r.accepted().len(), n, "nothing delivered after delete");
}

#[test]
fn push_delivery_reads_tiered_chunks() {
    let b = TestBroker::start(&[
        "--max-chunk-size",
        "16KiB",
        "--tier-after",
        "1ms",
        "--encryption-key",
        "base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    ]);
    write_numbers(&b, "tw", 0, 20_000);
    wait_for("chunks tiered", Duration::from_secs(30), || {
        let (_, t) = b.get_text("/tier");
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        v["tiered_chunks"].as_u64().unwrap_or(0) >= 4
    });
    let r = Receiver::start(Duration::ZERO, Duration::ZERO);
    let (s, msg) = subscribe(
        &b,
        &format!(
            r#"{{"category":"tw","url":"http://{}/hook","group":"hook","max_batch_bytes":3000,"headers":{{"x-receiver-token":"s3cret"}}}}"#,
            r.addr
        ),
    );
    assert_eq!(s, 201, "{msg}");
    wait_for(
        "all 20000 messages delivered",
        Duration::from_secs(60),
        || delivered(&r) >= 20_000,
    );
    check_delivery(&r.accepted(), 20_000);
    // Lag of a group that read everything, tiered chunks included, is 0.
    let (_, groups) = b.get_text("/consumers?category=tw");
    let v: serde_json::Value = serde_json::from_str(&groups).unwrap();
    assert_eq!(v[0]["lag_messages"], 0, "{v}");
}
