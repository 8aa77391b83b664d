//! [`Consumer`]: reads whole messages of one category from every chunk
//! owner the server holds, in order per owner, with explicit acks.
//!
//! One reader task per owner walks that owner's chunks oldest first and
//! long-polls the open one; batches reach the application through a
//! bounded channel (read-ahead bounded by `read_ahead × max_read_bytes`).
//! The consumer's position is what the application acknowledged, not what
//! was read: [`Consumer::positions`] after [`Consumer::ack`] is what to
//! store (alongside the application's own data, for exactly-once) and pass
//! back to [`Consumer::start`] to resume.
//!
//! The jobs live in their own modules:
//! - `config`: [`ConsumerConfig`], the tuning and its setters;
//! - `batch`: what the application gets and stores ([`Batch`],
//!   [`Messages`], [`Position`], [`Positions`]); pure data, no I/O;
//! - `acker`: acknowledging ([`Acker`]): local positions, group acks
//!   (compare-and-set on the server), chunk acks;
//! - `discovery`: finding the owners (and a group's stored positions) and
//!   running one reader per owner; listing with retries, the backoff;
//! - `reader`: one owner's reader, the read loop over its chunks;
//! - this file: [`Consumer`] itself — starting, the read-ahead queue
//!   (`next`, the `Stream`), acks through its [`Acker`], stats.

mod acker;
mod batch;
mod config;
mod discovery;
mod reader;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::Client;
use crate::error::ConsumerError;
use crate::names::parse_chunk_name;
use crate::stats::{Counters, Stats};

pub use acker::Acker;
use acker::ReadStarts;
pub use batch::{Batch, Messages, Position, Positions};
pub use config::ConsumerConfig;
use discovery::discover;

/// Reads one category; see the module docs. It is a
/// [`Stream`](futures_core::Stream) of batches too.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions};
/// let client = Client::new("http://127.0.0.1:8080")?;
/// let saved = Positions::default(); // or what the application stored
/// let mut consumer = Consumer::start(client, "events", ConsumerConfig::default(), saved)?;
/// while let Some(batch) = consumer.next().await? {
///     for (offset, msg) in &batch {
///         print!("{offset}: {}", String::from_utf8_lossy(msg));
///     }
///     consumer.ack(&batch).await?;
///     // store consumer.positions() with the results, in one transaction
/// }
/// # Ok(()) }
/// ```
///
/// As a stream (the inherent [`Consumer::next`] returns
/// `Result<Option<Batch>>`; call the stream's `next` as
/// `StreamExt::next(&mut consumer)`, or use any other combinator), with
/// acks from other tasks through an [`Acker`]:
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use futures::StreamExt;
/// use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions};
/// let client = Client::new("http://127.0.0.1:8080")?;
/// let config = ConsumerConfig::default().group(Some("billing".into()));
/// let mut consumer = Consumer::start(client, "events", config, Positions::default())?;
/// let acker = consumer.acker();
/// while let Some(batch) = StreamExt::next(&mut consumer).await {
///     let batch = batch?;
///     let acker = acker.clone();
///     tokio::spawn(async move {
///         // process batch …
///         if let Err(e) = acker.ack(&batch).await {
///             eprintln!("not acked: {e}");
///         }
///     });
/// }
/// # Ok(()) }
/// ```
///
/// # Cancel safety
/// - [`Consumer::next`], [`Consumer::next_batch`] and polling the stream
///   are cancel safe: a batch leaves the read-ahead queue only when it is
///   returned.
/// - [`Consumer::ack`] / [`Acker::ack`] are *not* fully cancel safe: a
///   group ack (or chunk ack) cancelled after its request left may have
///   been stored by the server while the local positions were not
///   updated. Acking the same batch again then fails with a conflict
///   ([`ConsumerError::is_conflict`]); restart from the group's positions
///   on the server (drop the consumer and start a new one without
///   explicit positions) to be sure where the group is.
#[derive(Debug)]
pub struct Consumer {
    acker: Acker,
    stats: Arc<Counters>,
    rx: mpsc::Receiver<Result<Batch, ConsumerError>>,
    tasks: JoinSet<()>,
}

impl Consumer {
    /// Starts reading `category` after `from` (empty: from the beginning,
    /// or from the group's stored positions with a `group`). Needs a Tokio
    /// runtime.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions};
    /// let client = Client::new("http://127.0.0.1:8080")?;
    /// let consumer = Consumer::start(client, "events", ConsumerConfig::default(), Positions::default())?;
    /// # drop(consumer);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConsumerError::InvalidPosition`] for a position whose chunk name is
    /// not `<owner>-chunk<9 digits>` or does not match its owner key.
    pub fn start(
        client: Client,
        category: &str,
        config: ConsumerConfig,
        from: Positions,
    ) -> Result<Self, ConsumerError> {
        for (owner, pos) in &from.0 {
            match parse_chunk_name(&pos.chunk) {
                Some((o, _)) if o == owner => {}
                _ => {
                    return Err(ConsumerError::InvalidPosition(format!(
                        "owner {owner:?} has chunk {:?}",
                        pos.chunk
                    )))
                }
            }
        }
        let category: Arc<str> = category.into();
        let (tx, rx) = mpsc::channel(config.read_ahead.max(1));
        let stats = Arc::new(Counters::new(config.stats_hook.clone()));
        let starts = ReadStarts::default();
        let mut tasks = JoinSet::new();
        tasks.spawn(discover(
            client.clone(),
            Arc::clone(&category),
            config.clone(),
            from.clone(),
            tx,
            (Arc::clone(&stats), Arc::clone(&starts)),
        ));
        Ok(Self {
            acker: Acker::new(
                client,
                category,
                config.chunk_acks,
                config.group.clone(),
                from,
                starts,
            ),
            stats,
            rx,
            tasks,
        })
    }

    /// The next batch; `None` once everything is read (only without
    /// `follow`).
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: chunkbus_client::Consumer) -> Result<(), chunkbus_client::ConsumerError> {
    /// while let Some(batch) = consumer.next().await? {
    ///     println!("{} messages from {}", batch.len(), batch.chunk);
    ///     consumer.ack(&batch).await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A permanent error (bad category, server answered 4xx, malformed
    /// data, a chunk the server keeps not having). Transport errors and
    /// 503s are retried with backoff without being reported. A permanent
    /// error is reported every time it happens: the reader that hit it (or
    /// owner discovery) starts again after a backoff (25 ms doubling to
    /// 5 s) from the last batch it handed out, so an owner's messages never
    /// stop silently and `next` never returns `None` while something
    /// failed. Calling `next` again after an error goes on.
    ///
    /// # Cancel safety
    /// Cancel safe: a batch is removed from the read-ahead queue only when
    /// this future returns it.
    pub async fn next(&mut self) -> Result<Option<Batch>, ConsumerError> {
        self.next_batch().await.transpose()
    }

    /// The next batch or error, as the stream yields it: `None` once
    /// everything is read (only without `follow`).
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: chunkbus_client::Consumer) {
    /// while let Some(item) = consumer.next_batch().await {
    ///     match item {
    ///         Ok(batch) => { let _ = consumer.ack(&batch).await; }
    ///         Err(e) => eprintln!("{e}"), // reported, retried
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Consumer::next`].
    pub async fn next_batch(&mut self) -> Option<Result<Batch, ConsumerError>> {
        self.rx.recv().await
    }

    /// Marks `batch` (and everything before it from the same owner) as
    /// processed: [`Acker::ack`].
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: chunkbus_client::Consumer) -> Result<(), chunkbus_client::ConsumerError> {
    /// if let Some(batch) = consumer.next().await? {
    ///     consumer.ack(&batch).await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Acker::ack`].
    ///
    /// # Cancel safety
    /// See [`Consumer`]: a cancelled ack may have been stored.
    pub async fn ack(&self, batch: &Batch) -> Result<(), ConsumerError> {
        self.acker.ack(batch).await
    }

    /// A cloneable handle that acks this consumer's batches from other
    /// tasks, sharing its positions.
    ///
    /// ```no_run
    /// # fn demo(consumer: &chunkbus_client::Consumer) {
    /// let acker = consumer.acker();
    /// let for_another_task = acker.clone();
    /// # drop(for_another_task);
    /// # }
    /// ```
    #[must_use]
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// What has been acknowledged so far (a copy): store it with the
    /// application's results and pass it to [`Consumer::start`] to resume.
    ///
    /// ```no_run
    /// # fn demo(consumer: &chunkbus_client::Consumer) -> Result<(), serde_json::Error> {
    /// let json = serde_json::to_string(&consumer.positions())?;
    /// # let _ = json;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn positions(&self) -> Positions {
        self.acker.positions()
    }

    /// Counters since the consumer started: bytes, messages and batches
    /// read, retries, errors handed to the application.
    ///
    /// ```no_run
    /// # fn demo(consumer: &chunkbus_client::Consumer) {
    /// let s = consumer.stats();
    /// println!("{} bytes in {} batches, {} retries", s.bytes, s.batches, s.retries);
    /// # }
    /// ```
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }
}

impl futures_core::Stream for Consumer {
    type Item = Result<Batch, ConsumerError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}
