//! Issue 20's exactly-once proof: an idempotent producer (the crate's
//! `Producer`, and `chunkbus produce`) sends through a proxy that resets
//! the connection instead of forwarding every 4th answer (after the server
//! acted on the request), while the server is killed with SIGKILL and
//! restarted under the load. Every message must be stored exactly once,
//! in the order it was sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunkbus_client::{Client, Producer, ProducerConfig, WriteOptions};

use crate::harness::{free_port, TestBroker, TestCluster};

/// A TCP proxy on 127.0.0.1 that forwards requests and drops every
/// `every`-th answer: the connection is reset (`SO_LINGER` 0) instead.
struct AnswerDropper {
    addr: SocketAddr,
    dropped: Arc<AtomicU64>,
}

impl AnswerDropper {
    fn start(upstream: SocketAddr, every: u64) -> Self {
        Self::start_with(upstream, every, false)
    }

    /// Drops the first answer, then refuses connections, as a server that
    /// stored a batch and died before its answer left.
    fn start_dying(upstream: SocketAddr) -> Self {
        Self::start_with(upstream, 1, true)
    }

    fn start_with(upstream: SocketAddr, every: u64, die: bool) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&dropped);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let answers = Arc::new(AtomicU64::new(0));
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if die && counted.load(Ordering::Relaxed) > 0 {
                        let _ = client.set_zero_linger();
                        break; // the listener goes: connections are refused
                    }
                    tokio::spawn(relay(
                        client,
                        upstream,
                        every,
                        Arc::clone(&answers),
                        Arc::clone(&counted),
                    ));
                }
            });
        });
        Self { addr, dropped }
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    upstream: SocketAddr,
    every: u64,
    answers: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        cr
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Each read from the server starts (almost always: the answers
        // are small) one answer.
        if answers.fetch_add(1, Ordering::Relaxed) % every == every - 1 {
            dropped.fetch_add(1, Ordering::Relaxed);
            break;
        }
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    up.abort();
    if let Ok(cr) = up.await {
        if let Ok(stream) = cr.reunite(cw) {
            let _ = stream.set_zero_linger();
        }
    }
}

/// A two-thread runtime for a test that drives the client from its
/// thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The `p{i}` numbers in `bytes`, which must be `p<number>\n` lines.
fn numbers(bytes: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| l.trim_start_matches('p').parse::<u64>().unwrap())
        .collect()
}

/// Asserts `got` is exactly 0..n in order.
fn assert_exactly_once_in_order(got: &[u64], n: u64) {
    let mut seen = vec![0u32; n as usize];
    for &i in got {
        seen[i as usize] += 1;
    }
    let dup: Vec<u64> = (0..n).filter(|&i| seen[i as usize] > 1).take(10).collect();
    let lost: Vec<u64> = (0..n).filter(|&i| seen[i as usize] == 0).take(10).collect();
    assert!(
        dup.is_empty() && lost.is_empty(),
        "duplicated (first 10) {dup:?}, lost {lost:?}, of {n}"
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
}

#[test]
fn an_idempotent_producer_stores_every_message_once_through_lost_answers_and_kill9() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut broker = TestBroker::start(&["--listen", &listen]);
    let proxy = AnswerDropper::start(broker.addr, 4);
    const N: u64 = 30_000;
    let rt = runtime();
    let _in_runtime = rt.enter();
    let client = Client::new(&format!("http://{}", proxy.addr))
        .unwrap()
        .with_request_timeout(Duration::from_secs(5));
    let producer = Producer::new(
        client,
        ProducerConfig::default()
            .max_batch_bytes(512)
            .linger(Duration::from_millis(1))
            .delivery_timeout(Duration::from_secs(60)),
    );
    assert!(producer.producer_id().is_some(), "idempotent by default");

    let lane = producer.category("exact").unwrap();
    let send = rt.spawn({
        let producer = producer.clone();
        async move {
            for i in 0..N {
                lane.enqueue(format!("p{i}")).await.unwrap();
                if i % 5000 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            producer.flush().await
        }
    });
    // Two kill -9s and restarts while the batches flow.
    for _ in 0..2 {
        let wait_for = Instant::now() + Duration::from_secs(20);
        let before = broker.read_all("exact").len();
        while broker.read_all("exact").len() < before + 20_000 && Instant::now() < wait_for {
            std::thread::sleep(Duration::from_millis(20));
        }
        broker.kill9();
        std::thread::sleep(Duration::from_millis(300));
        broker.start_again();
    }
    let flushed = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), send).await })
        .expect("the producer finished within 120 s")
        .unwrap();
    flushed.expect("every batch stored");
    assert_exactly_once_in_order(&numbers(&broker.read_all("exact")), N);
    assert!(
        proxy.dropped.load(Ordering::Relaxed) >= 10,
        "the proxy dropped answers"
    );
    let stats = producer.stats();
    assert!(stats.retries > 0, "{stats:?}");
}

/// The reproduction: `seq 0 199999 | chunkbus produce --batch-size
/// 64KiB` through a proxy that resets every 4th answer used to hang; now it
/// succeeds with every line stored once.
#[test]
fn chunkbus_produce_through_lost_answers_stores_every_line_once() {
    let broker = TestBroker::start(&[]);
    let proxy = AnswerDropper::start(broker.addr, 4);
    let input: String = (0..200_000).map(|i| format!("p{i}\n")).collect();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .args([
            "produce",
            "--server",
            &format!("http://{}", proxy.addr),
            "--category",
            "idem",
            "--batch-size",
            "64KiB",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    let (status, err) =
        crate::harness::wait_for_exit(&mut child, Duration::from_secs(60), "chunkbus produce hung");
    assert!(status.success(), "{err}");
    assert!(
        proxy.dropped.load(Ordering::Relaxed) >= 3,
        "answers were dropped"
    );
    assert_exactly_once_in_order(&numbers(&broker.read_all("idem")), 200_000);
}

/// A batch in doubt on a server that died is settled by another server
/// that holds its copy (`min_sync_replicas=1` made sure of that before the
/// lost answer): the producer asks it (`probe=1`, storing nothing) and
/// fails over at once instead of waiting out its delivery timeout, and
/// every message is stored once, in order.
#[test]
fn a_batch_in_doubt_on_a_dead_server_is_settled_by_its_copy_elsewhere() {
    let c = TestCluster::start(2, &[]);
    let proxy = AnswerDropper::start_dying(c.nodes[0].addr);
    let rt = runtime();
    let _in_runtime = rt.enter();
    let client = Client::with_servers([
        format!("http://{}", proxy.addr),
        format!("http://{}", c.nodes[1].addr),
    ])
    .unwrap()
    .with_request_timeout(Duration::from_secs(5));
    let producer = Producer::new(
        client,
        ProducerConfig::default()
            .write(WriteOptions {
                sync: false,
                min_sync_replicas: 1,
            })
            .delivery_timeout(Duration::from_secs(60)),
    );
    let lane = producer.category("doubt").unwrap();
    let start = Instant::now();
    let first = rt.block_on(lane.send("p0")).unwrap();
    assert!(first.chunk.starts_with("n1-"), "stored by n1: {first:?}");
    for i in 1..50 {
        let stored = rt.block_on(lane.send(format!("p{i}"))).unwrap();
        assert!(stored.chunk.starts_with("n2-"), "failed over: {stored:?}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "settled by the copy, not by the delivery timeout: {:?}",
        start.elapsed()
    );
    assert_eq!(proxy.dropped.load(Ordering::Relaxed), 1);
    assert_exactly_once_in_order(&numbers(&c.nodes[1].read_all("doubt")), 50);
}

/// A batch in doubt on a server that stays down, with no other server
/// holding it, fails after the delivery timeout as `maybe_stored` — even
/// though the last attempt was a refused connection, an earlier one may
/// have stored it.
#[test]
fn a_batch_in_doubt_that_nobody_settles_fails_as_maybe_stored() {
    let b = TestBroker::start(&[]);
    let proxy = AnswerDropper::start_dying(b.addr);
    let rt = runtime();
    let _in_runtime = rt.enter();
    let client = Client::new(&format!("http://{}", proxy.addr))
        .unwrap()
        .with_request_timeout(Duration::from_secs(5));
    let producer = Producer::new(
        client,
        ProducerConfig::default().delivery_timeout(Duration::from_secs(2)),
    );
    let lane = producer.category("doubt").unwrap();
    let err = rt.block_on(lane.send("p0")).unwrap_err();
    match &err {
        chunkbus_client::ProducerError::BatchFailed { maybe_stored, .. } => {
            assert!(*maybe_stored, "{err}");
        }
        other => panic!("{other:?}"),
    }
    // It was stored, indeed, once.
    assert_eq!(b.read_all("doubt"), b"p0\n");
}

/// A server from before idempotent writes, emulated: a proxy that strips
/// `producer`, `seq` and `probe` from every request (as an older server
/// ignores them) and loses the first answer. The producer must not send
/// the batch again (it would be stored twice): it fails as `maybe_stored`.
#[test]
fn against_a_server_without_idempotent_writes_a_batch_in_doubt_is_not_sent_again() {
    let b = TestBroker::start(&[]);
    let proxy = legacy_proxy(b.addr);
    let rt = runtime();
    let _in_runtime = rt.enter();
    let client = Client::new(&format!("http://{proxy}"))
        .unwrap()
        .with_request_timeout(Duration::from_secs(5));
    let producer = Producer::new(
        client,
        ProducerConfig::default().delivery_timeout(Duration::from_secs(10)),
    );
    let lane = producer.category("old").unwrap();
    let err = rt.block_on(lane.send("p0")).unwrap_err();
    match &err {
        chunkbus_client::ProducerError::BatchFailed { maybe_stored, .. } => {
            assert!(*maybe_stored, "{err}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.read_all("old"), b"p0\n", "stored once, not twice");
}

/// An HTTP/1.1 proxy (one request at a time per connection, bodies by
/// Content-Length) that removes the idempotence parameters from every
/// request line and resets the connection instead of forwarding the first
/// answer.
fn legacy_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let answers = Arc::new(AtomicU64::new(0));
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(legacy_conn(client, upstream, Arc::clone(&answers)));
            }
        });
    });
    addr
}

/// Reads one HTTP message head and its Content-Length body.
async fn read_message(
    r: &mut tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> Option<(String, Vec<u8>)> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.ok()?;
    Some((head, body))
}

async fn legacy_conn(client: tokio::net::TcpStream, upstream: SocketAddr, answers: Arc<AtomicU64>) {
    use tokio::io::AsyncWriteExt;
    let (cr, mut cw) = client.into_split();
    let mut cr = tokio::io::BufReader::new(cr);
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let (sr, mut sw) = server.into_split();
    let mut sr = tokio::io::BufReader::new(sr);
    while let Some((head, body)) = read_message(&mut cr).await {
        let (line, rest) = head.split_once("\r\n").unwrap_or((&head, ""));
        let stripped: String = {
            let (path, tail) = line.rsplit_once(' ').unwrap_or((line, ""));
            let (before, query) = path.split_once('?').unwrap_or((path, ""));
            let kept: Vec<&str> = query
                .split('&')
                .filter(|kv| {
                    !["producer=", "seq=", "probe="]
                        .iter()
                        .any(|p| kv.starts_with(p))
                })
                .collect();
            format!("{before}?{} {tail}", kept.join("&"))
        };
        let request = format!("{stripped}\r\n{rest}");
        if sw.write_all(request.as_bytes()).await.is_err() || sw.write_all(&body).await.is_err() {
            return;
        }
        let Some((rhead, rbody)) = read_message(&mut sr).await else {
            return;
        };
        if answers.fetch_add(1, Ordering::Relaxed) == 0 {
            return; // the first answer is lost
        }
        if cw.write_all(rhead.as_bytes()).await.is_err() || cw.write_all(&rbody).await.is_err() {
            return;
        }
    }
}
