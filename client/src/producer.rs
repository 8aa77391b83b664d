//! [`Producer`]: batches messages per category by size and linger time,
//! sends them with bounded memory and in submission order, retries only
//! what is safe to resend, and reports per-batch acknowledgements.
//!
//! Per category ("lane") there is one open batch that `send` appends to and
//! one sender task that posts sealed batches one at a time, in order. Memory
//! is bounded by a byte budget: opening a batch takes `max_batch_bytes` from
//! it (a sealed batch gives back what it did not use) and a batch returns its
//! bytes once the server has answered. When the budget is spent, `send`
//! waits: backpressure instead of growth.
//!
//! A batch that cannot be stored stops its category only ("fail-stop per
//! lane"): what was buffered behind it is dropped at once (its memory goes
//! back to the other categories), sends to that category fail with the
//! error until [`CategoryProducer::reset`], and every other category keeps
//! going.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::acks::{AckReceiver, AckSubscribers};
use crate::client::{Client, WriteOptions};
use crate::error::{ClientError, ProducerError};

/// Tuning of a [`Producer`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Largest request body; must not exceed the server's `max_batch_size`
    /// (default 1 MiB).
    pub max_batch_bytes: usize,
    /// Largest message, newline included; the server's `max_message_size`
    /// (default 1 MiB). Longer messages are refused before sending.
    pub max_message_bytes: usize,
    /// How long a batch may wait for more messages before it is sent while
    /// nothing else is in flight (default 5 ms).
    pub linger: Duration,
    /// Requests in flight across all categories (default 4). Each category
    /// has at most one, which keeps its messages in submission order.
    pub max_in_flight: usize,
    /// Bound on the memory of buffered and in-flight messages (default
    /// 16 MiB; at least `max_batch_bytes`).
    pub buffer_bytes: usize,
    /// `sync` and `min_sync_replicas` of every write.
    pub write: WriteOptions,
    /// How long a batch is retried while retrying is safe (default 60 s).
    pub delivery_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            max_batch_bytes: 1 << 20,
            max_message_bytes: 1 << 20,
            linger: Duration::from_millis(5),
            max_in_flight: 4,
            buffer_bytes: 16 << 20,
            write: WriteOptions::default(),
            delivery_timeout: Duration::from_secs(60),
        }
    }
}

/// The server's acknowledgement of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAck {
    /// Category written to.
    pub category: Arc<str>,
    /// Sequence number (per category, from 0) of the batch's first message.
    pub first_seq: u64,
    /// Number of messages in the batch.
    pub count: u64,
    /// Chunk the batch was stored in.
    pub chunk: String,
    /// Offset of the batch's first byte in that chunk.
    pub offset: u64,
    /// Batch length in bytes.
    pub size: u64,
}

/// A batching, ordered, memory-bounded producer. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use chunkbus_client::{Client, Producer, ProducerConfig};
/// let client = Client::with_servers(["http://127.0.0.1:8080", "http://127.0.0.1:8081"])?;
/// let producer = Producer::new(client, ProducerConfig::default());
/// let events = producer.category("events")?;
/// for i in 0..1000 {
///     events.send(format!("event {i}")).await?; // newline added
/// }
/// producer.flush().await?; // every message above is stored
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    _handle: Arc<Handle>,
}

/// Held by every [`Producer`] and [`CategoryProducer`] clone; when the last
/// one is dropped, the sender tasks send what is buffered and exit.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut undelivered = 0u64;
        for lane in self.shared.lanes.lock().values() {
            let mut st = lane.state.lock();
            st.closed = true;
            if st.failure.is_none() {
                undelivered += st.next_seq.saturating_sub(*lane.acked.borrow());
            }
            drop(st);
            lane.wake.notify_one();
        }
        if undelivered > 0 && !self.shared.closed.load(Ordering::Relaxed) {
            tracing::warn!(
                undelivered,
                "chunkbus Producer dropped with {undelivered} messages not yet acknowledged: \
                 they are still sent while the runtime runs, but nothing reports whether they \
                 were stored; call Producer::shutdown(timeout) before dropping it"
            );
        }
    }
}

#[derive(Debug)]
struct Shared {
    client: Client,
    config: ProducerConfig,
    budget: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    acks: AckSubscribers,
    /// `close` or `shutdown` ran: every send fails with `Closed`.
    closed: AtomicBool,
    /// Empty batch buffers of `max_batch_bytes` capacity given back by
    /// acknowledged batches, each still holding its full reservation, so a
    /// new batch does not fault in fresh memory (slow here: first touch
    /// runs at a fraction of memcpy speed) and the budget still covers
    /// every byte held.
    spare: Mutex<Vec<(BytesMut, OwnedSemaphorePermit)>>,
}

/// Spare batch buffers kept at most.
const MAX_SPARE: usize = 2;

/// Per-category state shared by `send` callers and the sender task.
#[derive(Debug)]
struct Lane {
    category: Arc<str>,
    state: Mutex<LaneState>,
    /// Serializes sealing (and the budget wait that precedes opening a new
    /// batch), so sealed batches enter the queue in sequence order.
    seal_lock: tokio::sync::Mutex<()>,
    /// Wakes the sender task: a batch was queued or opened, or close.
    wake: Notify,
    /// Sequence number below which every message has been acknowledged.
    acked: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct LaneState {
    open: Option<OpenBatch>,
    queue: VecDeque<SealedBatch>,
    next_seq: u64,
    closed: bool,
    /// The batch that could not be stored, until `reset`.
    failure: Option<LaneFailure>,
    /// Counts failures, so a flush that started before one reports it
    /// even when `reset` already cleared it.
    failures: u64,
    /// The most recent failure (kept across `reset` for such flushes).
    last_failure: Option<ProducerError>,
}

/// A lane's failed batch and what was dropped with it.
#[derive(Debug, Clone)]
struct LaneFailure {
    error: ProducerError,
    /// Sequence numbers not stored (or, for the failed batch itself with
    /// `maybe_stored`, perhaps stored): the failed batch and everything
    /// buffered behind it.
    dropped: Range<u64>,
}

/// What [`CategoryProducer::reset`] cleared.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LaneReset {
    /// The failure that stopped the category ([`ProducerError::BatchFailed`]).
    pub error: ProducerError,
    /// Sequence numbers that were not sent: the failed batch (which may
    /// have been stored if the error says so) and everything buffered
    /// behind it when it failed.
    pub dropped: Range<u64>,
}

#[derive(Debug)]
struct OpenBatch {
    buf: BytesMut,
    first_seq: u64,
    count: u64,
    opened: Instant,
    permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct SealedBatch {
    body: Bytes,
    first_seq: u64,
    count: u64,
    _permit: OwnedSemaphorePermit,
}

impl OpenBatch {
    fn seal(mut self) -> Option<SealedBatch> {
        if self.count == 0 {
            return None;
        }
        // Give back the part of the reservation this batch does not use,
        // unless the batch is nearly full: then it keeps all of it, so its
        // buffer can be recycled once acknowledged without waiting for the
        // budget again (senders wait on it all the time under load).
        let unused = self.permit.num_permits().saturating_sub(self.buf.len());
        if unused > self.permit.num_permits() / 8 {
            drop(self.permit.split(unused));
        }
        Some(SealedBatch {
            body: self.buf.freeze(),
            first_seq: self.first_seq,
            count: self.count,
            _permit: self.permit,
        })
    }
}

impl Producer {
    /// A producer sending through `client`. Needs a Tokio runtime.
    #[must_use]
    pub fn new(client: Client, mut config: ProducerConfig) -> Self {
        config.max_batch_bytes = config.max_batch_bytes.clamp(1, u32::MAX as usize);
        config.max_message_bytes = config.max_message_bytes.clamp(1, config.max_batch_bytes);
        config.buffer_bytes = config.buffer_bytes.max(config.max_batch_bytes);
        config.max_in_flight = config.max_in_flight.max(1);
        let shared = Arc::new(Shared {
            client,
            budget: Arc::new(Semaphore::new(
                config.buffer_bytes.min(Semaphore::MAX_PERMITS),
            )),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            lanes: Mutex::new(HashMap::new()),
            acks: AckSubscribers::default(),
            closed: AtomicBool::new(false),
            spare: Mutex::new(Vec::new()),
        });
        Self {
            _handle: Arc::new(Handle {
                shared: Arc::clone(&shared),
            }),
            shared,
        }
    }

    /// A handle that sends to `category` (names as on the server:
    /// 1–128 of `[A-Za-z0-9_-]`).
    ///
    /// # Errors
    /// [`ProducerError::InvalidMessage`] for an invalid category name.
    pub fn category(&self, category: &str) -> Result<CategoryProducer, ProducerError> {
        let valid = !category.is_empty()
            && category.len() <= 128
            && category
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ProducerError::InvalidMessage(format!(
                "invalid category {category:?}: use 1-128 characters of [A-Za-z0-9_-]"
            )));
        }
        let mut lanes = self.shared.lanes.lock();
        let lane = lanes
            .entry(category.to_owned())
            .or_insert_with(|| {
                let lane = Arc::new(Lane {
                    category: category.into(),
                    state: Mutex::new(LaneState::default()),
                    seal_lock: tokio::sync::Mutex::new(()),
                    wake: Notify::new(),
                    acked: watch::Sender::new(0),
                });
                tokio::spawn(run_sender(Arc::clone(&self.shared), Arc::clone(&lane)));
                lane
            })
            .clone();
        Ok(CategoryProducer {
            shared: Arc::clone(&self.shared),
            _handle: Arc::clone(&self._handle),
            lane,
        })
    }

    /// Acknowledgements of every batch from now on, in order per category.
    /// Each call returns its own receiver (earlier ones keep working). The
    /// producer never waits for a receiver: one that falls more than
    /// `capacity` acks behind loses the oldest and is told how many
    /// ([`AckRecvError::Lagged`](crate::AckRecvError::Lagged)).
    #[must_use]
    pub fn subscribe_acks(&self, capacity: usize) -> AckReceiver {
        self.shared.acks.subscribe(capacity)
    }

    /// Bytes of memory held for buffered and in-flight messages now (open
    /// batches count in full); never more than `buffer_bytes`.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.shared
            .config
            .buffer_bytes
            .min(Semaphore::MAX_PERMITS)
            .saturating_sub(self.shared.budget.available_permits())
    }

    /// Sends every open batch and waits until each message sent so far is
    /// acknowledged, in every category (a failed category does not stop
    /// the others from being flushed).
    ///
    /// # Errors
    /// The first category's failure ([`ProducerError::BatchFailed`]).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future stops waiting; batches are sent
    /// anyway.
    pub async fn flush(&self) -> Result<(), ProducerError> {
        let lanes: Vec<Arc<Lane>> = self.shared.lanes.lock().values().cloned().collect();
        let mut first_error = None;
        for lane in lanes {
            if let Err(e) = flush_lane(&self.shared, &lane).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Flushes, then stops the sender tasks; later sends fail with
    /// [`ProducerError::Closed`].
    ///
    /// # Errors
    /// As [`Producer::flush`].
    pub async fn close(&self) -> Result<(), ProducerError> {
        let result = self.flush().await;
        self.stop();
        result
    }

    /// Flushes for at most `timeout`, then stops: what is not acknowledged
    /// by then is dropped (a batch in flight may still be stored) and
    /// reported. Use it before dropping a producer that holds data.
    ///
    /// # Errors
    /// [`ProducerError::Undelivered`] with the messages not acknowledged
    /// per category when time ran out or a category had failed.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), ProducerError> {
        let _ = tokio::time::timeout(timeout, self.flush()).await;
        let mut categories = Vec::new();
        for lane in self.shared.lanes.lock().values() {
            let mut st = lane.state.lock();
            let unacked = st.next_seq.saturating_sub(*lane.acked.borrow());
            if unacked > 0 {
                categories.push((lane.category.to_string(), unacked));
            }
            st.open = None;
            st.queue.clear();
        }
        self.stop();
        if categories.is_empty() {
            return Ok(());
        }
        categories.sort();
        Err(ProducerError::Undelivered {
            messages: categories.iter().map(|(_, n)| n).sum(),
            categories,
        })
    }

    fn stop(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        for lane in self.shared.lanes.lock().values() {
            lane.state.lock().closed = true;
            lane.wake.notify_one();
            lane.acked.send_modify(|_| {});
        }
        self.shared.acks.close();
    }
}

/// Sends messages to one category. Cheap to clone; clones share order.
#[derive(Debug, Clone)]
pub struct CategoryProducer {
    shared: Arc<Shared>,
    _handle: Arc<Handle>,
    lane: Arc<Lane>,
}

impl CategoryProducer {
    /// Queues one message (a trailing newline is added when missing) and
    /// returns its sequence number. Waits only when the memory budget is
    /// spent.
    ///
    /// # Errors
    /// [`ProducerError::InvalidMessage`] for an embedded newline or a
    /// message longer than `max_message_bytes`; the producer's failure if a
    /// batch failed earlier.
    pub async fn send(&self, message: impl AsRef<[u8]>) -> Result<u64, ProducerError> {
        let msg = message.as_ref();
        let body = msg.strip_suffix(b"\n").unwrap_or(msg);
        if let Some(pos) = memchr::memchr(b'\n', body) {
            return Err(ProducerError::InvalidMessage(format!(
                "message contains a newline at byte {pos}; a message is one line"
            )));
        }
        let need = body.len() + 1;
        self.check_message_len(need)?;
        loop {
            self.check_failed()?;
            {
                let mut st = self.lane.state.lock();
                let LaneState { open, next_seq, .. } = &mut *st;
                if let Some(open) = open.as_mut() {
                    if open.buf.len() + need <= self.shared.config.max_batch_bytes {
                        open.buf.extend_from_slice(body);
                        open.buf.extend_from_slice(b"\n");
                        open.count += 1;
                        let seq = *next_seq;
                        *next_seq += 1;
                        return Ok(seq);
                    }
                }
            }
            self.rotate(need).await?;
        }
    }

    /// Queues already framed messages: `lines` must be one or more
    /// messages each ending in `\n` (what a file of lines holds). Returns
    /// the sequence number of the first one. Large inputs are split at
    /// message boundaries into batches.
    ///
    /// # Errors
    /// [`ProducerError::InvalidMessage`] if `lines` is empty, does not end
    /// in a newline or holds a message longer than `max_message_bytes`
    /// (nothing of `lines` is queued then); the producer's failure.
    pub async fn send_lines(&self, lines: &[u8]) -> Result<u64, ProducerError> {
        if !lines.ends_with(b"\n") {
            return Err(ProducerError::InvalidMessage(
                "lines must be non-empty and end with a newline".to_owned(),
            ));
        }
        let max_msg = self.shared.config.max_message_bytes;
        let mut start = 0usize;
        for nl in memchr::memchr_iter(b'\n', lines) {
            self.check_message_len(nl + 1 - start)?;
            start = nl + 1;
        }
        let max_batch = self.shared.config.max_batch_bytes;
        let mut rest = lines;
        let mut first = None;
        while !rest.is_empty() {
            self.check_failed()?;
            let appended = {
                let mut st = self.lane.state.lock();
                let LaneState { open, next_seq, .. } = &mut *st;
                match open.as_mut() {
                    Some(open) => {
                        let room = max_batch - open.buf.len();
                        let take = if rest.len() <= room {
                            rest.len()
                        } else {
                            memchr::memrchr(b'\n', &rest[..room]).map_or(0, |i| i + 1)
                        };
                        if take > 0 {
                            let part = &rest[..take];
                            let n = memchr::memchr_iter(b'\n', part).count() as u64;
                            open.buf.extend_from_slice(part);
                            open.count += n;
                            first.get_or_insert(*next_seq);
                            *next_seq += n;
                            rest = &rest[take..];
                        }
                        take
                    }
                    None => 0,
                }
            };
            if appended == 0 {
                let next_len = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
                debug_assert!(next_len <= max_msg);
                self.rotate(next_len).await?;
            }
        }
        Ok(first.unwrap_or(0))
    }

    /// Sends the open batch and waits until every message sent through
    /// this category so far is acknowledged.
    ///
    /// # Errors
    /// The producer's failure.
    pub async fn flush(&self) -> Result<(), ProducerError> {
        flush_lane(&self.shared, &self.lane).await
    }

    fn check_message_len(&self, len: usize) -> Result<(), ProducerError> {
        let max = self.shared.config.max_message_bytes;
        if len > max {
            return Err(ProducerError::InvalidMessage(format!(
                "message of {len} bytes (newline included) is longer than max_message_bytes={max}"
            )));
        }
        Ok(())
    }

    fn check_failed(&self) -> Result<(), ProducerError> {
        lane_check(&self.shared, &self.lane.state.lock())
    }

    /// Clears this category's failure so it accepts messages again
    /// (sequence numbers go on from where they were). Returns what was
    /// cleared, or None when the category had not failed.
    pub async fn reset(&self) -> Option<LaneReset> {
        let _order = self.lane.seal_lock.lock().await;
        let mut st = self.lane.state.lock();
        let failure = st.failure.take()?;
        let next = st.next_seq;
        drop(st);
        // Everything up to here is settled: stored, or reported dropped.
        self.lane.acked.send_replace(next);
        Some(LaneReset {
            error: failure.error,
            dropped: failure.dropped,
        })
    }

    /// Seals the open batch unless it has room for `need` bytes, then
    /// opens a new one once the budget allows.
    async fn rotate(&self, need: usize) -> Result<(), ProducerError> {
        let _order = self.lane.seal_lock.lock().await;
        {
            let mut st = self.lane.state.lock();
            if let Some(open) = &st.open {
                if open.buf.len() + need <= self.shared.config.max_batch_bytes {
                    return Ok(()); // someone else rotated meanwhile
                }
            }
            if let Some(sealed) = st.open.take().and_then(OpenBatch::seal) {
                st.queue.push_back(sealed);
                self.lane.wake.notify_one();
            }
        }
        // A caller that never waits (room in every batch) would otherwise
        // keep its worker thread until the budget runs out, starving the
        // sender and connection tasks queued behind it on that thread.
        tokio::task::yield_now().await;
        let max_batch = self.shared.config.max_batch_bytes;
        let spare = self.shared.spare.lock().pop();
        let (buf, permit) = match spare {
            Some(s) => s,
            None => {
                let permit = Arc::clone(&self.shared.budget)
                    .acquire_many_owned(u32::try_from(max_batch).unwrap_or(u32::MAX))
                    .await
                    .map_err(|_| ProducerError::Closed)?;
                (BytesMut::with_capacity(max_batch), permit)
            }
        };
        let mut st = self.lane.state.lock();
        // Checked under the lock that a failure takes too: no batch opens
        // on a failed lane.
        lane_check(&self.shared, &st)?;
        let first_seq = st.next_seq;
        st.open = Some(OpenBatch {
            buf,
            first_seq,
            count: 0,
            opened: Instant::now(),
            permit,
        });
        self.lane.wake.notify_one();
        Ok(())
    }
}

/// Sending to a lane fails with its failure, or `Closed` after close.
fn lane_check(shared: &Shared, st: &LaneState) -> Result<(), ProducerError> {
    if let Some(f) = &st.failure {
        return Err(f.error.clone());
    }
    if shared.closed.load(Ordering::Relaxed) {
        return Err(ProducerError::Closed);
    }
    Ok(())
}

async fn flush_lane(shared: &Shared, lane: &Lane) -> Result<(), ProducerError> {
    let (target, failures) = {
        let _order = lane.seal_lock.lock().await;
        let mut st = lane.state.lock();
        if let Some(f) = &st.failure {
            return Err(f.error.clone());
        }
        if let Some(sealed) = st.open.take().and_then(OpenBatch::seal) {
            st.queue.push_back(sealed);
        }
        lane.wake.notify_one();
        (st.next_seq, st.failures)
    };
    let mut acked = lane.acked.subscribe();
    loop {
        if *acked.borrow_and_update() >= target {
            return Ok(());
        }
        {
            let st = lane.state.lock();
            if st.failures != failures {
                // Failed since this flush began (maybe reset already).
                let e = st.last_failure.clone().unwrap_or(ProducerError::Closed);
                return Err(e);
            }
            if shared.closed.load(Ordering::Relaxed)
                && st.closed
                && st.queue.is_empty()
                && st.open.is_none()
            {
                return Err(ProducerError::Closed);
            }
        }
        // The sender task publishes progress and failure through `acked`.
        if acked.changed().await.is_err() {
            return Err(ProducerError::Closed);
        }
    }
}

/// The lane's sender: posts sealed batches one at a time, in order, and
/// seals the open batch once it has lingered long enough.
async fn run_sender(shared: Arc<Shared>, lane: Arc<Lane>) {
    loop {
        let next = {
            let mut st = lane.state.lock();
            match st.queue.pop_front() {
                Some(batch) => Ok(batch),
                // Closed: send what is still open, then exit.
                None if st.closed => match st.open.take().and_then(OpenBatch::seal) {
                    Some(batch) => Ok(batch),
                    None => return,
                },
                None => Err(st.open.as_ref().map(|o| o.opened + shared.config.linger)),
            }
        };
        match next {
            Ok(batch) => send_batch(&shared, &lane, batch).await,
            Err(Some(deadline)) => {
                tokio::select! {
                    () = lane.wake.notified() => {}
                    () = tokio::time::sleep_until(deadline) => seal_lingered(&lane, shared.config.linger).await,
                }
            }
            Err(None) => lane.wake.notified().await,
        }
    }
}

async fn seal_lingered(lane: &Lane, linger: Duration) {
    let _order = lane.seal_lock.lock().await;
    let mut st = lane.state.lock();
    let due = st
        .open
        .as_ref()
        .is_some_and(|o| o.opened + linger <= Instant::now());
    if due {
        if let Some(sealed) = st.open.take().and_then(OpenBatch::seal) {
            st.queue.push_back(sealed);
        }
    }
}

async fn send_batch(shared: &Shared, lane: &Lane, batch: SealedBatch) {
    let Ok(_slot) = shared.in_flight.acquire().await else {
        return;
    };
    let deadline = Instant::now() + shared.config.delivery_timeout;
    let mut backoff = Duration::from_millis(25);
    let result = loop {
        match shared
            .client
            .write(&lane.category, batch.body.clone(), shared.config.write)
            .await
        {
            Ok(reply) => break Ok(reply),
            Err(e) if e.is_safe_to_resend() && Instant::now() + backoff < deadline => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => break Err(e),
        }
    };
    match result {
        Ok(reply) => {
            let ack = BatchAck {
                category: Arc::clone(&lane.category),
                first_seq: batch.first_seq,
                count: batch.count,
                chunk: reply.chunk,
                offset: reply.offset,
                size: reply.size,
            };
            shared.acks.deliver(&ack);
            lane.acked.send_replace(batch.first_seq + batch.count);
            recycle(shared, batch);
        }
        Err(e) => {
            let maybe_stored = !(e.is_safe_to_resend() || never_stored(&e));
            let error = ProducerError::BatchFailed {
                category: lane.category.to_string(),
                first_seq: batch.first_seq,
                count: batch.count,
                maybe_stored,
                source: Arc::new(e),
            };
            {
                // Fail-stop for this category: drop what is buffered behind
                // the batch (its memory goes back to the other categories).
                let mut st = lane.state.lock();
                st.open = None;
                st.queue.clear();
                st.failures += 1;
                st.last_failure = Some(error.clone());
                st.failure = Some(LaneFailure {
                    error,
                    dropped: batch.first_seq..st.next_seq,
                });
            }
            // Wake flushers so they see the failure.
            lane.acked.send_modify(|_| {});
        }
    }
}

/// Keeps the buffer of an acknowledged batch for the next one when nobody
/// else holds it and the budget can cover its whole capacity again.
fn recycle(shared: &Shared, batch: SealedBatch) {
    let SealedBatch {
        body,
        _permit: mut permit,
        ..
    } = batch;
    let max_batch = shared.config.max_batch_bytes;
    if shared.spare.lock().len() >= MAX_SPARE {
        return;
    }
    let Ok(mut buf) = body.try_into_mut() else {
        return; // still shared (a retry's clone, an application's copy)
    };
    if buf.capacity() < max_batch {
        return;
    }
    let missing = max_batch.saturating_sub(permit.num_permits());
    if missing > 0 {
        let Ok(more) = Arc::clone(&shared.budget)
            .try_acquire_many_owned(u32::try_from(missing).unwrap_or(u32::MAX))
        else {
            return; // others wait for the budget: give it back instead
        };
        permit.merge(more);
    }
    buf.clear();
    let mut spare = shared.spare.lock();
    if spare.len() < MAX_SPARE {
        spare.push((buf, permit));
    }
}

/// Client errors (4xx other than timeouts) where the server refused the
/// body before storing anything.
fn never_stored(e: &ClientError) -> bool {
    match e {
        ClientError::Status {
            status, written, ..
        } => *written == Some(false) || ((400..500).contains(status) && *status != 408),
        _ => false,
    }
}
