//! Rust client for chunkbus, a persistent event bus over HTTP.
//!
//! Three layers, use whichever fits:
//! - [`Client`]: one method per endpoint (`/write`, `/read`, `/listChunks`,
//!   `/listCategories`, `/ack`), with failover across several server
//!   addresses when a connection cannot be established.
//! - [`Producer`]: batches messages by size and linger time, keeps a bounded
//!   number of requests in flight and a bounded amount of memory, stores
//!   each category's messages in submission order, retries only what is
//!   safe to resend, and acknowledges each batch with its (chunk, offset).
//! - [`Consumer`]: reads every chunk owner's messages in order with long
//!   polls and explicit acks; its [`Positions`] can be stored with the
//!   application's own data and given back to resume exactly there.
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
//!     events.send(format!("{{\"n\":{i}}}")).await?; // the newline is added
//! }
//! producer.flush().await?; // all of them are stored now
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
//!     for msg in batch.messages() {
//!         // process msg (bytes including the trailing newline)
//!         # let _ = msg;
//!     }
//!     consumer.ack(&batch).await?;
//!     save_with_results(&serde_json::to_string(consumer.positions())?);
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
//! let config = ConsumerConfig { chunk_acks: true, follow: false, ..ConsumerConfig::default() };
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
pub mod names;
mod producer;
mod stats;
pub mod tls;

pub use acks::{AckReceiver, AckRecvError, BatchAck};
pub use client::{
    ChunkInfo, Client, GroupPosition, GroupStatus, WriteOptions, WriteReply, DELETED_HEADER,
    WRITTEN_HEADER,
};
pub use consumer::{Batch, Consumer, ConsumerConfig, Position, Positions};
pub use error::{ClientError, ConsumerError, ProducerError};
/// The chunk-name parser under its older name, [`names::parse_chunk_name`].
pub use names::parse_chunk_name as parse_chunk;
pub use producer::{
    CategoryProducer, Delivery, LaneReset, Producer, ProducerConfig, Stored,
};
pub use stats::{Stats, StatsEvent, StatsHook};
