//! Rust client for chunkbus, a persistent event bus over HTTP.
//!
//! Three layers, use whichever fits:
//! - [`Client`]: one method per endpoint (`/write`, `/read`, `/listChunks`,
//!   `/listCategories`, `/ack`), with failover across several server
//!   addresses when a connection cannot be established.
//! - [`Producer`]: batches messages by size and linger time, keeps a bounded
//!   number of requests in flight and a bounded amount of memory, stores
//!   each category's messages in submission order, retries only what is
//!   safe to resend, and tells where each message was stored: a future per
//!   message ([`CategoryProducer::send`] → [`Stored`], or
//!   [`CategoryProducer::enqueue`] → [`Delivery`]) and a stream of batch
//!   acks ([`Producer::subscribe_acks`]).
//! - [`Consumer`]: reads every chunk owner's messages in order with long
//!   polls and explicit acks (also from other tasks, with a cloneable
//!   [`Acker`]); it is a [`Stream`](futures_core::Stream) of [`Batch`]es;
//!   its [`Positions`] can be stored with the application's own data and
//!   given back to resume exactly there.
//!
//! # Produce
//! ```no_run
//! use chunkbus_client::{Client, Producer, ProducerConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::with_servers(["http://127.0.0.1:8080", "http://127.0.0.1:8081"])?;
//! let producer = Producer::new(client, ProducerConfig::default());
//! let mut acks = producer.subscribe_acks(1024);
//! let events = producer.category("events")?;
//! for i in 0..100_000 {
//!     events.enqueue(format!("{{\"n\":{i}}}")).await?; // queued; the newline is added
//! }
//! producer.flush().await?; // all of them are stored now
//! let stored = events.send("one more").await?; // queued and stored
//! println!("#{} in {} at {}", stored.seq, stored.chunk, stored.offset);
//! while let Ok(ack) = acks.try_recv() {
//!     println!("#{}..#{} in {} at {}", ack.first_seq, ack.first_seq + ack.count, ack.chunk, ack.offset);
//! }
//! # Ok(()) }
//! ```
//!
//! # Consume and resume (exactly-once with your own store)
//! ```no_run
//! use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! # fn load() -> Option<String> { None }
//! # fn save_with_results(_: &str) {}
//! let client = Client::new("http://127.0.0.1:8080")?;
//! // Positions stored by the previous run, in the same transaction as its results.
//! let from: Positions = match load() {
//!     Some(json) => serde_json::from_str(&json)?,
//!     None => Positions::default(),
//! };
//! let mut consumer = Consumer::start(client, "events", ConsumerConfig::default(), from)?;
//! while let Some(batch) = consumer.next().await? {
//!     for (offset, msg) in &batch {
//!         // process msg (bytes including the trailing newline)
//!         # let _ = (offset, msg);
//!     }
//!     consumer.ack(&batch).await?;
//!     save_with_results(&serde_json::to_string(&consumer.positions())?);
//! }
//! # Ok(()) }
//! ```
//!
//! # Exactly one member of a consumer group wins a batch
//! With a `group`, [`Consumer::ack`] is a compare-and-set on the server:
//! the group's position moves from where this consumer last left it to the
//! batch's end, or the ack fails with a conflict
//! ([`ConsumerError::is_conflict`]). Commit your results only after the
//! ack succeeded (or in the same transaction, undone on a conflict).
//! ```no_run
//! use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let config = ConsumerConfig::default().group(Some("billing".into()));
//! let mut consumer = Consumer::start(client, "events", config, Positions::default())?;
//! while let Some(batch) = consumer.next().await? {
//!     // compute results for batch …
//!     match consumer.ack(&batch).await {
//!         Ok(()) => { /* commit the results */ }
//!         Err(e) if e.is_conflict() => break, // another member had it: discard, restart
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # chukcha-style: delete chunks once processed
//! ```no_run
//! use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let config = ConsumerConfig::default().chunk_acks(true).follow(false);
//! let mut consumer = Consumer::start(client, "events", config, Positions::default())?;
//! while let Some(batch) = consumer.next().await? {
//!     // process batch.messages() …
//!     consumer.ack(&batch).await?; // the end of a sealed chunk deletes it
//! }
//! # Ok(()) }
//! ```
//!
//! # TLS
//! `https://` servers are verified against the CA certificates you give
//! (PEM); there is no implicit trust in a system store.
//! ```no_run
//! use chunkbus_client::Client;
//!
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = std::fs::read("ca.pem")?;
//! let client = Client::new("https://broker.internal:8443")?
//!     .with_ca_pem(&ca)?
//!     .with_token("s3cret")?;
//! # let _ = client;
//! # Ok(()) }
//! ```
//!
//! # Errors
//! [`ClientError::is_retryable`] separates transient failures (connection
//! refused, `503`, `507`) from permanent ones (`400`, `404`, `413`);
//! [`ClientError::is_safe_to_resend`] says whether a failed write certainly
//! stored nothing. The producer stops a category at the first batch it
//! cannot store ([`ProducerError::BatchFailed`]) so nothing is ever stored
//! after a lost message; other categories go on, and
//! [`CategoryProducer::reset`] lets the failed one accept messages again.
//! Every request is bounded in time ([`Client::with_request_timeout`]).
//! A consumer skips a chunk only when the server says it was deleted
//! ([`ClientError::ChunkDeleted`], a `404` with `chunkbus-deleted: true`);
//! a chunk the server merely does not hold (yet) is retried, failing over
//! between addresses, and reported ([`ConsumerError::ChunkUnavailable`]).
//!
//! # Statistics and tracing
//! [`Producer::stats`] and [`Consumer::stats`] count bytes, messages,
//! batches, retries and errors; a [`StatsHook`] set in the config sees each
//! of those events as it happens. With the `spans` feature, requests,
//! produced batches, reads and group acks run in `tracing` spans
//! (`chunkbus.request`, `chunkbus.produce`, `chunkbus.read`,
//! `chunkbus.ack`).
//!
//! # Cancel safety
//! Every future of this crate can be dropped (a `select!` branch that
//! lost, a timeout) without losing or duplicating a message or leaving a
//! producer or consumer broken:
//! - Waiting only — [`Producer::flush`], [`Producer::close`],
//!   [`CategoryProducer::flush`], awaiting a [`Delivery`],
//!   [`AckReceiver::recv`], [`Consumer::next`], [`Consumer::next_batch`],
//!   polling the consumer stream — is cancel safe: nothing is taken from a
//!   queue unless returned, batches are sent anyway.
//! - [`CategoryProducer::enqueue`] and [`CategoryProducer::send_timeout`]
//!   queue the message only in the step that returns its [`Delivery`].
//! - [`CategoryProducer::send`] cancelled after queueing still sends the
//!   message; only where it was stored is not reported.
//! - [`CategoryProducer::send_lines`] cancelled while waiting for memory
//!   may have queued a prefix (whole messages) of its lines.
//! - [`Consumer::ack`] / [`Acker::ack`] cancelled after the request left
//!   may have moved the group on the server without updating the local
//!   positions; start again from the group's positions to be sure.
//! - [`Client`] calls are single requests: a cancelled write may or may
//!   not have been stored, like one that timed out.
//!
//! # Dropping a producer
//! Call [`Producer::shutdown`] (or [`Producer::close`]) before dropping the
//! last handle: it waits for what is buffered and reports what was not
//! acknowledged. Dropping a producer that still holds unacknowledged
//! messages logs a `warn` (through `tracing`) with their count; they are
//! still sent while the runtime runs, but nobody learns whether they were
//! stored.
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

/// A builder-style setter for a public config field of the same name.
macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = value;
            self
        }
    };
}

mod acks;
mod client;
mod consumer;
mod error;
mod holders;
pub mod names;
mod producer;
mod stats;
pub mod tls;

pub use acks::{AckReceiver, AckRecvError, BatchAck};
pub use client::{
    ChunkInfo, Client, ClientBuilder, GroupPosition, GroupStatus, ProducerTag, WriteOptions,
    WriteReply, DEFAULT_REQUEST_TIMEOUT, DELETED_HEADER, WRITTEN_HEADER,
};
pub use consumer::{Acker, Batch, Consumer, ConsumerConfig, Messages, Position, Positions};
pub use error::{ClientError, ConsumerError, ProducerError};
/// The chunk-name parser under its older name, [`names::parse_chunk_name`].
pub use names::parse_chunk_name as parse_chunk;
pub use producer::{CategoryProducer, Delivery, LaneReset, Producer, ProducerConfig, Stored};
pub use stats::{Stats, StatsEvent, StatsHook};
