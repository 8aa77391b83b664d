//! The client crate against servers that misbehave: a server that accepts
//! requests and never answers must not hang a producer, a flush, a group
//! ack or the CLI (issue 20, defects 0 and 1).

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use chunkbus_client::{Client, ClientError, Producer, ProducerConfig, ProducerError, WriteOptions};

/// A server on 127.0.0.1 that accepts connections, reads what they send
/// and never answers. Lives until the test process ends.
fn stalling_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 << 10];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Fails the test instead of hanging when `f` does not finish in time.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_every_call() {
    let addr = stalling_server();
    let client = Client::new(&format!("http://{addr}"))
        .unwrap()
        .with_request_timeout(Duration::from_millis(300));

    let t = Instant::now();
    let err = bounded("write", client.write("c", "a\n", WriteOptions::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!err.is_safe_to_resend(), "a timed-out write may be stored");
    assert!(err.is_retryable());

    let err = bounded(
        "group ack",
        client.ack_group("c", "g", "n1-chunk000000000", 2),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");

    // A long poll gets its wait on top of the request timeout.
    let t = Instant::now();
    let err = bounded(
        "long poll",
        client.read(
            "c",
            "n1-chunk000000000",
            0,
            1024,
            Some(Duration::from_millis(500)),
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(750),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_fails_stop_instead_of_hanging_on_a_silent_server() {
    let addr = stalling_server();
    let client = Client::new(&format!("http://{addr}"))
        .unwrap()
        .with_request_timeout(Duration::from_millis(300));
    // Idempotent (the default): what may be stored is sent again, up to
    // the delivery timeout; then the batch fails, never a hang.
    let producer = Producer::new(
        client,
        ProducerConfig::default().delivery_timeout(Duration::from_secs(2)),
    );
    let lane = producer.category("c").unwrap();
    lane.enqueue("one").await.unwrap();
    let err = bounded("flush", producer.flush()).await.unwrap_err();
    match &err {
        ProducerError::BatchFailed {
            maybe_stored,
            count,
            ..
        } => {
            assert!(*maybe_stored, "the server may have stored it: {err}");
            assert_eq!(*count, 1);
        }
        other => panic!("{other:?}"),
    }
    let err = bounded("close", producer.close()).await.unwrap_err();
    assert!(matches!(err, ProducerError::BatchFailed { .. }), "{err:?}");
}

#[test]
fn the_cli_producer_exits_with_an_error_when_answers_never_come() {
    let addr = stalling_server();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .args([
            "produce",
            "--server",
            &format!("http://{addr}"),
            "--category",
            "c",
            "--timeout",
            "500ms",
            "--delivery-timeout",
            "2s",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a\nb\nc\n").unwrap();
    }
    let (status, err) = crate::harness::wait_for_exit(
        &mut child,
        Duration::from_secs(20),
        "chunkbus produce hung on a silent server",
    );
    assert!(!status.success());
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("may have been stored"), "{err}");
}

/// Issue 20 defect 2: an application that reads acks only after `flush`
/// (or never) must not stall delivery; a receiver that falls behind is
/// told how many acks it lost, and every receiver gets every ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_acks_never_block_delivery() {
    let b = tokio::task::spawn_blocking(|| crate::harness::TestBroker::start(&[]))
        .await
        .unwrap();
    let client = Client::new(&format!("http://{}", b.addr)).unwrap();
    let producer = Producer::new(client, ProducerConfig::default().max_batch_bytes(64));
    let mut slow = producer.subscribe_acks(2);
    let mut all = producer.subscribe_acks(100_000);
    let lane = producer.category("acks").unwrap();
    for i in 0..300 {
        lane.enqueue(format!("message {i:04}")).await.unwrap();
    }
    bounded("flush with unread acks", producer.flush())
        .await
        .unwrap();
    match slow.try_recv() {
        Err(chunkbus_client::AckRecvError::Lagged(n)) => assert!(n > 0),
        other => panic!("{other:?}"),
    }
    let mut next = 0;
    while let Ok(ack) = all.try_recv() {
        assert_eq!(ack.first_seq, next, "in order, each message once");
        next += ack.count;
    }
    assert_eq!(next, 300);
}

/// Issue 20 defect 4: a batch refused for good fails its own category
/// only; the others keep going, and `reset` lets it accept messages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_category_does_not_stop_the_others() {
    let b = tokio::task::spawn_blocking(|| {
        crate::harness::TestBroker::start(&["--max-message-size", "100"])
    })
    .await
    .unwrap();
    let client = Client::new(&format!("http://{}", b.addr)).unwrap();
    let producer = Producer::new(client, ProducerConfig::default());
    let big = producer.category("big").unwrap();
    let ok = producer.category("ok").unwrap();
    big.enqueue("x".repeat(200)).await.unwrap(); // the server refuses it: 413
    let err = bounded("flush big", big.flush()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProducerError::BatchFailed {
                maybe_stored: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        big.enqueue("small").await.is_err(),
        "the failed category stops"
    );
    for i in 0..10 {
        ok.enqueue(format!("fine {i}")).await.unwrap();
    }
    bounded("flush ok", ok.flush()).await.unwrap();
    assert!(bounded("flush all", producer.flush()).await.is_err());

    let reset = big.reset().await.expect("it had failed");
    assert_eq!(reset.dropped, 0..1);
    big.enqueue("small again").await.unwrap();
    bounded("flush after reset", producer.flush())
        .await
        .unwrap();
    let (big_data, ok_data) = tokio::task::block_in_place(|| (b.read_all("big"), b.read_all("ok")));
    assert_eq!(big_data, b"small again\n");
    assert_eq!(ok_data.iter().filter(|&&c| c == b'\n').count(), 10);
}

/// Issue 20 defect 3: `shutdown` reports what was not delivered, and a
/// producer dropped with unacknowledged messages says so at `warn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_and_drop_report_undelivered_messages() {
    let addr = stalling_server();
    let client = Client::new(&format!("http://{addr}")).unwrap();
    let producer = Producer::new(client, ProducerConfig::default());
    let lane = producer.category("c").unwrap();
    for m in ["a", "b", "c"] {
        lane.enqueue(m).await.unwrap();
    }
    let t = Instant::now();
    let err = bounded("shutdown", producer.shutdown(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    match &err {
        ProducerError::Undelivered {
            messages,
            categories,
        } => {
            assert_eq!(*messages, 3);
            assert_eq!(categories, &[("c".to_owned(), 3)]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        lane.enqueue("d").await,
        Err(ProducerError::Closed)
    ));

    // Dropped without shutdown: a warning with the count.
    let client = Client::new(&format!("http://{addr}")).unwrap();
    let producer = Producer::new(client, ProducerConfig::default());
    let lane = producer.category("c").unwrap();
    for m in ["a", "b"] {
        lane.enqueue(m).await.unwrap();
    }
    let logs = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<u8>::new()));
    let sink = std::sync::Arc::clone(&logs);
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || LogSink(std::sync::Arc::clone(&sink)))
        .finish();
    tracing::subscriber::with_default(subscriber, || drop((producer, lane)));
    let text = String::from_utf8_lossy(&logs.lock()).into_owned();
    assert!(
        text.contains("WARN") && text.contains("2 messages not yet acknowledged"),
        "{text}"
    );
}

struct LogSink(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Issue 20 defect 7: a failing owner reader or discovery is reported
/// every time and retried; `next()` never ends silently with `None`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_failures_are_reported_every_time_never_a_silent_end() {
    use chunkbus_client::{Consumer, ConsumerConfig, Position, Positions};
    let b = tokio::task::spawn_blocking(|| crate::harness::TestBroker::start(&[]))
        .await
        .unwrap();
    let (status, body) = tokio::task::block_in_place(|| b.write("c", "hello\nworld\n"));
    assert_eq!(status, 200, "{body}");
    let chunk = serde_json::from_str::<serde_json::Value>(&body).unwrap()["chunk"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = Client::new(&format!("http://{}", b.addr)).unwrap();
    let config = ConsumerConfig::default().follow(false);

    // A resume position inside a message: the server refuses the read.
    let mut from = Positions::default();
    from.0.insert(
        "node1".into(),
        Position {
            chunk: chunk.clone(),
            offset: 3,
        },
    );
    let mut consumer = Consumer::start(client.clone(), "c", config.clone(), from).unwrap();
    for attempt in 0..3 {
        let r = bounded("next", consumer.next()).await;
        assert!(r.is_err(), "attempt {attempt}: {r:?}");
    }

    // Discovery that fails (an invalid category) is reported each time too.
    let mut consumer = Consumer::start(
        client.clone(),
        "not a category",
        config.clone(),
        Positions::default(),
    )
    .unwrap();
    for attempt in 0..3 {
        let r = bounded("next", consumer.next()).await;
        assert!(r.is_err(), "attempt {attempt}: {r:?}");
    }

    // A healthy consumer still ends normally.
    let mut consumer = Consumer::start(client, "c", config, Positions::default()).unwrap();
    let batch = bounded("next", consumer.next()).await.unwrap().unwrap();
    assert_eq!(&batch.data[..], b"hello\nworld\n");
    assert!(bounded("end", consumer.next()).await.unwrap().is_none());
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers every request with
/// `answer(method, path_and_query)` = (status, extra headers, body), one
/// request per connection. Lives until the test process ends.
fn scripted_server(
    answer: impl Fn(&str, &str) -> (u16, &'static str, Vec<u8>) + Send + Sync + 'static,
) -> SocketAddr {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let answer = std::sync::Arc::clone(&answer);
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&req);
                let mut line = text.lines().next().unwrap_or("").split(' ');
                let (method, target) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                let (status, headers, body) = answer(method, target);
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            });
        }
    });
    addr
}

/// Issue 20 defect 5: a chunk the server does not hold (a plain `404`: a
/// replica catching up, a load balancer) is never skipped: the consumer
/// retries, then reports it, and delivers nothing of a later chunk first.
/// Only a `404` saying `chunkbus-deleted: true` is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_missing_on_the_server_is_reported_never_skipped() {
    use chunkbus_client::{Consumer, ConsumerConfig, ConsumerError, Positions};
    fn listing_and_reads(deleted: bool) -> impl Fn(&str, &str) -> (u16, &'static str, Vec<u8>) {
        move |_method, target| {
            if target.starts_with("/listChunks") {
                let list = r#"[{"name":"n1-chunk000000000","complete":true,"size":2},
                               {"name":"n1-chunk000000001","complete":true,"size":2}]"#;
                return (200, "", list.as_bytes().to_vec());
            }
            if target.contains("chunk=n1-chunk000000000") {
                let header = if deleted {
                    "chunkbus-deleted: true\r\n"
                } else {
                    ""
                };
                return (404, header, b"unknown chunk n1-chunk000000000\n".to_vec());
            }
            if target.contains("chunk=n1-chunk000000001") && target.contains("off=0&") {
                return (200, "", b"b\n".to_vec());
            }
            (200, "", Vec::new())
        }
    }
    let config = ConsumerConfig::default()
        .follow(false)
        .missing_chunk_wait(Duration::from_millis(300));

    // Not held there: reported (again and again), chunk 1 never comes first.
    let addr = scripted_server(listing_and_reads(false));
    let client = Client::new(&format!("http://{addr}")).unwrap();
    let mut consumer = Consumer::start(client, "c", config.clone(), Positions::default()).unwrap();
    for attempt in 0..2 {
        match bounded("next", consumer.next()).await {
            Err(ConsumerError::ChunkUnavailable { chunk, .. }) => {
                assert_eq!(chunk, "n1-chunk000000000", "attempt {attempt}");
            }
            other => panic!("attempt {attempt}: skipped or ended: {other:?}"),
        }
    }
    assert!(consumer.stats().retries > 0);

    // A gap between listed chunks (1 not listed, 2 is) is asked for, not
    // jumped over: 0, then the report about 1, and never 2 before it.
    let addr = scripted_server(|_method, target| {
        if target.starts_with("/listChunks") {
            let list = r#"[{"name":"n1-chunk000000000","complete":true,"size":2},
                           {"name":"n1-chunk000000002","complete":true,"size":2}]"#;
            return (200, "", list.as_bytes().to_vec());
        }
        if target.contains("off=0&") && !target.contains("chunk=n1-chunk000000001") {
            return (200, "", b"x\n".to_vec());
        }
        if target.contains("chunk=n1-chunk000000001") {
            return (404, "", b"unknown chunk\n".to_vec());
        }
        (200, "", Vec::new())
    });
    let client = Client::new(&format!("http://{addr}")).unwrap();
    let mut consumer = Consumer::start(client, "c", config.clone(), Positions::default()).unwrap();
    let first = bounded("next", consumer.next()).await.unwrap().unwrap();
    assert_eq!(&*first.chunk, "n1-chunk000000000");
    match bounded("next", consumer.next()).await {
        Err(ConsumerError::ChunkUnavailable { chunk, .. }) => {
            assert_eq!(chunk, "n1-chunk000000001");
        }
        other => panic!("jumped over chunk 1: {other:?}"),
    }

    // Deleted (the server says so): skipped, the next chunk follows.
    let addr = scripted_server(listing_and_reads(true));
    let client = Client::new(&format!("http://{addr}")).unwrap();
    let mut consumer = Consumer::start(client, "c", config, Positions::default()).unwrap();
    let batch = bounded("next", consumer.next()).await.unwrap().unwrap();
    assert_eq!(
        (&*batch.chunk, &batch.data[..]),
        ("n1-chunk000000001", &b"b\n"[..])
    );
    assert!(bounded("end", consumer.next()).await.unwrap().is_none());
}

/// Issue 20 defect 5, server side: a `404` for a chunk that was deleted
/// (acked) says so (`chunkbus-deleted: true`), one for a chunk that never
/// existed does not; a consumer resuming in the deleted chunk goes on
/// with the next one, and one resuming in a chunk this server does not
/// have (its owner known only from the position) reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_chunks_are_marked_and_only_they_are_skipped() {
    use chunkbus_client::{Consumer, ConsumerConfig, ConsumerError, Position, Positions};
    let b = tokio::task::spawn_blocking(|| {
        crate::harness::TestBroker::start(&["--max-chunk-size", "4096"])
    })
    .await
    .unwrap();
    let body = |c: char| format!("{}\n", c.to_string().repeat(2999));
    for c in ['a', 'b', 'c'] {
        let (status, text) = tokio::task::block_in_place(|| b.write("c", body(c)));
        assert_eq!(status, 200, "{text}");
    }
    let client = Client::new(&format!("http://{}", b.addr)).unwrap();
    let chunks = client.list_chunks("c").await.unwrap();
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert!(chunks[0].complete, "{chunks:?}");
    client.ack_chunk("c", &chunks[0].name, 3000).await.unwrap();

    let err = client
        .read("c", &chunks[0].name, 0, 1 << 20, None)
        .await
        .unwrap_err();
    assert!(err.is_chunk_deleted(), "{err:?}");
    assert_eq!(err.status(), Some(404), "SPEC: still a 404");
    let err = client
        .read("c", "node1-chunk000000099", 0, 1 << 20, None)
        .await
        .unwrap_err();
    assert!(!err.is_chunk_deleted(), "never existed: {err:?}");
    assert_eq!(err.status(), Some(404));

    let config = ConsumerConfig::default()
        .follow(false)
        .missing_chunk_wait(Duration::from_millis(300));
    let from = |chunk: &str| {
        let mut p = Positions::default();
        p.0.insert(
            "node1".into(),
            Position {
                chunk: chunk.into(),
                offset: 0,
            },
        );
        p
    };
    let mut consumer =
        Consumer::start(client.clone(), "c", config.clone(), from(&chunks[0].name)).unwrap();
    let mut got = Vec::new();
    while let Some(batch) = bounded("next", consumer.next()).await.unwrap() {
        got.push(batch.chunk.to_string());
    }
    assert_eq!(got, [chunks[1].name.clone(), chunks[2].name.clone()]);

    // An owner this server lists nothing of (another server's chunk, not
    // replicated here): reported, not a silent end.
    let mut from_other = Positions::default();
    from_other.0.insert(
        "node7".into(),
        Position {
            chunk: "node7-chunk000000003".into(),
            offset: 0,
        },
    );
    let mut consumer = Consumer::start(client, "c", config, from_other).unwrap();
    let mut saw_error = false;
    while let Some(item) = bounded("next", consumer.next_batch()).await {
        match item {
            Ok(batch) => assert_ne!(&*batch.owner, "node7"),
            Err(ConsumerError::ChunkUnavailable { chunk, .. }) => {
                assert_eq!(chunk, "node7-chunk000000003");
                saw_error = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(saw_error, "node7's position was dropped silently");
}

/// Issue 20 defect 6: two members of a group that read the same batch
/// cannot both ack it: the ack is a compare-and-set from the batch's
/// start, so exactly one wins and the other gets a conflict. The old
/// form (no `from`) keeps working for existing clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_group_members_never_both_win_a_batch() {
    use chunkbus_client::{Consumer, ConsumerConfig, Positions};
    let b = tokio::task::spawn_blocking(|| crate::harness::TestBroker::start(&[]))
        .await
        .unwrap();
    let (status, text) = tokio::task::block_in_place(|| b.write("c", "a\nb\n"));
    assert_eq!(status, 200, "{text}");
    let client = Client::new(&format!("http://{}", b.addr)).unwrap();
    let config = ConsumerConfig::default()
        .follow(false)
        .group(Some("g".into()));
    let mut one =
        Consumer::start(client.clone(), "c", config.clone(), Positions::default()).unwrap();
    let mut two = Consumer::start(client.clone(), "c", config, Positions::default()).unwrap();
    let b1 = bounded("next", one.next()).await.unwrap().unwrap();
    let b2 = bounded("next", two.next()).await.unwrap().unwrap();
    assert_eq!(
        (b1.offset, b1.end()),
        (b2.offset, b2.end()),
        "the same batch"
    );
    bounded("ack one", one.ack(&b1)).await.unwrap();
    let err = bounded("ack two", two.ack(&b2)).await.unwrap_err();
    assert!(err.is_conflict(), "both members won the batch: {err:?}");
    assert!(two.positions().0.is_empty(), "the loser did not move");

    // The HTTP surface: a stale `from` is a 409 naming the stored offset,
    // `from` past `off` a 400, and the old form still answers as before.
    let chunk = b1.chunk.to_string();
    let (s, text) = tokio::task::block_in_place(|| {
        b.post(
            &format!("/ack?category=c&consumer=g&chunk={chunk}&from=0&off=4"),
            "",
        )
    });
    assert_eq!(s, 409, "{text}");
    assert!(text.contains("at offset 4"), "{text}");
    let (s, text) = tokio::task::block_in_place(|| {
        b.post(
            &format!("/ack?category=c&consumer=g&chunk={chunk}&from=4&off=2"),
            "",
        )
    });
    assert_eq!(s, 400, "{text}");
    let (s, text) = tokio::task::block_in_place(|| {
        b.post(
            &format!("/ack?category=c&consumer=g&chunk={chunk}&off=4"),
            "",
        )
    });
    assert_eq!(s, 200, "old form, at the stored position: {text}");
    let (s, text) = tokio::task::block_in_place(|| {
        b.post(
            &format!("/ack?category=c&consumer=g&chunk={chunk}&off=2"),
            "",
        )
    });
    assert_eq!(s, 409, "old form, behind: {text}");
}

/// Issue 20 idioms: `try_send` never waits and `send_timeout` waits only
/// as long as it is told, when the memory budget is spent (here: the one
/// batch is held by a request that is never answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_send_and_send_timeout_do_not_wait_for_memory() {
    let addr = stalling_server();
    let client = Client::new(&format!("http://{addr}"))
        .unwrap()
        .with_request_timeout(Duration::from_secs(30));
    let config = ProducerConfig::default()
        .max_batch_bytes(64)
        .buffer_bytes(64)
        .linger(Duration::from_millis(1));
    let producer = Producer::new(client, config);
    let lane = producer.category("c").unwrap();
    let mut queued = 0;
    let t = Instant::now();
    let full = loop {
        match lane.try_send("0123456789") {
            Ok(d) => {
                assert_eq!(d.seq(), queued);
                queued += 1;
            }
            Err(e) => break e,
        }
        assert!(queued < 100, "the budget is never spent");
    };
    assert!(matches!(full, ProducerError::Full), "{full:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let t = Instant::now();
    let err = bounded(
        "send_timeout",
        lane.send_timeout("0123456789", Duration::from_millis(200)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProducerError::Full), "{err:?}");
    assert!(t.elapsed() >= Duration::from_millis(200));
    let _ = producer.shutdown(Duration::from_millis(10)).await;
}

/// Review of issue 20 defect 6: after a member's group ack failed (here a
/// `409`: another member had the batch), its local idea of where the group
/// is no longer holds. Acking on would either keep failing until the next
/// chunk and then move the group past messages nobody processed, or cover
/// batches it rolled back; so every later ack is refused until it restarts
/// from the group's positions, and the group stays where the winner put it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_group_ack_a_member_acks_nothing_more() {
    use chunkbus_client::{Consumer, ConsumerConfig, ConsumerError, Positions};
    let b = tokio::task::spawn_blocking(|| crate::harness::TestBroker::start(&[]))
        .await
        .unwrap();
    let line = |c: char| format!("{}\n", c.to_string().repeat(99));
    let body: String = ['a', 'b', 'c'].into_iter().map(line).collect();
    let (status, text) = tokio::task::block_in_place(|| b.write("c", body));
    assert_eq!(status, 200, "{text}");
    let client = Client::new(&format!("http://{}", b.addr)).unwrap();
    let config = ConsumerConfig::default()
        .follow(false)
        .max_read_bytes(100)
        .group(Some("g".into()));
    let mut one =
        Consumer::start(client.clone(), "c", config.clone(), Positions::default()).unwrap();
    let mut two = Consumer::start(client.clone(), "c", config, Positions::default()).unwrap();
    let a1 = bounded("next", one.next()).await.unwrap().unwrap();
    let a2 = bounded("next", two.next()).await.unwrap().unwrap();
    assert_eq!((a1.offset, a1.end()), (0, 100));
    assert_eq!((a2.offset, a2.end()), (0, 100));
    bounded("ack one", one.ack(&a1)).await.unwrap();
    let err = bounded("ack two", two.ack(&a2)).await.unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    // Member two goes on with the next batch: refused, not sent.
    let b2 = bounded("next", two.next()).await.unwrap().unwrap();
    assert_eq!((b2.offset, b2.end()), (100, 200));
    let err = bounded("ack two again", two.ack(&b2)).await.unwrap_err();
    assert!(
        matches!(err, ConsumerError::GroupAckStopped { .. }),
        "{err:?}"
    );
    // Member one is unaffected and the group is where one left it.
    let b1 = bounded("next", one.next()).await.unwrap().unwrap();
    bounded("ack one again", one.ack(&b1)).await.unwrap();
    let (s, text) = tokio::task::block_in_place(|| b.get_text("/consumers?category=c"));
    assert_eq!(s, 200, "{text}");
    assert!(
        text.contains("200"),
        "group at 200 (one's acks only): {text}"
    );
}
