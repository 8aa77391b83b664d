//! End-to-end latency, produce → consume, under an open-loop load (as
//! wrk2 does it): bodies are scheduled at fixed intended times and queued
//! for a fixed pool of connections, whether or not earlier ones have been
//! answered; every message carries its body's intended send time, so a
//! stalled server shows up as latency instead of as fewer samples
//! (coordinated omission is corrected by construction). A consumer follows
//! the stream and records, once per body, now − intended.
//!
//! The schedule, the stamps and the histograms are the same for every
//! system measured; what differs (how a body is sent, how the consumer
//! follows) is a [`Target`] in [`targets`]: chunkbus over raw HTTP, chunkbus
//! through the client crate, Redis Streams and NATS JetStream.

pub mod stages;
pub mod targets;

use std::future::Future;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Digits of the nanosecond stamp at the start of every message.
pub const STAMP: usize = 20;
/// Stamp of the body that tells the consumer to stop.
const END_STAMP: u64 = u64::MAX;
/// Bodies queued behind busy connections before the generator reports
/// saturation (and waits, which would hide latency).
const MAX_QUEUED: usize = 4096;
/// A send slower than this fails the run (a stuck server, a full disk)
/// instead of hanging the bench.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How far past its scheduled end a saturated run may go before it stops.
const OVERRUN: Duration = Duration::from_secs(60);
/// How long the consumer may take to reach the end marker after the last
/// body was acknowledged before the run counts as saturated.
const CATCH_UP: Duration = Duration::from_secs(30);
/// How far behind its schedule a saturated generator may fall before the
/// run stops (the system cannot take the rate: no latency figure).
const GIVE_UP_BEHIND: Duration = Duration::from_secs(5);

/// What one open-loop run sends.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Bytes per message, newline included (≥ [`STAMP`] + 2).
    pub message_size: usize,
    /// Bytes per body (rounded down to whole messages; at least one).
    pub body_size: usize,
    /// Body bytes per second.
    pub rate: f64,
    /// Untimed load first.
    pub warmup: Duration,
    /// Timed window.
    pub dur: Duration,
    /// Connections sending the scheduled bodies.
    pub conns: usize,
}

/// One sending connection of a [`Target`].
pub trait Sender: Send + 'static {
    /// Sends one body (whole messages) and returns once the system
    /// acknowledged it.
    fn send(&mut self, body: Bytes) -> impl Future<Output = Result<()>> + Send;
}

/// A system under test: how to send bodies and how to follow them.
pub trait Target {
    /// Its sending connection.
    type Sender: Sender;
    /// Opens one sending connection.
    fn connect(&self) -> impl Future<Output = Result<Self::Sender>> + Send;
    /// Starts a consumer of everything sent, from the start, that passes
    /// each message to `rec` until [`Recorder::message`] says the end
    /// marker arrived, then returns the histogram.
    fn follow(
        &self,
        rec: Recorder,
    ) -> impl Future<Output = Result<JoinHandle<Result<Histogram<u64>>>>> + Send;
}

/// The consumer's side of the stamps: one latency sample per message.
/// Messages of one body carry the same stamp; consecutive messages with
/// the same stamp are parsed once and recorded together (a system that
/// delivers a body's messages apart, or interleaves bodies, gets each run
/// of messages its own arrival time).
pub struct Recorder {
    t0: Instant,
    measure_from: u64,
    prev: [u8; STAMP],
    /// Latency (µs) of the current run of messages and how many so far;
    /// `None` while they are not measured (warm-up, markers).
    run: Option<(u64, u64)>,
    ready: Option<oneshot::Sender<()>>,
    hist: Histogram<u64>,
}

impl Recorder {
    /// Records `msg` (a whole message, stamp first); returns `true` once
    /// the end marker arrived.
    ///
    /// # Errors
    /// A message without a stamp (not sent by this bench).
    pub fn message(&mut self, msg: &[u8]) -> Result<bool> {
        let Some(stamp) = msg.get(..STAMP) else {
            bail!("a {}-byte message has no stamp", msg.len());
        };
        if stamp == self.prev {
            if let Some((_, n)) = &mut self.run {
                *n += 1;
            }
            return Ok(false);
        }
        let now = self.t0.elapsed().as_nanos() as u64;
        self.flush()?;
        self.prev.copy_from_slice(stamp);
        let sent: u64 = std::str::from_utf8(stamp)?.parse()?;
        if sent == 0 {
            if let Some(tx) = self.ready.take() {
                let _ = tx.send(());
            }
        }
        if sent == END_STAMP {
            return Ok(true);
        }
        if sent >= self.measure_from {
            self.run = Some((now.saturating_sub(sent) / 1000, 1));
        }
        Ok(false)
    }

    /// Records the current run of messages.
    fn flush(&mut self) -> Result<()> {
        if let Some((us, n)) = self.run.take() {
            self.hist.record_n(us, n)?;
        }
        Ok(())
    }

    /// The samples recorded.
    ///
    /// # Errors
    /// A sample out of the histogram's range.
    pub fn into_hist(mut self) -> Result<Histogram<u64>> {
        self.flush()?;
        Ok(self.hist)
    }
}

/// Outcome of one open-loop run.
pub struct LatencyResult {
    /// Body bytes per second actually sent.
    pub achieved: f64,
    /// produce → consume latency per message, µs (after warm-up).
    pub hist: Histogram<u64>,
    /// Intended send → acknowledgement per body, µs (after warm-up).
    pub replies: Histogram<u64>,
    /// How late the generator's clock put bodies into the queue (its own
    /// sleep's precision and scheduling), µs: the part of every sample
    /// that is the bench's, not the system's.
    pub lateness: Histogram<u64>,
    /// Whether the generator had to wait for answers (load beyond
    /// capacity). A run that fell more than 5 s behind its schedule, or
    /// whose consumer was still behind 30 s after the last acknowledgement,
    /// ends with an empty latency histogram.
    pub saturated: bool,
}

/// Runs `schedule` against `target`: the first body (stamp 0) is sent and
/// seen by the consumer before the clock starts, so discovery is not
/// measured; the last (the end marker) after every timed body was
/// acknowledged.
pub async fn open_loop<T: Target>(target: &T, schedule: &Schedule) -> Result<LatencyResult> {
    let Schedule {
        message_size,
        body_size,
        rate,
        warmup,
        dur,
        conns,
    } = *schedule;
    if message_size < STAMP + 2 {
        bail!("latency needs messages of at least {} bytes", STAMP + 2);
    }
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
    let mut control = target.connect().await?;
    // Create the stream first so the consumer finds it at once (stamp 0
    // is before the measured window).
    control.send(stamped(&template, message_size, 0)).await?;
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let consumer = target
        .follow(Recorder {
            t0,
            measure_from,
            prev: [0; STAMP],
            run: None,
            ready: Some(ready_tx),
            hist: Histogram::<u64>::new(3)?,
        })
        .await?;
    // An error below must not leave the consumer polling into later runs.
    let _stop_consumer = AbortOnDrop(consumer.abort_handle());
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .map_err(|_| anyhow::anyhow!("consumer did not see the first body within 30 s"))?
        .map_err(|_| anyhow::anyhow!("consumer ended before the first body"))?;

    let (tx, rx) = tokio::sync::mpsc::channel::<(u64, Bytes)>(MAX_QUEUED);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    // Set by a worker that fails (an error, a panic).
    let stopped = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..conns.max(1) {
        let rx = Arc::clone(&rx);
        let mut sender = target.connect().await?;
        let stop = StopFlag(Some(Arc::clone(&stopped)));
        workers.push(tokio::spawn(async move {
            let mut stop = stop;
            let mut replies = Histogram::<u64>::new(3)?;
            loop {
                let next = rx.lock().await.recv().await;
                let Some((stamp, body)) = next else {
                    break;
                };
                let Ok(sent) = tokio::time::timeout(REPLY_TIMEOUT, sender.send(body)).await else {
                    bail!("no acknowledgement within {REPLY_TIMEOUT:?}");
                };
                sent?;
                if stamp >= measure_from {
                    let now = t0.elapsed().as_nanos() as u64;
                    replies.record(now.saturating_sub(stamp) / 1000)?;
                }
            }
            // The queue closed: a normal end.
            stop.disarm();
            anyhow::Ok(replies)
        }));
    }
    let generator = Generator {
        template: template.clone(),
        message_size,
        interval,
        total,
        t0,
        measure_from,
        stopped: Arc::clone(&stopped),
    };
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("latency-generator".into())
        .spawn(move || {
            let generated = generator.run(&tx);
            drop(tx);
            let _ = done_tx.send(generated);
        })?;
    let Generated {
        achieved,
        saturated,
        overloaded,
        lateness,
    } = done_rx
        .await
        .map_err(|_| anyhow::anyhow!("the load generator thread died"))??;
    // The generator closed the queue: workers drain it and end.
    let failed = stopped.load(Ordering::Acquire);
    let mut replies = Histogram::<u64>::new(3)?;
    if overloaded {
        // The system cannot take the rate: stop without draining the
        // queue or waiting for the consumer to catch up.
        for w in &workers {
            w.abort();
        }
        consumer.abort();
        return Ok(LatencyResult {
            achieved,
            hist: Histogram::<u64>::new(3)?,
            replies,
            lateness,
            saturated: true,
        });
    }
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
    // The end marker: stored after every timed body was acknowledged.
    control
        .send(stamped(&template, message_size, END_STAMP))
        .await?;
    let abort = consumer.abort_handle();
    match tokio::time::timeout(CATCH_UP, consumer).await {
        Ok(hist) => Ok(LatencyResult {
            achieved,
            hist: hist??,
            replies,
            lateness,
            saturated,
        }),
        // Everything was acknowledged but the consumer is still far
        // behind: the system (or its client) cannot follow this rate.
        Err(_) => {
            abort.abort();
            Ok(LatencyResult {
                achieved,
                hist: Histogram::<u64>::new(3)?,
                replies,
                lateness,
                saturated: true,
            })
        }
    }
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

/// Aborts a task when dropped (whatever way the run ends).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Marks the run as failed when a sending worker ends before the queue
/// closed (an error or a panic); cleared on a normal end.
struct StopFlag(Option<Arc<AtomicBool>>);

impl StopFlag {
    /// A normal end: nothing to mark.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for StopFlag {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Release);
        }
    }
}

/// The open loop's clock: a thread of its own that sleeps until each
/// body's intended time with the kernel's precision (tens of µs) — a
/// tokio timer rounds every wake-up up to its 1 ms tick, which would add
/// up to a millisecond to every sample — and queues the body for the
/// senders.
struct Generator {
    template: BytesMut,
    message_size: usize,
    interval: Duration,
    total: Duration,
    t0: Instant,
    /// Stamps from here on are measured (after the warm-up).
    measure_from: u64,
    stopped: Arc<AtomicBool>,
}

/// What the generator did.
struct Generated {
    achieved: f64,
    saturated: bool,
    overloaded: bool,
    lateness: Histogram<u64>,
}

impl Generator {
    /// Runs the schedule; dropping `tx` afterwards closes the queue.
    fn run(self, tx: &tokio::sync::mpsc::Sender<(u64, Bytes)>) -> Result<Generated> {
        // The default 50 µs timer slack would be most of the error left.
        let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1_000));
        let mut lateness = Histogram::<u64>::new(3)?;
        let (mut saturated, mut overloaded) = (false, false);
        let mut sent_bytes = 0u64;
        // The last send waited for room in the queue: the next body is late
        // because of the system, not the generator's clock.
        let mut waited = false;
        let start = Instant::now();
        let give_up = start + self.total + OVERRUN;
        for k in 0u64.. {
            let intended = start + self.interval.mul_f64(k as f64);
            if intended - start >= self.total {
                break;
            }
            // A failed connection (an error status, disk full, no reply)
            // ends the run at once instead of leaving the others to absorb
            // the load.
            if self.stopped.load(Ordering::Acquire) {
                break;
            }
            let now = Instant::now();
            if now > give_up || (saturated && now > intended + GIVE_UP_BEHIND) {
                overloaded = true;
                break;
            }
            if let Some(wait) = intended.checked_duration_since(now) {
                std::thread::sleep(wait);
            }
            let late = intended.elapsed();
            let stamp = (intended - self.t0).as_nanos() as u64;
            if !waited && stamp >= self.measure_from {
                lateness.saturating_record(late.as_micros() as u64);
            }
            let body = stamped(&self.template, self.message_size, stamp);
            sent_bytes += body.len() as u64;
            waited = tx.capacity() == 0;
            if waited {
                saturated = true;
            }
            tx.blocking_send((stamp, body))
                .map_err(|_| anyhow::anyhow!("all sender connections failed"))?;
        }
        Ok(Generated {
            achieved: sent_bytes as f64 / start.elapsed().as_secs_f64(),
            saturated,
            overloaded,
            lateness,
        })
    }
}
