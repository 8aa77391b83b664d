//! The client crate against the real server binary.

use std::time::Duration;

use chunkbus_client::{Client, ClientError, WriteOptions};

use crate::harness::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_round_trip_list_read_ack() {
    let b = tokio::task::spawn_blocking(|| TestBroker::start(&["--max-chunk-size", "4096"]))
        .await
        .unwrap();
    let c = Client::new(&format!("http://{}", b.addr)).unwrap();
    let mut expected = Vec::new();
    for i in 0..20 {
        let body = format!("{i:03}-{}\n", "x".repeat(995));
        let r = c
            .write(
                "cl",
                body.clone(),
                WriteOptions {
                    sync: i % 2 == 0,
                    ..WriteOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(r.size, 1000);
        expected.extend_from_slice(body.as_bytes());
    }
    assert_eq!(c.list_categories().await.unwrap(), vec!["cl".to_owned()]);
    // Wait until all but the newest chunk are sealed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let chunks = loop {
        let chunks = c.list_chunks("cl").await.unwrap();
        if chunks.iter().rev().skip(1).all(|x| x.complete) {
            break chunks;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut got = Vec::new();
    for ch in &chunks {
        let mut off = 0;
        loop {
            let bytes = c
                .read("cl", &ch.name, off, 2500, Some(Duration::from_millis(20)))
                .await
                .unwrap();
            if bytes.is_empty() {
                break;
            }
            assert!(bytes.len() <= 2500 && bytes.ends_with(b"\n"));
            off += bytes.len() as u64;
            got.extend_from_slice(&bytes);
        }
        if ch.complete {
            c.ack_chunk("cl", &ch.name, ch.size).await.unwrap();
        }
    }
    assert_eq!(got, expected);
    assert_eq!(
        c.list_chunks("cl").await.unwrap().len(),
        1,
        "sealed chunks acked away"
    );
}

#[tokio::test]
async fn client_errors_are_typed() {
    let b = tokio::task::spawn_blocking(|| TestBroker::start(&[]))
        .await
        .unwrap();
    let c = Client::new(&format!("http://{}", b.addr)).unwrap();
    let e = c
        .write("bad/name", "x\n", WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("invalid category"), "{e}");
    let e = c
        .write("ok", "no newline", WriteOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    let e = c
        .read("ok", "node1-chunk000000000", 0, 10, None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));

    let dead = Client::new("http://127.0.0.1:1").unwrap();
    let e = dead.list_categories().await.unwrap_err();
    assert!(
        matches!(e, ClientError::Transport { .. }) && e.is_retryable(),
        "{e:?}"
    );
    // https:// is accepted, but without CA certificates a request is a
    // permanent TLS error, before anything is sent.
    let no_ca = Client::new("https://127.0.0.1:1").unwrap();
    let e = no_ca.list_categories().await.unwrap_err();
    assert!(
        matches!(e, ClientError::Tls(_)) && !e.is_retryable() && !e.is_safe_to_resend(),
        "{e:?}"
    );
    assert!(Client::new("ftp://x").is_err());
    assert!(Client::new("https://").is_err());
}

/// Issue 20 idioms: a future per send resolving to where the message was
/// stored, the consumer as a `Stream`, `(offset, message)` iteration that
/// agrees with those places, a cloneable `Acker`, builders and stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_resolve_to_where_consumers_find_the_messages() {
    use std::collections::HashMap;

    use chunkbus_client::{
        Consumer, ConsumerConfig, Positions, Producer, ProducerConfig, StatsEvent, StatsHook,
    };
    use futures::StreamExt;

    #[derive(Default)]
    struct Seen(std::sync::atomic::AtomicU64);
    impl StatsHook for Seen {
        fn record(&self, event: &StatsEvent<'_>) {
            if let StatsEvent::Stored { messages, .. } = event {
                self.0
                    .fetch_add(*messages, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    let b = tokio::task::spawn_blocking(|| TestBroker::start(&["--max-chunk-size", "4096"]))
        .await
        .unwrap();
    let client = Client::builder()
        .server(format!("http://{}", b.addr))
        .request_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let seen = std::sync::Arc::new(Seen::default());
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .max_batch_bytes(512)
            .stats_hook(seen.clone()),
    );
    let lane = producer.category("idioms").unwrap();
    let first = lane.send("m-0000").await.unwrap();
    assert_eq!((first.seq, first.offset, first.len), (0, 0, 7));
    let mut pending = Vec::new();
    for i in 1..600 {
        pending.push(lane.enqueue(format!("m-{i:04}")).await.unwrap());
    }
    // Where each message went, by its text.
    let mut placed = HashMap::new();
    placed.insert("m-0000".to_owned(), (first.chunk.to_string(), first.offset));
    for (i, d) in (1..).zip(pending) {
        assert_eq!(d.seq(), i);
        let s = d.await.unwrap();
        assert_eq!((s.seq, s.len), (i, 7));
        placed.insert(format!("m-{i:04}"), (s.chunk.to_string(), s.offset));
    }
    let stats = producer.stats();
    assert_eq!(stats.messages, 600);
    assert_eq!(stats.bytes, 600 * 7);
    assert!(stats.batches > 1, "{stats:?}");
    assert_eq!(seen.0.load(std::sync::atomic::Ordering::Relaxed), 600);
    producer.close().await.unwrap();

    // The consumer as a stream; acks from another task through an Acker.
    let mut consumer = Consumer::start(
        client,
        "idioms",
        ConsumerConfig::default().follow(false).max_read_bytes(1000),
        Positions::default(),
    )
    .unwrap();
    let acker = consumer.acker();
    let mut found = 0;
    let mut acks = Vec::new();
    // `StreamExt::next` (the inherent `next` returns `Result<Option<_>>`).
    while let Some(batch) =
        tokio::time::timeout(Duration::from_secs(20), StreamExt::next(&mut consumer))
            .await
            .expect("stream hung")
    {
        let batch = batch.unwrap();
        assert_eq!(batch.iter().count(), batch.len());
        for (offset, msg) in &batch {
            let text = String::from_utf8_lossy(msg).trim_end().to_owned();
            assert_eq!(
                placed.get(&text),
                Some(&(batch.chunk.to_string(), offset)),
                "{text} is where its send said"
            );
            found += 1;
        }
        let acker = acker.clone();
        acks.push(tokio::spawn(async move { acker.ack(&batch).await }));
    }
    assert_eq!(found, 600);
    for a in acks {
        a.await.unwrap().unwrap();
    }
    let positions = consumer.positions();
    let last = positions.0.get("node1").expect("a position");
    let (chunk, offset) = placed.get("m-0599").unwrap();
    assert_eq!((&last.chunk, last.offset), (chunk, offset + 7));
    assert_eq!(consumer.stats().messages, 600);
}
