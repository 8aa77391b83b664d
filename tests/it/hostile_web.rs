//! Hostile web peers of a broker: webhook receivers that answer endlessly,
//! webhook targets aimed at metadata and link-local addresses or re-pointed
//! by DNS, `last_error` as a port scanner, and web pages driving a
//! tokenless broker (cross-site requests, DNS rebinding). Every packet
//! stays on 127.0.0.0/8: refusals of other addresses are proven without
//! connecting.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::harness::TestBroker;

/// How a test receiver answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `200` with an empty body.
    Ok,
    /// `200` with a body that never ends.
    Endless,
    /// Accepts connections and never answers.
    Silent,
}

/// Counters of a test receiver.
#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    requests: AtomicU64,
    /// Answer body bytes handed to hyper (an upper bound on what was sent).
    answer_bytes: AtomicU64,
}

/// A webhook receiver on 127.0.0.1 that counts what reaches it.
struct Receiver {
    addr: SocketAddr,
    counts: Arc<Counts>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(answer: Answer) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let c = Arc::clone(&counts);
        rt.spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.connections.fetch_add(1, Ordering::Relaxed);
                if answer == Answer::Silent {
                    held.push(stream);
                    continue;
                }
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let c = Arc::clone(&c);
                        async move {
                            drop(req);
                            c.requests.fetch_add(1, Ordering::Relaxed);
                            let body = Endless {
                                part: (answer == Answer::Endless)
                                    .then(|| Bytes::from(vec![b'x'; 64 << 10])),
                                counts: c,
                            };
                            Ok::<_, std::convert::Infallible>(Response::new(body))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            counts,
            _rt: rt,
        }
    }

    fn connections(&self) -> u64 {
        self.counts.connections.load(Ordering::Relaxed)
    }
}

/// An answer body: empty (`part` None) or the same 64 KiB forever.
struct Endless {
    part: Option<Bytes>,
    counts: Arc<Counts>,
}

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.part.clone().map(|p| {
            self.counts
                .answer_bytes
                .fetch_add(p.len() as u64, Ordering::Relaxed);
            Ok(Frame::data(p))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.part.is_none()
    }
}

/// The broker's resident memory (`VmRSS`), bytes.
fn rss(b: &TestBroker) -> u64 {
    let ready = std::fs::read(b.data_dir().join(".chunkbus/ready.json")).unwrap();
    let pid = serde_json::from_slice::<serde_json::Value>(&ready).unwrap()["pid"]
        .as_u64()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

fn subscribe(b: &TestBroker, spec: &str) -> (u16, String) {
    let r = b
        .http
        .post(b.url("/subscriptions"))
        .header("content-type", "application/json")
        .body(spec.to_owned())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().unwrap_or_default())
}

/// `GET /subscriptions` entry of `group`.
fn subscription(b: &TestBroker, group: &str) -> serde_json::Value {
    let (s, text) = b.get_text("/subscriptions");
    assert_eq!(s, 200, "{text}");
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    all.into_iter()
        .find(|v| v["group"] == group)
        .unwrap_or_else(|| panic!("no subscription {group}: {text}"))
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request over a fresh connection, exactly as given (no
/// header added): `(status, body)`.
fn raw(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let req = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn webhook_answer_with_endless_body_keeps_broker_memory_flat() {
    let b = TestBroker::start(&[]);
    let body: String = (0..2_000).map(|n| format!("{n}\n")).collect();
    assert_eq!(b.write("endless", body.clone()).0, 200);
    let r = Receiver::start(Answer::Endless);
    // Warm up the paths the test uses, then take the baseline.
    let _ = b.get_text("/subscriptions");
    std::thread::sleep(Duration::from_millis(200));
    let before = rss(&b);
    let (s, msg) = subscribe(
        &b,
        &format!(
            r#"{{"category":"endless","url":"http://{}/","group":"g","max_batch_bytes":2048,"timeout_ms":10000}}"#,
            r.addr
        ),
    );
    assert_eq!(s, 201, "{msg}");
    let batches = body.len().div_ceil(2048) as u64;
    let mut peak = before;
    let limit = 8 << 20;
    wait_for(
        "every batch delivered despite endless answers",
        Duration::from_secs(30),
        || {
            let now = rss(&b);
            peak = peak.max(now);
            assert!(
                now < before + limit,
                "broker RSS grew from {} KiB to {} KiB while receiving endless answers",
                before >> 10,
                now >> 10
            );
            subscription(&b, "g")["delivered_bytes"] == body.len()
        },
    );
    let sub = subscription(&b, "g");
    assert!(
        sub["delivered_batches"].as_u64().unwrap() >= batches - 1,
        "{sub}"
    );
    assert_eq!(sub["failures"], 0, "{sub}");
    let (_, groups) = b.get_text("/consumers?category=endless");
    let v: serde_json::Value = serde_json::from_str(&groups).unwrap();
    assert_eq!(v[0]["lag_messages"], 0, "{v}");
    let after = rss(&b);
    let pushed = r.counts.answer_bytes.load(Ordering::Relaxed);
    eprintln!(
        "endless answers: RSS before {} KiB, peak {} KiB, after {} KiB; {} requests, {} MiB of answer offered",
        before >> 10,
        peak >> 10,
        after >> 10,
        r.counts.requests.load(Ordering::Relaxed),
        pushed >> 20
    );
    assert!(after < before + limit);
}

#[test]
fn webhook_targets_at_metadata_link_local_and_unspecified_addresses_are_refused_at_creation() {
    // Category "c" never holds data: even if a refusal regressed, no
    // delivery would be attempted, so no packet leaves 127.0.0.0/8.
    let b = TestBroker::start(&[]);
    for (url, want) in [
        ("http://169.254.169.254/latest/meta-data/", 403),
        ("http://169.254.170.2/v2/credentials", 403),
        ("http://[fe80::1]/", 403),
        ("http://[fd00:ec2::254]/", 403),
        ("http://[::ffff:169.254.169.254]/", 403),
        ("http://100.100.100.200/", 403),
        ("http://metadata.google.internal/computeMetadata/v1/", 403),
        ("http://Metadata.Google.Internal./", 403),
        ("http://0.0.0.0:8080/", 403),
        ("http://[::]:8080/", 403),
        ("http://224.0.0.1/", 403),
        ("http://255.255.255.255/", 403),
        // Numeric names a resolver would read as 169.254.169.254.
        ("http://2852039166/", 400),
        ("http://0xa9fea9fe/", 400),
    ] {
        let (s, msg) = subscribe(
            &b,
            &format!(r#"{{"category":"c","url":"{url}","group":"g"}}"#),
        );
        assert_eq!(s, want, "{url}: {msg}");
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(msg.contains("refused"), "{url}: {msg}");
    }
    assert_eq!(
        b.get_text("/subscriptions").1.trim(),
        "[]",
        "nothing stored"
    );
    // Loopback stays allowed by default.
    let r = Receiver::start(Answer::Ok);
    let ok = format!(
        r#"{{"category":"c","url":"http://127.0.0.1:{}/","group":"g"}}"#,
        r.addr.port()
    );
    assert_eq!(subscribe(&b, &ok).0, 201);

    // An allow-list admits only what it lists.
    let a = TestBroker::start(&["--webhook-allow", "hooks.test,127.0.0.2"]);
    let spec = |url: &str| format!(r#"{{"category":"c","url":"{url}","group":"g"}}"#);
    let (s, msg) = subscribe(&a, &spec("http://127.0.0.1:9/"));
    assert_eq!(s, 403, "{msg}");
    assert!(msg.contains("--webhook-allow"), "{msg}");
    assert_eq!(subscribe(&a, &spec("http://127.0.0.2:9/")).0, 201);
}

#[test]
fn webhook_name_resolving_to_a_denied_address_is_refused_at_connect_time() {
    let r = Receiver::start(Answer::Ok);
    let port = r.addr.port();
    let b = TestBroker::start(&["--webhook-deny", "127.0.0.0/8,::1"]);
    assert_eq!(b.write("c", "m1\nm2\n").0, 200);
    let spec = |host: &str| {
        format!(r#"{{"category":"c","url":"http://{host}:{port}/","group":"g","timeout_ms":1000}}"#)
    };
    // Literals are refused at creation; a name cannot be judged without
    // resolving it, so it is accepted…
    for literal in ["127.0.0.1", "[::1]", "127.1.2.3"] {
        let (s, msg) = subscribe(&b, &spec(literal));
        assert_eq!(s, 403, "{literal}: {msg}");
        assert!(msg.contains("--webhook-deny"), "{msg}");
    }
    let (s, msg) = subscribe(&b, &spec("localhost"));
    assert_eq!(s, 201, "{msg}");
    // …and refused at every connect, once it resolves to loopback.
    wait_for("delivery refused twice", Duration::from_secs(20), || {
        subscription(&b, "g")["failures"].as_u64().unwrap_or(0) >= 2
    });
    let sub = subscription(&b, "g");
    let err = sub["last_error"].as_str().unwrap();
    assert!(
        err.contains("localhost") && err.contains("--webhook-deny"),
        "{err}"
    );
    assert!(
        !err.contains("127.0.0.1"),
        "no resolved address shown: {err}"
    );
    assert_eq!(sub["delivered_batches"], 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.connections(), 0, "nothing reached the receiver");

    // Control: the same name with the default policy does connect.
    let ok = TestBroker::start(&[]);
    assert_eq!(ok.write("c", "m1\nm2\n").0, 200);
    assert_eq!(subscribe(&ok, &spec("localhost")).0, 201);
    wait_for(
        "delivered through the name",
        Duration::from_secs(20),
        || subscription(&ok, "g")["delivered_batches"] == 1,
    );
    assert!(r.connections() >= 1);
}

#[test]
fn webhook_last_error_does_not_tell_refused_ports_from_silent_ones() {
    let b = TestBroker::start(&[]);
    assert_eq!(b.write("c", "m\n").0, 200);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let silent = Receiver::start(Answer::Silent);
    for (group, port) in [("closed", closed), ("silent", silent.addr.port())] {
        let (s, msg) = subscribe(
            &b,
            &format!(
                r#"{{"category":"c","url":"http://127.0.0.1:{port}/","group":"{group}","timeout_ms":400}}"#
            ),
        );
        assert_eq!(s, 201, "{msg}");
    }
    wait_for("both failed twice", Duration::from_secs(20), || {
        ["closed", "silent"]
            .iter()
            .all(|g| subscription(&b, g)["failures"].as_u64().unwrap_or(0) >= 2)
    });
    let (c, s) = (subscription(&b, "closed"), subscription(&b, "silent"));
    assert_eq!(c["last_error"], s["last_error"], "{c} {s}");
    assert!(
        c["last_error"].as_str().unwrap().contains("no HTTP answer"),
        "{c}"
    );
    assert!(silent.connections() >= 1);
    // The operator still sees the cause.
    assert!(b.logs().contains("Connection refused"), "{}", b.logs());
}

#[test]
fn cross_site_subscription_post_as_text_plain_is_refused_and_nothing_stored() {
    let b = TestBroker::start(&[]);
    let host = format!("Host: 127.0.0.1:{}\r\n", b.addr.port());
    let spec = r#"{"category":"c","url":"http://127.0.0.1:9/","group":"evil"}"#;
    // What a page's fetch(…, {mode: "no-cors", body: JSON}) sends.
    for extra in [
        "Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\nContent-Type: text/plain;charset=UTF-8\r\n",
        "Origin: http://evil.example\r\nContent-Type: text/plain\r\n",
        "Sec-Fetch-Site: same-site\r\nContent-Type: application/json\r\n",
        "Origin: null\r\nContent-Type: application/json\r\n",
    ] {
        let (s, msg) = raw(
            b.addr,
            &format!("POST /subscriptions HTTP/1.1\r\n{host}{extra}"),
            spec,
        );
        assert_eq!(s, 403, "{extra}: {msg}");
        assert!(msg.contains("refused"), "{msg}");
    }
    // Without browser headers, a JSON body in another type is still 415.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (s, msg) = raw(
            b.addr,
            &format!("POST /subscriptions HTTP/1.1\r\n{host}Content-Type: {ct}\r\n"),
            spec,
        );
        assert_eq!(s, 415, "{ct}: {msg}");
        assert!(msg.contains("application/json"), "{msg}");
    }
    assert_eq!(
        b.get_text("/subscriptions").1.trim(),
        "[]",
        "nothing stored"
    );
    // The API's own ways still work: declared JSON, or no type at all.
    for (group, ct) in [("a", "Content-Type: application/json\r\n"), ("b", "")] {
        let body = spec.replace("evil", group);
        let (s, msg) = raw(
            b.addr,
            &format!("POST /subscriptions HTTP/1.1\r\n{host}{ct}"),
            &body,
        );
        assert_eq!(s, 201, "{ct}: {msg}");
    }
}

#[test]
fn cross_origin_chunk_ack_is_refused_and_the_chunk_kept() {
    let b = TestBroker::start(&["--max-chunk-size", "4KiB"]);
    let body = "x".repeat(2999) + "\n";
    assert_eq!(b.write("c", body.clone()).0, 200);
    assert_eq!(b.write("c", body).0, 200);
    let sealed = b.chunks("c")[0].clone();
    assert!(sealed.complete, "{sealed:?}");
    let ack = format!(
        "GET /ack?category=c&chunk={}&size=18446744073709551615 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
        sealed.name,
        b.addr.port()
    );
    for extra in [
        "Origin: http://evil.example\r\n",
        // An <img src> of a current browser: no Origin, Fetch Metadata.
        "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\n",
        // An <img src> of an older browser: only the Referer.
        "Referer: http://evil.example/page.html\r\n",
    ] {
        let (s, msg) = raw(b.addr, &format!("{ack}{extra}"), "");
        assert_eq!(s, 403, "{extra}: {msg}");
    }
    assert_eq!(b.chunks("c")[0], sealed, "chunk still there");
    let (s, data) = b.get(&format!(
        "/read?category=c&chunk={}&off=0&max_size=4096",
        sealed.name
    ));
    assert_eq!((s, data.len()), (200, 3000));
    // Same-origin pages and plain clients are served.
    let (s, msg) = raw(
        b.addr,
        &format!(
            "{ack}Origin: http://127.0.0.1:{}\r\nSec-Fetch-Site: same-origin\r\n",
            b.addr.port()
        ),
        "",
    );
    assert_eq!(s, 200, "{msg}");
    assert!(b.chunks("c").iter().all(|c| c.name != sealed.name));
}

#[test]
fn dns_rebinding_host_on_a_loopback_listener_is_refused() {
    let b = TestBroker::start(&[]);
    let port = b.addr.port();
    assert_eq!(b.write("c", "secret\n").0, 200);
    for (method, path, body) in [
        ("GET", "/listCategories", ""),
        ("GET", "/", ""),
        (
            "GET",
            "/read?category=c&chunk=node1-chunk000000000&off=0&max_size=100",
            "",
        ),
        ("POST", "/write?category=c", "evil\n"),
    ] {
        for host in [format!("evil.example:{port}"), "evil.example".to_owned()] {
            let (s, msg) = raw(
                b.addr,
                &format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n"),
                body,
            );
            assert_eq!(s, 403, "{method} {path} Host {host}: {msg}");
            assert!(!msg.contains("secret"), "{msg}");
        }
    }
    assert_eq!(b.read_all("c"), b"secret\n", "nothing written");
    // Loopback names and addresses, as curl and the clients send them, and
    // names without dots (no public DNS serves them, so no page rebinds them).
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_owned(),
        "x".to_owned(),
    ] {
        let (s, msg) = raw(
            b.addr,
            &format!("GET /listCategories HTTP/1.1\r\nHost: {host}\r\n"),
            "",
        );
        assert_eq!((s, msg.trim()), (200, r#"["c"]"#), "{host}");
    }
    // curl --data-binary: a form content type and no Origin, unchanged.
    let (s, msg) = raw(
        b.addr,
        &format!(
            "POST /write?category=c HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        ),
        "m\n",
    );
    assert_eq!(s, 200, "{msg}");

    // An operator can name more hosts.
    let named = TestBroker::start(&["--allowed-hosts", "broker.test"]);
    for (host, want) in [
        ("broker.test", 200),
        ("BROKER.TEST.", 200),
        ("evil.example", 403),
    ] {
        let (s, msg) = raw(
            named.addr,
            &format!(
                "GET /listCategories HTTP/1.1\r\nHost: {host}:{}\r\n",
                named.addr.port()
            ),
            "",
        );
        assert_eq!(s, want, "{host}: {msg}");
    }
}
