//! End-to-end latency, produce → consume, under an open-loop load (as
//! wrk2 does it): bodies are scheduled at fixed intended times and queued
//! for a fixed pool of connections, whether or not earlier ones have been
//! answered; every message carries its body's intended send time, so a
//! stalled server shows up as latency instead of as fewer samples
//! (coordinated omission is corrected by construction). A consumer
//! (the client crate's) follows the category and records, once per body,
//! now − intended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::{Bytes, BytesMut};
use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions, WriteOptions};
use hdrhistogram::Histogram;
use hyper::Method;

use crate::client::Conn;

/// Digits of the nanosecond stamp at the start of every message.
const STAMP: usize = 20;
/// Stamp of the body that tells the consumer to stop.
const END_STAMP: u64 = u64::MAX;
/// Connections sending the scheduled bodies.
const CONNS: usize = 16;
/// Bodies queued behind busy connections before the generator reports
/// saturation (and waits, which would hide latency).
const MAX_QUEUED: usize = 4096;
/// A write reply slower than this fails the run (a stuck server, a full
/// disk) instead of hanging the bench.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How far past its scheduled end a saturated run may go before it fails.
const OVERRUN: Duration = Duration::from_secs(60);

/// Outcome of one open-loop run.
pub struct LatencyResult {
    /// Body bytes per second actually sent.
    pub achieved: f64,
    /// produce → consume latency per body, µs (after warm-up).
    pub hist: Histogram<u64>,
    /// Intended send → write reply, µs (after warm-up).
    pub replies: Histogram<u64>,
    /// Whether the generator had to wait for answers (load beyond capacity).
    pub saturated: bool,
}

/// Sends `rate` body bytes per second in `body_size` bodies of
/// `message_size` messages to a fresh category on `addr` for
/// `warmup + dur`, while one consumer follows it on `consume_addr` (the
/// same server, or a replica to measure replication lag).
#[allow(clippy::too_many_arguments)]
pub async fn open_loop(
    addr: SocketAddr,
    consume_addr: SocketAddr,
    category: &str,
    message_size: usize,
    body_size: usize,
    rate: f64,
    warmup: Duration,
    dur: Duration,
) -> Result<LatencyResult> {
    if message_size < STAMP + 2 {
        bail!("latency needs messages of at least {} bytes", STAMP + 2);
    }
    let client = Client::new(&format!("http://{addr}"))?;
    let per_body = (body_size / message_size).max(1);
    let body_len = per_body * message_size;
    let interval = Duration::from_secs_f64(body_len as f64 / rate);
    let t0 = Instant::now();
    let measure_from = warmup.as_nanos() as u64;
    let total = warmup + dur;
    let template = {
        let mut b = BytesMut::with_capacity(body_len);
        for _ in 0..per_body {
            b.extend_from_slice(&[b'0'; STAMP]);
            b.extend_from_slice(&vec![b'l'; message_size - STAMP - 1]);
            b.extend_from_slice(b"\n");
        }
        b
    };
    // Create the category first so the consumer finds it at once (stamp 0
    // is before the measured window).
    client
        .write(
            category,
            stamped(&template, message_size, 0),
            WriteOptions::default(),
        )
        .await?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let consumer = {
        let client = Client::new(&format!("http://{consume_addr}"))?;
        let category = category.to_owned();
        let mut ready_tx = Some(ready_tx);
        tokio::spawn(async move {
            let config = ConsumerConfig::default().wait(Duration::from_secs(1));
            let mut c = Consumer::start(client, &category, config, Positions::default())?;
            let mut hist = Histogram::<u64>::new(3)?;
            let mut prev: [u8; STAMP] = [0; STAMP];
            while let Some(batch) = c.next().await? {
                let now = t0.elapsed().as_nanos() as u64;
                let mut done = false;
                for msg in batch.messages() {
                    let stamp = &msg[..STAMP];
                    if stamp == prev {
                        continue; // same body as the previous message
                    }
                    prev.copy_from_slice(stamp);
                    let sent: u64 = std::str::from_utf8(stamp)?.parse()?;
                    if sent == 0 {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    if sent == END_STAMP {
                        done = true;
                    } else if sent >= measure_from {
                        hist.record(now.saturating_sub(sent) / 1000)?;
                    }
                }
                if done {
                    break;
                }
            }
            anyhow::Ok(hist)
        })
    };
    // Start the clock once the consumer has seen the first body (on a
    // replica, after it was copied), so discovery is not measured.
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .map_err(|_| anyhow::anyhow!("consumer did not see the first body within 30 s"))?
        .map_err(|_| anyhow::anyhow!("consumer ended before the first body"))?;

    let (tx, rx) = tokio::sync::mpsc::channel::<(u64, Bytes)>(MAX_QUEUED);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let path: Arc<str> = format!("/write?category={category}").into();
    let mut workers = Vec::new();
    for _ in 0..CONNS {
        let (rx, path) = (Arc::clone(&rx), Arc::clone(&path));
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut replies = Histogram::<u64>::new(3)?;
            loop {
                let next = rx.lock().await.recv().await;
                let Some((stamp, body)) = next else {
                    break;
                };
                let answer =
                    tokio::time::timeout(REPLY_TIMEOUT, conn.send(Method::POST, &path, body));
                let Ok(answer) = answer.await else {
                    bail!("no write reply within {REPLY_TIMEOUT:?}");
                };
                let (status, _) = answer?;
                if status != 200 {
                    bail!("write answered {status}");
                }
                if stamp >= measure_from {
                    let now = t0.elapsed().as_nanos() as u64;
                    replies.record(now.saturating_sub(stamp) / 1000)?;
                }
            }
            anyhow::Ok(replies)
        }));
    }
    let mut saturated = false;
    let mut sent_bytes = 0u64;
    let start = Instant::now();
    let mut k = 0u64;
    let give_up = start + total + OVERRUN;
    loop {
        let intended = start + interval.mul_f64(k as f64);
        if intended - start >= total {
            break;
        }
        // A failed connection (an error status, disk full, no reply) ends
        // the run at once instead of leaving the others to absorb the load.
        if workers.iter().any(tokio::task::JoinHandle::is_finished) {
            break;
        }
        if Instant::now() > give_up {
            bail!("the server absorbed the scheduled load {OVERRUN:?} late: giving up");
        }
        tokio::time::sleep_until(intended.into()).await;
        let stamp = (intended - t0).as_nanos() as u64;
        let body = stamped(&template, message_size, stamp);
        sent_bytes += body.len() as u64;
        if tx.capacity() == 0 {
            saturated = true;
        }
        tx.send((stamp, body))
            .await
            .map_err(|_| anyhow::anyhow!("all sender connections failed"))?;
        k += 1;
    }
    let achieved = sent_bytes as f64 / start.elapsed().as_secs_f64();
    // Before the queue closes, a finished worker can only be a failed one.
    let failed = workers.iter().any(tokio::task::JoinHandle::is_finished);
    drop(tx);
    let mut replies = Histogram::<u64>::new(3)?;
    if failed {
        // Some connection failed: do not drain the queue through the rest.
        for w in &workers {
            if !w.is_finished() {
                w.abort();
            }
        }
    }
    for w in workers {
        match w.await {
            Ok(r) => replies.add(r?)?,
            Err(e) if e.is_cancelled() => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The end marker: stored after every timed body was answered.
    let tail = stamped(&template, message_size, END_STAMP);
    client
        .write(category, tail, WriteOptions::default())
        .await?;
    let hist = tokio::time::timeout(Duration::from_secs(30), consumer)
        .await
        .map_err(|_| anyhow::anyhow!("consumer did not see the last body within 30 s"))???;
    Ok(LatencyResult {
        achieved,
        hist,
        replies,
        saturated,
    })
}

/// The template with every message's stamp set to `stamp`.
fn stamped(template: &BytesMut, message_size: usize, stamp: u64) -> Bytes {
    let mut b = template.clone();
    let digits = format!("{stamp:0STAMP$}");
    for msg in b.chunks_mut(message_size) {
        msg[..STAMP].copy_from_slice(digits.as_bytes());
    }
    b.freeze()
}
