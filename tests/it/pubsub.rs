//! The client crate's Producer and Consumer, and the `produce`/`consume`
//! CLI, against the real server binary.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chunkbus_client::{
    Client, Consumer, ConsumerConfig, Positions, Producer, ProducerConfig, ProducerError,
};

use crate::harness::TestBroker;

async fn broker(args: &'static [&'static str]) -> TestBroker {
    tokio::task::spawn_blocking(move || TestBroker::start(args))
        .await
        .unwrap()
}

/// Parses `p<id> <n>\n` messages.
fn parse(msg: &[u8]) -> (usize, u64) {
    let s = std::str::from_utf8(msg).unwrap().trim_end();
    let (p, n) = s.split_once(' ').unwrap();
    (p[1..].parse().unwrap(), n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_producers_one_million_messages_exact_and_ordered() {
    const PRODUCERS: usize = 4;
    const PER: u64 = 250_000;
    let b = broker(&["--max-chunk-size", "2MiB"]).await;
    let url = format!("http://{}", b.addr);
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let producer = Producer::new(
                Client::new(&url).unwrap(),
                ProducerConfig::default().max_batch_bytes(256 << 10),
            );
            let mut acks = producer.subscribe_acks(1 << 16);
            let lane = producer.category("nums").unwrap();
            for n in 0..PER {
                let seq = lane.enqueue(format!("p{p} {n}")).await.unwrap().seq();
                assert_eq!(seq, n, "sequence numbers count messages");
            }
            producer.close().await.unwrap();
            // Per-batch acks cover every message exactly once, in order.
            let mut next = 0;
            while let Ok(ack) = acks.try_recv() {
                assert_eq!(ack.first_seq, next);
                next += ack.count;
            }
            assert_eq!(next, PER);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let config = ConsumerConfig::default().follow(false);
    let mut consumer = Consumer::start(
        Client::new(&url).unwrap(),
        "nums",
        config,
        Positions::default(),
    )
    .unwrap();
    let mut last = [None::<u64>; PRODUCERS];
    let (mut count, mut sum) = (0u64, 0u64);
    while let Some(batch) = consumer.next().await.unwrap() {
        for msg in batch.messages() {
            let (p, n) = parse(msg);
            assert!(
                last[p].is_none_or(|l| n == l + 1),
                "producer {p}: {n} after {:?}",
                last[p]
            );
            last[p] = Some(n);
            count += 1;
            sum += n;
        }
        consumer.ack(&batch).await.unwrap();
    }
    assert_eq!(count, PRODUCERS as u64 * PER);
    assert_eq!(sum, PRODUCERS as u64 * (PER * (PER - 1) / 2));
    let chunks = Client::new(&url)
        .unwrap()
        .list_chunks("nums")
        .await
        .unwrap();
    assert!(chunks.len() > 2, "spans several chunks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_resumes_from_stored_positions_duplicates_only_the_unacked_batch() {
    let b = broker(&["--max-chunk-size", "64KiB"]).await;
    let client = Client::new(&format!("http://{}", b.addr)).unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let lane = producer.category("r").unwrap();
    const N: u64 = 50_000;
    for n in 0..N {
        lane.enqueue(format!("p0 {n}")).await.unwrap();
    }
    producer.flush().await.unwrap();
    let config = ConsumerConfig::default()
        .follow(false)
        .max_read_bytes(16 << 10);
    // First run: process and ack (storing positions, as JSON, after each
    // ack), then process one more batch and "crash" before acking it.
    let mut seen: Vec<u64> = Vec::new();
    let mut stored = String::from("{}");
    let mut consumer =
        Consumer::start(client.clone(), "r", config.clone(), Positions::default()).unwrap();
    let mut batches = 0;
    let unacked_len = loop {
        let batch = consumer.next().await.unwrap().expect("more data");
        let ns: Vec<u64> = batch.messages().map(|m| parse(m).1).collect();
        seen.extend(&ns);
        batches += 1;
        if batches == 12 {
            break ns.len();
        }
        consumer.ack(&batch).await.unwrap();
        stored = serde_json::to_string(&consumer.positions()).unwrap();
    };
    drop(consumer);
    assert!(stored.contains("node1-chunk"), "{stored}");
    // Second run from the stored positions.
    let from: Positions = serde_json::from_str(&stored).unwrap();
    let mut consumer = Consumer::start(client, "r", config, from).unwrap();
    while let Some(batch) = consumer.next().await.unwrap() {
        seen.extend(batch.messages().map(|m| parse(m).1));
        consumer.ack(&batch).await.unwrap();
    }
    let mut counts: HashMap<u64, u32> = HashMap::new();
    for n in &seen {
        *counts.entry(*n).or_default() += 1;
    }
    assert_eq!(counts.len() as u64, N, "nothing lost");
    let dups = counts.values().filter(|c| **c > 1).count();
    assert_eq!(
        dups, unacked_len,
        "exactly the un-acked batch is seen twice"
    );
    assert!(counts.values().all(|c| *c <= 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_acks_delete_processed_sealed_chunks() {
    let b = broker(&["--max-chunk-size", "8KiB"]).await;
    let client = Client::new(&format!("http://{}", b.addr)).unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let lane = producer.category("ca").unwrap();
    for n in 0..5_000 {
        lane.enqueue(format!("p0 {n}")).await.unwrap();
        if n % 500 == 499 {
            lane.flush().await.unwrap(); // several bodies → several chunks
        }
    }
    producer.flush().await.unwrap();
    let before = client.list_chunks("ca").await.unwrap();
    assert!(before.len() >= 3, "{before:?}");
    let config = ConsumerConfig::default().follow(false).chunk_acks(true);
    let mut consumer = Consumer::start(client.clone(), "ca", config, Positions::default()).unwrap();
    let mut count = 0;
    while let Some(batch) = consumer.next().await.unwrap() {
        count += batch.messages().count();
        consumer.ack(&batch).await.unwrap();
    }
    assert_eq!(count, 5_000);
    let after = client.list_chunks("ca").await.unwrap();
    assert!(
        after.iter().all(|c| !c.complete),
        "every sealed chunk was acked away: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_second_address_when_the_first_is_dead() {
    let b = broker(&[]).await;
    // Port 1 on loopback: connection refused.
    let client =
        Client::with_servers(["http://127.0.0.1:1", &format!("http://{}", b.addr)]).unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let lane = producer.category("fo").unwrap();
    for n in 0..1000 {
        lane.enqueue(format!("p0 {n}")).await.unwrap();
    }
    producer.flush().await.unwrap();
    assert_eq!(client.active_server(), format!("http://{}", b.addr));
    let config = ConsumerConfig::default().follow(false);
    let fresh =
        Client::with_servers(["http://127.0.0.1:1", &format!("http://{}", b.addr)]).unwrap();
    let mut consumer = Consumer::start(fresh, "fo", config, Positions::default()).unwrap();
    let mut n = 0;
    while let Some(batch) = consumer.next().await.unwrap() {
        n += batch.messages().count();
    }
    assert_eq!(n, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_memory_is_bounded_while_the_server_is_stopped() {
    let b = broker(&[]).await;
    let client = Client::new(&format!("http://{}", b.addr)).unwrap();
    const BUFFER: usize = 4 << 20;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default()
            .buffer_bytes(BUFFER)
            .max_batch_bytes(256 << 10),
    );
    // Warm the connection so the stop hits an established one.
    let lane = producer.category("bp").unwrap();
    lane.enqueue("p0 0").await.unwrap();
    producer.flush().await.unwrap();
    b.signal(libc::SIGSTOP);
    let sent = Arc::new(AtomicU64::new(1));
    let task = {
        let (lane, sent) = (lane.clone(), Arc::clone(&sent));
        tokio::spawn(async move {
            let msg_tail = "x".repeat(90);
            for n in 1..200_000u64 {
                lane.enqueue(format!("p0 {n} {msg_tail}")).await.unwrap();
                sent.store(n + 1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stalled_at = sent.load(Ordering::Relaxed);
    let held = producer.buffered_bytes();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sent.load(Ordering::Relaxed),
        stalled_at,
        "send blocks: backpressure"
    );
    assert!(held <= BUFFER, "held {held} > {BUFFER}");
    assert!(
        stalled_at * 100 < (BUFFER as u64) * 2,
        "accepted {stalled_at} messages of ~100 B: more than the buffer holds"
    );
    b.signal(libc::SIGCONT);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("resumes after SIGCONT")
        .unwrap();
    producer.flush().await.unwrap();
    let config = ConsumerConfig::default().follow(false);
    let mut consumer = Consumer::start(client, "bp", config, Positions::default()).unwrap();
    let mut expect = 0;
    while let Some(batch) = consumer.next().await.unwrap() {
        for m in batch.messages() {
            assert_eq!(parse_first_two(m), expect);
            expect += 1;
        }
    }
    assert_eq!(expect, 200_000);
}

fn parse_first_two(m: &[u8]) -> u64 {
    let s = std::str::from_utf8(m).unwrap();
    s.split(' ').nth(1).unwrap().trim_end().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_rejects_bad_messages_and_stops_at_a_refused_batch() {
    let b = broker(&["--max-batch-size", "64KiB", "--max-message-size", "1KiB"]).await;
    let client = Client::new(&format!("http://{}", b.addr)).unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig::default().max_message_bytes(4096),
    );
    assert!(producer.category("a/b").is_err());
    let lane = producer.category("bad").unwrap();
    let e = lane.enqueue("two\nlines").await.unwrap_err();
    assert!(matches!(e, ProducerError::InvalidMessage(_)), "{e}");
    let e = lane.enqueue("x".repeat(5000)).await.unwrap_err();
    assert!(e.to_string().contains("max_message_bytes"), "{e}");
    assert!(lane.send_lines(b"no newline").await.is_err());
    // 2 KiB messages pass the producer's limit but not the server's: 413,
    // which stops the producer (nothing after a lost batch is stored).
    lane.enqueue("y".repeat(2000)).await.unwrap();
    let e = producer.flush().await.unwrap_err();
    match &e {
        ProducerError::BatchFailed {
            maybe_stored,
            source,
            ..
        } => {
            assert!(!maybe_stored, "a 413 stores nothing");
            assert_eq!(source.status(), Some(413));
        }
        other => panic!("{other:?}"),
    }
    assert!(lane.enqueue("z").await.is_err(), "fail-stop");
    assert!(client.list_chunks("bad").await.unwrap().is_empty());
}

fn cli(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chunkbus"));
    c.args(args).env("CHUNKBUS_LOG", "warn");
    c
}

#[test]
fn cli_produce_and_consume_in_pipes() {
    let b = TestBroker::start(&["--max-chunk-size", "1MiB"]);
    let server = format!("http://{}", b.addr);
    let mut input = String::new();
    for n in 1..=200_000 {
        input.push_str(&n.to_string());
        input.push('\n');
    }
    input.push_str("last-without-newline");
    let mut p = cli(&["produce", "--category", "cli", "--server", &server])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        p.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = p.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("produced 200001 messages"), "{err}");
    let out = cli(&["consume", "--category", "cli", "--server", &server])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut expected = input.clone().into_bytes();
    expected.push(b'\n');
    assert_eq!(out.stdout, expected, "stdin order, byte for byte");
    assert!(b.chunks("cli").len() > 1);

    // Failover list, and an early-closing reader (`| head`) is not an error.
    let list = format!("http://127.0.0.1:1,{server}");
    let start = Instant::now();
    let mut c = cli(&["consume", "--category", "cli", "--server", &list])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Read;
        let mut first = [0u8; 8];
        c.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
        assert_eq!(&first, b"1\n2\n3\n4\n");
    }
    drop(c.stdout.take());
    let status = c.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(start.elapsed() < Duration::from_secs(20));

    // Errors are clear and non-zero.
    let out = cli(&["produce", "--category", "../x", "--server", &server])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid category"));
}

#[test]
fn cli_consume_follow_sees_new_messages() {
    let b = TestBroker::start(&[]);
    let server = format!("http://{}", b.addr);
    let mut c = cli(&[
        "consume",
        "--category",
        "fol",
        "--server",
        &server,
        "--follow",
        "--wait",
        "200ms",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.write("fol", "hello\nworld\n").0, 200);
    let mut got = [0u8; 12];
    {
        use std::io::Read;
        c.stdout.as_mut().unwrap().read_exact(&mut got).unwrap();
    }
    assert_eq!(&got, b"hello\nworld\n");
    let _ = c.kill();
    let _ = c.wait();
}
