//! [`Producer`]: batches messages per category by size and linger time,
//! sends them with bounded memory and in submission order, retries only
//! what is safe to resend, and reports where every message was stored.
//!
//! Per category ("lane") there is one open batch that sends append to and
//! one sender task that posts sealed batches one at a time, in order. Memory
//! is bounded by a byte budget: opening a batch takes `max_batch_bytes` from
//! it (a sealed batch gives back what it did not use) and a batch returns its
//! bytes once the server has answered. When the budget is spent, sending
//! waits: backpressure instead of growth.
//!
//! A batch that cannot be stored stops its category only ("fail-stop per
//! lane"): what was buffered behind it is dropped at once (its memory goes
//! back to the other categories), sends to that category fail with the
//! error until [`CategoryProducer::reset`], and every other category keeps
//! going.
//!
//! The jobs live in their own modules:
//! - `lane`: the send path — a category's open batch, sealing, the memory
//!   budget, `send`/`enqueue`/`try_send`/`send_timeout`, flush and reset;
//! - `sender`: the sender task — linger, posting batches in order,
//!   retries with backoff, fail-stop, buffer recycling;
//! - `delivery`: per-message outcomes ([`Delivery`], [`Stored`]);
//! - `crate::acks`: per-batch acknowledgements ([`crate::BatchAck`]).

mod delivery;
mod lane;
mod sender;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::acks::{AckReceiver, AckSubscribers};
use crate::client::{Client, WriteOptions};
use crate::error::ProducerError;
use crate::stats::{Counters, Hook, Stats, StatsHook};

pub use delivery::{Delivery, Stored};
pub use lane::{CategoryProducer, LaneReset};

use lane::Lane;

/// Tuning of a [`Producer`]. Build it from [`ProducerConfig::default`] with
/// the setters (the struct is `#[non_exhaustive]`: new settings can come
/// without breaking callers).
///
/// ```
/// use std::time::Duration;
/// use chunkbus_client::ProducerConfig;
///
/// let config = ProducerConfig::default()
///     .max_batch_bytes(256 << 10)
///     .linger(Duration::from_millis(2))
///     .max_in_flight(8);
/// assert_eq!(config.max_in_flight, 8);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Tag every batch with this producer's id and a sequence number
    /// (`/write?producer=P&seq=N`), so the server stores each batch once
    /// and the producer can retry what it could not retry otherwise: a
    /// reset connection or a timeout after the body was sent, a `503`
    /// after the batch was stored (default on). See docs/client.md for
    /// what it guarantees across a failover.
    pub idempotent: bool,
    /// Sees every stored batch, retry and failure (default none).
    stats_hook: Hook,
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
            idempotent: true,
            stats_hook: Hook::default(),
        }
    }
}

impl ProducerConfig {
    setter!(
        /// Sets [`ProducerConfig::max_batch_bytes`].
        ///
        /// ```
        /// let c = chunkbus_client::ProducerConfig::default().max_batch_bytes(64 << 10);
        /// assert_eq!(c.max_batch_bytes, 64 << 10);
        /// ```
        max_batch_bytes: usize
    );
    setter!(
        /// Sets [`ProducerConfig::max_message_bytes`].
        ///
        /// ```
        /// let c = chunkbus_client::ProducerConfig::default().max_message_bytes(4096);
        /// assert_eq!(c.max_message_bytes, 4096);
        /// ```
        max_message_bytes: usize
    );
    setter!(
        /// Sets [`ProducerConfig::linger`].
        ///
        /// ```
        /// use std::time::Duration;
        /// let c = chunkbus_client::ProducerConfig::default().linger(Duration::ZERO);
        /// assert_eq!(c.linger, Duration::ZERO);
        /// ```
        linger: Duration
    );
    setter!(
        /// Sets [`ProducerConfig::max_in_flight`].
        ///
        /// ```
        /// let c = chunkbus_client::ProducerConfig::default().max_in_flight(1);
        /// assert_eq!(c.max_in_flight, 1);
        /// ```
        max_in_flight: usize
    );
    setter!(
        /// Sets [`ProducerConfig::buffer_bytes`].
        ///
        /// ```
        /// let c = chunkbus_client::ProducerConfig::default().buffer_bytes(64 << 20);
        /// assert_eq!(c.buffer_bytes, 64 << 20);
        /// ```
        buffer_bytes: usize
    );
    setter!(
        /// Sets [`ProducerConfig::write`].
        ///
        /// ```
        /// use chunkbus_client::{ProducerConfig, WriteOptions};
        /// let c = ProducerConfig::default().write(WriteOptions { sync: true, min_sync_replicas: 1 });
        /// assert!(c.write.sync);
        /// ```
        write: WriteOptions
    );
    setter!(
        /// Sets [`ProducerConfig::delivery_timeout`].
        ///
        /// ```
        /// use std::time::Duration;
        /// let c = chunkbus_client::ProducerConfig::default().delivery_timeout(Duration::from_secs(5));
        /// assert_eq!(c.delivery_timeout, Duration::from_secs(5));
        /// ```
        delivery_timeout: Duration
    );
    setter!(
        /// Sets [`ProducerConfig::idempotent`].
        ///
        /// ```
        /// let c = chunkbus_client::ProducerConfig::default().idempotent(false);
        /// assert!(!c.idempotent);
        /// ```
        idempotent: bool
    );

    /// Calls `hook` for every stored batch, retry and failure
    /// ([`StatsHook`]); [`Producer::stats`] counts them either way.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use chunkbus_client::{ProducerConfig, StatsEvent, StatsHook};
    /// struct Log;
    /// impl StatsHook for Log {
    ///     fn record(&self, event: &StatsEvent<'_>) { eprintln!("{event:?}"); }
    /// }
    /// let c = ProducerConfig::default().stats_hook(Arc::new(Log));
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn stats_hook(mut self, hook: Arc<dyn StatsHook>) -> Self {
        self.stats_hook = Hook(Some(hook));
        self
    }
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
///     events.enqueue(format!("event {i}")).await?; // newline added
/// }
/// producer.flush().await?; // every message above is stored
/// let stored = events.send("and one more").await?; // waits until stored
/// println!("stored in {} at {}", stored.chunk, stored.offset);
/// # Ok(()) }
/// ```
///
/// # Cancel safety
/// Every `async` method of the producer and of [`CategoryProducer`] is
/// cancel safe in this sense: dropping the future never loses or
/// duplicates a message that was queued, and never leaves the producer in
/// a broken state.
/// - [`CategoryProducer::enqueue`] and [`CategoryProducer::send_timeout`]
///   queue the message only in the step that returns its [`Delivery`]:
///   cancelled before that, the message was not queued (only a wait for
///   memory was abandoned).
/// - [`CategoryProducer::send`] queues, then waits for the answer:
///   cancelled after queueing, the message *is* still sent, and nothing
///   reports where it was stored (use `enqueue` and keep the `Delivery`
///   when that matters).
/// - [`CategoryProducer::send_lines`] may have queued a prefix of the lines
///   (whole messages) when cancelled while waiting for memory.
/// - [`Producer::flush`], [`Producer::close`], [`CategoryProducer::flush`]
///   and awaiting a [`Delivery`] only wait: batches are sent anyway.
/// - [`Producer::shutdown`] cancelled before its timeout leaves the
///   producer running, as if it had not been called.
#[derive(Debug, Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    _handle: Arc<Handle>,
}

/// Held by every [`Producer`] and [`CategoryProducer`] clone; when the last
/// one is dropped, the sender tasks send what is buffered and exit.
#[derive(Debug)]
pub(crate) struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut undelivered = 0u64;
        for lane in self.shared.lanes.lock().values() {
            undelivered += lane.close_on_drop();
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

/// What the producer's handles, lanes and sender tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) config: ProducerConfig,
    /// The id batches are tagged with, when idempotent.
    pub(crate) producer_id: Option<u64>,
    pub(crate) budget: Arc<Semaphore>,
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) lanes: Mutex<HashMap<String, Arc<Lane>>>,
    pub(crate) acks: AckSubscribers,
    pub(crate) stats: Counters,
    /// `close` or `shutdown` ran: every send fails with `Closed`.
    pub(crate) closed: AtomicBool,
    /// Empty batch buffers of `max_batch_bytes` capacity given back by
    /// acknowledged batches, each still holding its full reservation, so a
    /// new batch does not fault in fresh memory (slow here: first touch
    /// runs at a fraction of memcpy speed) and the budget still covers
    /// every byte held.
    pub(crate) spare: Mutex<Vec<(BytesMut, OwnedSemaphorePermit)>>,
}

/// A random, non-zero producer id: the standard library's per-process
/// random hash keys (seeded by the OS), the time and a counter, so two
/// producers of one process, or of two processes, do not share one.
fn new_producer_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::AtomicU64;
    static MADE: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(MADE.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish().max(1)
}

impl Producer {
    /// The id this producer tags its batches with
    /// ([`ProducerConfig::idempotent`]), `None` when it does not.
    ///
    /// ```no_run
    /// # fn demo(producer: chunkbus_client::Producer) {
    /// if let Some(id) = producer.producer_id() {
    ///     println!("idempotent producer {id:#x}");
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn producer_id(&self) -> Option<u64> {
        self.shared.producer_id
    }
}

/// Spare batch buffers kept at most.
pub(crate) const MAX_SPARE: usize = 2;

impl Producer {
    /// A producer sending through `client`. Needs a Tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use chunkbus_client::{Client, Producer, ProducerConfig};
    /// let producer = Producer::new(Client::new("http://127.0.0.1:8080")?, ProducerConfig::default());
    /// # let _ = producer;
    /// # Ok(()) }
    /// ```
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
            stats: Counters::new(config.stats_hook.clone()),
            producer_id: config.idempotent.then(new_producer_id),
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
    /// ```no_run
    /// # fn demo(producer: chunkbus_client::Producer) -> Result<(), chunkbus_client::ProducerError> {
    /// let events = producer.category("events")?;
    /// assert!(producer.category("no spaces").is_err());
    /// # let _ = events;
    /// # Ok(()) }
    /// ```
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
                let lane = Arc::new(Lane::new(category.into()));
                tokio::spawn(sender::run(Arc::clone(&self.shared), Arc::clone(&lane)));
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
    ///
    /// ```no_run
    /// # async fn demo(producer: chunkbus_client::Producer) {
    /// let mut acks = producer.subscribe_acks(1024);
    /// while let Ok(ack) = acks.recv().await {
    ///     println!("#{}..#{} in {}", ack.first_seq, ack.first_seq + ack.count, ack.chunk);
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn subscribe_acks(&self, capacity: usize) -> AckReceiver {
        self.shared.acks.subscribe(capacity)
    }

    /// Bytes of memory held for buffered and in-flight messages now (open
    /// batches count in full); never more than `buffer_bytes`.
    ///
    /// ```no_run
    /// # fn demo(producer: chunkbus_client::Producer) {
    /// println!("{} bytes buffered", producer.buffered_bytes());
    /// # }
    /// ```
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.shared
            .config
            .buffer_bytes
            .min(Semaphore::MAX_PERMITS)
            .saturating_sub(self.shared.budget.available_permits())
    }

    /// Counters since the producer started: bytes, messages and batches
    /// stored, retries, failed batches.
    ///
    /// ```no_run
    /// # fn demo(producer: chunkbus_client::Producer) {
    /// let s = producer.stats();
    /// println!("{} batches, {} retries, {} failed", s.batches, s.retries, s.errors);
    /// # }
    /// ```
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// Sends every open batch and waits until each message sent so far is
    /// acknowledged, in every category (a failed category does not stop
    /// the others from being flushed).
    ///
    /// ```no_run
    /// # async fn demo(producer: chunkbus_client::Producer) -> Result<(), chunkbus_client::ProducerError> {
    /// producer.flush().await?; // everything queued before is stored
    /// # Ok(()) }
    /// ```
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
            if let Err(e) = lane.flush(&self.shared).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Flushes, then stops the sender tasks; later sends fail with
    /// [`ProducerError::Closed`].
    ///
    /// ```no_run
    /// # async fn demo(producer: chunkbus_client::Producer) -> Result<(), chunkbus_client::ProducerError> {
    /// producer.close().await?;
    /// # Ok(()) }
    /// ```
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
    /// ```no_run
    /// # async fn demo(producer: chunkbus_client::Producer) {
    /// use std::time::Duration;
    /// if let Err(e) = producer.shutdown(Duration::from_secs(10)).await {
    ///     eprintln!("{e}"); // e.g. "3 messages were not acknowledged at shutdown (events: 3)"
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`ProducerError::Undelivered`] with the messages not acknowledged
    /// per category when time ran out or a category had failed.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), ProducerError> {
        let _ = tokio::time::timeout(timeout, self.flush()).await;
        let mut categories = Vec::new();
        for lane in self.shared.lanes.lock().values() {
            let unacked = lane.drop_buffered();
            if unacked > 0 {
                categories.push((lane.category.to_string(), unacked));
            }
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
            lane.stop();
        }
        self.shared.acks.close();
    }
}
