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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::{ChunkInfo, Client};
use crate::error::{ClientError, ConsumerError};
use crate::holders::{ChunkRead, Directory};
use crate::names::parse_chunk_name;
use crate::stats::{in_span, Counters, Hook, Stats, StatsEvent, StatsHook};

/// Tuning of a [`Consumer`]. Build it from [`ConsumerConfig::default`]
/// with the setters (the struct is `#[non_exhaustive]`).
///
/// ```
/// use std::time::Duration;
/// use chunkbus_client::ConsumerConfig;
///
/// let config = ConsumerConfig::default()
///     .follow(false)
///     .group(Some("billing".into()))
///     .wait(Duration::from_millis(500));
/// assert!(!config.follow);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Bytes asked for per read (default 4 MiB; the server allows 16 MiB).
    pub max_read_bytes: u64,
    /// Long-poll time of reads at the end of an open chunk, and the period
    /// of looking for new owners (default 1 s).
    pub wait: Duration,
    /// Keep waiting for new data (default). Without it, the consumer ends
    /// once it has read everything that existed when it started.
    pub follow: bool,
    /// Batches read ahead of the application (default 4).
    pub read_ahead: usize,
    /// chukcha-style acks: when the application acks the end of a sealed
    /// chunk, delete that chunk on the server (default off).
    pub chunk_acks: bool,
    /// Consumer group: start from the group's positions stored on the
    /// server (unless `from` is given), and store each ack there
    /// (`POST /ack?consumer=G&from=F`, conditional on the group being
    /// where this consumer last left it) before [`Consumer::ack`] returns.
    pub group: Option<String>,
    /// How long a chunk the server does not hold (a plain `404`: a replica
    /// catching up, a load balancer that picked another server) is retried
    /// quietly, failing over between the client's addresses, before
    /// [`ConsumerError::ChunkUnavailable`] is handed to the application
    /// (default 5 s). Retrying goes on after that, reported each time: a
    /// chunk is skipped only when the server says it was deleted.
    pub missing_chunk_wait: Duration,
    /// Sees every batch read, retry and error (default none).
    stats_hook: Hook,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_read_bytes: 4 << 20,
            wait: Duration::from_secs(1),
            follow: true,
            read_ahead: 4,
            chunk_acks: false,
            group: None,
            missing_chunk_wait: Duration::from_secs(5),
            stats_hook: Hook::default(),
        }
    }
}

impl ConsumerConfig {
    setter!(
        /// Sets [`ConsumerConfig::max_read_bytes`].
        ///
        /// ```
        /// let c = chunkbus_client::ConsumerConfig::default().max_read_bytes(16 << 20);
        /// assert_eq!(c.max_read_bytes, 16 << 20);
        /// ```
        max_read_bytes: u64
    );
    setter!(
        /// Sets [`ConsumerConfig::wait`].
        ///
        /// ```
        /// use std::time::Duration;
        /// let c = chunkbus_client::ConsumerConfig::default().wait(Duration::from_secs(5));
        /// assert_eq!(c.wait, Duration::from_secs(5));
        /// ```
        wait: Duration
    );
    setter!(
        /// Sets [`ConsumerConfig::follow`].
        ///
        /// ```
        /// let c = chunkbus_client::ConsumerConfig::default().follow(false);
        /// assert!(!c.follow);
        /// ```
        follow: bool
    );
    setter!(
        /// Sets [`ConsumerConfig::read_ahead`].
        ///
        /// ```
        /// let c = chunkbus_client::ConsumerConfig::default().read_ahead(16);
        /// assert_eq!(c.read_ahead, 16);
        /// ```
        read_ahead: usize
    );
    setter!(
        /// Sets [`ConsumerConfig::chunk_acks`].
        ///
        /// ```
        /// let c = chunkbus_client::ConsumerConfig::default().chunk_acks(true);
        /// assert!(c.chunk_acks);
        /// ```
        chunk_acks: bool
    );
    setter!(
        /// Sets [`ConsumerConfig::group`].
        ///
        /// ```
        /// let c = chunkbus_client::ConsumerConfig::default().group(Some("billing".into()));
        /// assert_eq!(c.group.as_deref(), Some("billing"));
        /// ```
        group: Option<String>
    );
    setter!(
        /// Sets [`ConsumerConfig::missing_chunk_wait`].
        ///
        /// ```
        /// use std::time::Duration;
        /// let c = chunkbus_client::ConsumerConfig::default().missing_chunk_wait(Duration::from_secs(1));
        /// assert_eq!(c.missing_chunk_wait, Duration::from_secs(1));
        /// ```
        missing_chunk_wait: Duration
    );

    /// Calls `hook` for every batch read, retry and error ([`StatsHook`]);
    /// [`Consumer::stats`] counts them either way.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use chunkbus_client::{ConsumerConfig, StatsEvent, StatsHook};
    /// struct Log;
    /// impl StatsHook for Log {
    ///     fn record(&self, event: &StatsEvent<'_>) { eprintln!("{event:?}"); }
    /// }
    /// let c = ConsumerConfig::default().stats_hook(Arc::new(Log));
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn stats_hook(mut self, hook: Arc<dyn StatsHook>) -> Self {
        self.stats_hook = Hook(Some(hook));
        self
    }
}

/// A place in one owner's stream: everything before `offset` of `chunk`
/// (and all of that owner's older chunks) has been processed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Chunk name, `<owner>-chunk<9 digits>`.
    pub chunk: String,
    /// Byte offset in the chunk (a message boundary).
    pub offset: u64,
}

/// Acknowledged positions of a category, one per chunk owner. Serializes
/// to JSON as `{"owner": {"chunk": …, "offset": …}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Positions(pub BTreeMap<String, Position>);

/// Whole messages read from one chunk.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The chunk's owner (server name).
    pub owner: Arc<str>,
    /// Chunk name.
    pub chunk: Arc<str>,
    /// Offset of `data` in the chunk.
    pub offset: u64,
    /// One or more messages, each ending in `\n`.
    pub data: Bytes,
    /// Whether this batch ends a sealed chunk. With `chunk_acks`, a batch
    /// may be empty: it then only marks the end of a sealed chunk whose
    /// last messages were delivered before the reader knew it was sealed;
    /// ack it like any other.
    pub ends_chunk: bool,
}

impl Batch {
    /// Offset just past this batch: the position to store once processed.
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// # let batch = Batch::from_parts("n1-chunk000000000", 10, "a\nbb\n");
    /// assert_eq!(batch.end(), 15);
    /// ```
    #[must_use]
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }

    /// The messages, each with its trailing newline.
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// # let batch = Batch::from_parts("n1-chunk000000000", 0, "a\nbb\n");
    /// let msgs: Vec<&[u8]> = batch.messages().collect();
    /// assert_eq!(msgs, [&b"a\n"[..], &b"bb\n"[..]]);
    /// ```
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        self.data.split_inclusive(|&b| b == b'\n')
    }

    /// The messages with their offsets in the chunk (where each starts):
    /// `(offset, message)`, the message with its trailing newline. Also
    /// what `for (offset, msg) in &batch` iterates.
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// # let batch = Batch::from_parts("n1-chunk000000000", 10, "a\nbb\n");
    /// let got: Vec<(u64, &[u8])> = batch.iter().collect();
    /// assert_eq!(got, [(10, &b"a\n"[..]), (12, &b"bb\n"[..])]);
    /// for (offset, msg) in &batch {
    ///     println!("{offset}: {}", String::from_utf8_lossy(msg));
    /// }
    /// ```
    #[must_use]
    pub fn iter(&self) -> Messages<'_> {
        Messages {
            rest: &self.data,
            offset: self.offset,
        }
    }

    /// Number of messages in the batch (counts newlines).
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// # let batch = Batch::from_parts("n1-chunk000000000", 0, "a\nbb\n");
    /// assert_eq!(batch.len(), 2);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        memchr::memchr_iter(b'\n', &self.data).count()
    }

    /// Whether the batch holds no message (only an end-of-chunk marker).
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// assert!(Batch::from_parts("n1-chunk000000000", 7, "").is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Where to resume after this batch.
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// # let batch = Batch::from_parts("n1-chunk000000000", 10, "a\n");
    /// let p = batch.position();
    /// assert_eq!((p.chunk.as_str(), p.offset), ("n1-chunk000000000", 12));
    /// ```
    #[must_use]
    pub fn position(&self) -> Position {
        Position {
            chunk: self.chunk.to_string(),
            offset: self.end(),
        }
    }

    /// A batch of `data` read from `chunk` at `offset` (for tests and
    /// examples; the consumer makes the real ones). The owner is taken
    /// from the chunk name.
    ///
    /// ```
    /// use chunkbus_client::Batch;
    /// let b = Batch::from_parts("node1-chunk000000003", 0, "hello\n");
    /// assert_eq!(&*b.owner, "node1");
    /// ```
    #[must_use]
    pub fn from_parts(chunk: &str, offset: u64, data: impl Into<Bytes>) -> Self {
        let owner = parse_chunk_name(chunk).map_or(chunk, |(o, _)| o);
        Self {
            owner: owner.into(),
            chunk: chunk.into(),
            offset,
            data: data.into(),
            ends_chunk: false,
        }
    }
}

/// The messages of a [`Batch`] with their offsets ([`Batch::iter`]).
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    offset: u64,
}

impl<'a> Iterator for Messages<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let len = memchr::memchr(b'\n', self.rest).map_or(self.rest.len(), |i| i + 1);
        let (msg, rest) = self.rest.split_at(len);
        let at = self.offset;
        self.rest = rest;
        self.offset += len as u64;
        Some((at, msg))
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = (u64, &'a [u8]);
    type IntoIter = Messages<'a>;

    fn into_iter(self) -> Messages<'a> {
        self.iter()
    }
}

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

/// Acknowledges batches of a [`Consumer`]; cheap to clone and to move to
/// other tasks ([`Consumer::acker`]). All clones share the consumer's
/// positions, and their acks are applied one at a time.
///
/// ```no_run
/// # async fn demo(consumer: &mut chunkbus_client::Consumer) -> Result<(), chunkbus_client::ConsumerError> {
/// let acker = consumer.acker();
/// if let Some(batch) = consumer.next().await? {
///     tokio::spawn(async move { acker.ack(&batch).await });
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Acker {
    inner: Arc<AckerInner>,
}

#[derive(Debug)]
struct AckerInner {
    client: Client,
    category: Arc<str>,
    chunk_acks: bool,
    group: Option<String>,
    /// What was acknowledged; the lock is held across an ack's requests,
    /// so acks apply one at a time and in the order they lock.
    positions: tokio::sync::Mutex<Positions>,
    /// A copy for readers that cannot wait (updated under the lock above).
    snapshot: parking_lot::Mutex<Positions>,
    /// Where this consumer began reading each chunk it read (shared with
    /// the readers): the `from` of a group ack in a chunk this consumer
    /// has not acked in yet (the group's position when it was read).
    starts: ReadStarts,
    /// The first group ack that failed: later acks are refused
    /// ([`ConsumerError::GroupAckStopped`]).
    stopped: parking_lot::Mutex<Option<String>>,
}

/// Per chunk: the offset of the first batch this consumer read of it.
type ReadStarts = Arc<parking_lot::Mutex<HashMap<Arc<str>, u64>>>;

impl Acker {
    /// Marks `batch` (and everything before it from the same owner) as
    /// processed. With a `group`, the position is stored on the server
    /// first, conditionally: only if the group is still where this
    /// consumer last left it in that chunk (`from`), so of two members
    /// that processed the same messages exactly one succeeds; with
    /// `chunk_acks`, the end of a sealed chunk deletes the chunk on the
    /// server. A batch at or behind what this consumer already acked is
    /// a no-op.
    ///
    /// ```no_run
    /// # async fn demo(acker: chunkbus_client::Acker, batch: chunkbus_client::Batch) {
    /// match acker.ack(&batch).await {
    ///     Ok(()) => { /* commit my results */ }
    ///     Err(e) if e.is_conflict() => { /* another member had it: discard my results */ }
    ///     Err(e) => { /* unknown: discard, then restart from the group's positions */ }
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// The group ack failed: a `409` ([`ConsumerError::is_conflict`]) means
    /// the group is not where this consumer left it (another member acked
    /// these messages, or the group moved past them); or the chunk ack
    /// failed (other than the chunk being already deleted). After a group
    /// ack failed or was cancelled, this consumer no longer knows where
    /// the group is, so every later ack fails with
    /// [`ConsumerError::GroupAckStopped`] (acking on could cover batches it
    /// gave up, or move the group past ones nobody processed): start a new
    /// consumer, which resumes from the group's stored positions.
    ///
    /// # Cancel safety
    /// See [`Consumer`]: a cancelled ack may have been stored.
    pub async fn ack(&self, batch: &Batch) -> Result<(), ConsumerError> {
        let me = &self.inner;
        let mut positions = me.positions.lock().await;
        let acked_here = positions
            .0
            .get(&*batch.owner)
            .filter(|p| *p.chunk == *batch.chunk)
            .map(|p| p.offset);
        if acked_here.is_some_and(|at| at >= batch.end()) && !batch.ends_chunk {
            return Ok(()); // already covered by an ack of this consumer
        }
        if let Some(group) = &me.group {
            if let Some(first) = me.stopped.lock().clone() {
                return Err(ConsumerError::GroupAckStopped { first });
            }
            if !batch.data.is_empty() && acked_here.is_none_or(|at| at < batch.end()) {
                let from = acked_here
                    .or_else(|| me.starts.lock().get(&*batch.chunk).copied())
                    .unwrap_or(batch.offset);
                // Until the answer is in, local state may be wrong (an
                // ack cancelled here may still be stored).
                *me.stopped.lock() =
                    Some("a group ack was cancelled before its answer arrived".to_owned());
                in_span(
                    me.client.ack_group_from(
                        &me.category,
                        group,
                        &batch.chunk,
                        from,
                        batch.end(),
                    ),
                    || tracing::info_span!("chunkbus.ack", category = %me.category, %group, chunk = %batch.chunk, from, to = batch.end()),
                )
                .await
                .inspect_err(|e| {
                    // Local state no longer says where the group is.
                    *me.stopped.lock() = Some(e.to_string());
                })?;
                *me.stopped.lock() = None;
            }
        }
        positions
            .0
            .insert(batch.owner.to_string(), batch.position());
        me.snapshot.lock().clone_from(&positions);
        if let Some((owner, idx)) = parse_chunk_name(&batch.chunk) {
            // Older chunks of this owner are done for this consumer.
            me.starts
                .lock()
                .retain(|c, _| parse_chunk_name(c).is_none_or(|(o, i)| o != owner || i >= idx));
        }
        if me.chunk_acks && batch.ends_chunk {
            match me
                .client
                .ack_chunk(&me.category, &batch.chunk, batch.end())
                .await
            {
                // Deleted already (by another consumer, or retention).
                Ok(()) | Err(ClientError::ChunkDeleted { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// What has been acknowledged so far (a copy).
    ///
    /// ```no_run
    /// # fn demo(acker: chunkbus_client::Acker) -> Result<(), serde_json::Error> {
    /// let json = serde_json::to_string(&acker.positions())?;
    /// # let _ = json;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn positions(&self) -> Positions {
        self.inner.snapshot.lock().clone()
    }
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
            acker: Acker {
                inner: Arc::new(AckerInner {
                    client,
                    category,
                    chunk_acks: config.chunk_acks,
                    group: config.group.clone(),
                    snapshot: parking_lot::Mutex::new(from.clone()),
                    positions: tokio::sync::Mutex::new(from),
                    starts,
                    stopped: parking_lot::Mutex::new(None),
                }),
            },
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

/// Finds owners (once without `follow`, periodically with it) and runs
/// one reader per owner.
async fn discover(
    client: Client,
    category: Arc<str>,
    config: ConsumerConfig,
    from: Positions,
    tx: mpsc::Sender<Result<Batch, ConsumerError>>,
    (stats, starts): (Arc<Counters>, ReadStarts),
) {
    let mut from = from;
    let mut backoff = Backoff::default();
    if from.0.is_empty() {
        if let Some(group) = &config.group {
            loop {
                match group_positions(&client, &category, group, &config).await {
                    Ok(p) => {
                        from = p;
                        break;
                    }
                    // Surfaced every time, retried: never a silent end.
                    Err(e) => {
                        stats.record(&StatsEvent::Error {
                            category: &category,
                            error: &e,
                        });
                        if tx.send(Err(e.into())).await.is_err() {
                            return;
                        }
                        backoff.wait().await;
                    }
                }
            }
        }
    }
    let mut readers = JoinSet::new();
    let mut known = HashSet::new();
    let directory = Arc::new(Directory::default());
    let mut backoff = Backoff::default();
    loop {
        let listing = match list_retrying(&client, &category, &config).await {
            Ok(l) => {
                backoff = Backoff::default();
                l
            }
            // The readers keep running; the failure is surfaced every
            // time and discovery tries again.
            Err(e) => {
                stats.record(&StatsEvent::Error {
                    category: &category,
                    error: &e,
                });
                if tx.send(Err(e.into())).await.is_err() {
                    return;
                }
                backoff.wait().await;
                continue;
            }
        };
        // Every listed owner, and every owner with a start position even
        // if this server lists nothing of it (yet): its reader finds out
        // whether its chunks were deleted or are merely missing here.
        let listed = listing
            .iter()
            .filter_map(|c| parse_chunk_name(&c.name).map(|(o, _)| o));
        let owners: Vec<String> = listed
            .chain(from.0.keys().map(String::as_str))
            .map(str::to_owned)
            .collect();
        for owner in &owners {
            let owner = owner.as_str();
            if known.insert(owner.to_owned()) {
                let target = if config.follow {
                    None
                } else {
                    listing
                        .iter()
                        .rev()
                        .find(|c| parse_chunk_name(&c.name).is_some_and(|(o, _)| o == owner))
                        .map(|c| (c.name.clone(), c.size))
                };
                readers.spawn(
                    OwnerReader {
                        // Its own active address: moving it for a missing
                        // chunk must not move the group acks (all members
                        // of a group ack on one server).
                        client: client.detached(),
                        category: Arc::clone(&category),
                        owner: owner.into(),
                        config: config.clone(),
                        start: from.0.get(owner).cloned(),
                        target,
                        tx: tx.clone(),
                        stats: Arc::clone(&stats),
                        starts: Arc::clone(&starts),
                        progress: parking_lot::Mutex::new(None),
                        directory: Arc::clone(&directory),
                    }
                    .run(),
                );
            }
        }
        if !config.follow {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(config.wait) => {}
            () = tx.closed() => return,
        }
    }
    drop(tx);
    while readers.join_next().await.is_some() {}
}

/// The group's stored positions as [`Positions`]: per owner, its
/// highest-index chunk with a stored position (older chunks of that owner
/// count as processed, since a consumer acks in order).
async fn group_positions(
    client: &Client,
    category: &str,
    group: &str,
    config: &ConsumerConfig,
) -> Result<Positions, ClientError> {
    let mut backoff = Duration::from_millis(25);
    let groups = loop {
        match client.consumers(category).await {
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.wait.max(Duration::from_millis(100)));
            }
            other => break other?,
        }
    };
    let mut out = Positions::default();
    if let Some(g) = groups.into_iter().find(|g| g.consumer == group) {
        for p in g.positions {
            let Some((owner, idx)) = parse_chunk_name(&p.chunk) else {
                continue;
            };
            let newer = out
                .0
                .get(owner)
                .and_then(|cur| parse_chunk_name(&cur.chunk))
                .is_none_or(|(_, cur)| idx > cur);
            if newer {
                out.0.insert(
                    owner.to_owned(),
                    Position {
                        chunk: p.chunk.clone(),
                        offset: p.offset,
                    },
                );
            }
        }
    }
    Ok(out)
}

async fn list_retrying(
    client: &Client,
    category: &str,
    config: &ConsumerConfig,
) -> Result<Vec<ChunkInfo>, ClientError> {
    let mut backoff = Duration::from_millis(25);
    loop {
        match client.list_chunks(category).await {
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.wait.max(Duration::from_millis(100)));
            }
            other => return other,
        }
    }
}

/// Exponential backoff (25 ms doubling to 5 s) between attempts after a
/// failure that was handed to the application.
#[derive(Debug)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(25))
    }
}

impl Backoff {
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// Reads one owner's chunks in order.
struct OwnerReader {
    client: Client,
    category: Arc<str>,
    owner: Arc<str>,
    config: ConsumerConfig,
    start: Option<Position>,
    /// Without `follow`: the last chunk of this owner at start and its size.
    target: Option<(String, u64)>,
    tx: mpsc::Sender<Result<Batch, ConsumerError>>,
    stats: Arc<Counters>,
    starts: ReadStarts,
    /// Where the last batch handed to the application ended: a reader
    /// restarted after a failure resumes there.
    progress: parking_lot::Mutex<Option<Position>>,
    /// Where chunks' holders are: reads go to them directly.
    directory: Arc<Directory>,
}

impl OwnerReader {
    /// Reads until done (without `follow`) or the consumer is dropped. A
    /// failure is handed to the application every time it happens, and
    /// the reader starts again after a backoff from where it was: an
    /// owner's reader never disappears silently.
    async fn run(mut self) {
        let mut backoff = Backoff::default();
        loop {
            match self.read_all().await {
                Ok(()) => return,
                Err(e) => {
                    self.stats.record(&StatsEvent::Error {
                        category: &self.category,
                        error: &e,
                    });
                    if self.tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    backoff.wait().await;
                    if let Some(p) = self.progress.lock().take() {
                        self.start = Some(p);
                    }
                }
            }
        }
    }

    async fn list_after(&self, after: &str) -> Result<Vec<ChunkInfo>, ClientError> {
        match self
            .client
            .list_chunks_after(&self.category, after, self.config.wait)
            .await
        {
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                list_retrying(&self.client, &self.category, &self.config).await
            }
            other => other,
        }
    }

    async fn read_all(&self) -> Result<(), ConsumerError> {
        let target_idx = self
            .target
            .as_ref()
            .and_then(|(name, _)| parse_chunk_name(name))
            .map(|(_, i)| i);
        // This owner's chunks (index, info) from the last listing.
        let mut mine: Vec<(u64, ChunkInfo)> = Vec::new();
        // Whether to list again before the next step; every path through
        // the loop below decides it anew.
        let mut stale = true;
        // (chunk index, name, offset) being read; None = pick the next one.
        let mut cursor: Option<(u64, Arc<str>, u64)> = None;
        // The index that comes next once the cursor's chunk is done; None
        // before any position (start at the oldest chunk listed).
        let mut next_idx: Option<u64> = None;
        if let Some(pos) = &self.start {
            if let Some((_, idx)) = parse_chunk_name(&pos.chunk) {
                cursor = Some((idx, pos.chunk.as_str().into(), pos.offset));
            }
        }
        // Chunks whose last batch already carried `ends_chunk`.
        let mut ended = HashSet::new();
        // The last sealed chunk read to its end.
        let mut last_done: Option<Arc<str>> = None;
        let mut backoff = Duration::from_millis(25);
        // Since when the cursor's chunk has been answered with a plain 404.
        let mut missing_since: Option<tokio::time::Instant> = None;
        loop {
            if self.tx.is_closed() {
                return Ok(());
            }
            if stale {
                let listing = match (&last_done, cursor.is_none() && self.config.follow) {
                    // Finished a sealed chunk and know no next one: wait on
                    // the server for it instead of polling.
                    (Some(after), true) => self.list_after(after).await?,
                    _ => list_retrying(&self.client, &self.category, &self.config).await?,
                };
                mine = listing
                    .into_iter()
                    .filter_map(|c| match parse_chunk_name(&c.name) {
                        Some((o, i)) if o == &*self.owner => Some((i, c)),
                        _ => None,
                    })
                    .collect();
                // A cursor whose chunk is not listed is still read: the
                // answer says whether it was deleted (skip) or is merely
                // not here (yet) — never skipped on a guess.
            }
            if cursor.is_none() {
                cursor = match next_idx {
                    None => mine.first().map(|(i, c)| (*i, c.name.as_str().into(), 0)),
                    Some(n) => match mine.iter().find(|(i, _)| *i >= n) {
                        Some((i, c)) if *i == n => Some((n, c.name.as_str().into(), 0)),
                        // An index below a listed one that is not listed:
                        // deleted, or not replicated here yet. Ask.
                        Some(_) => Some((n, chunk_name(&self.owner, n).into(), 0)),
                        None => None,
                    },
                };
            }
            let Some((idx, name, mut off)) = cursor.clone() else {
                if !self.config.follow {
                    return Ok(()); // nothing (more) existed at start
                }
                if last_done.is_none() {
                    // Nothing of this owner is readable (acked away?).
                    tokio::time::sleep(self.config.wait).await;
                }
                stale = true;
                continue;
            };
            if target_idx.is_some_and(|t| idx > t) {
                return Ok(());
            }
            let sealed_size = mine
                .iter()
                .find(|(i, _)| *i == idx)
                .and_then(|(_, c)| c.complete.then_some(c.size));
            let holders: Vec<String> = mine
                .iter()
                .find(|(i, _)| *i == idx)
                .map(|(_, c)| c.holders.clone())
                .unwrap_or_default();
            // Read this chunk until it yields nothing, or its known end.
            loop {
                if let Some((tname, tsize)) = &self.target {
                    if **tname == *name && off >= *tsize {
                        return Ok(());
                    }
                }
                if sealed_size.is_some_and(|s| off >= s) {
                    next_idx = Some(idx + 1);
                    cursor = None;
                    last_done = Some(Arc::clone(&name));
                    // Go on from the listing we have; list again only when it
                    // knows no next chunk.
                    stale = !mine.iter().any(|(i, _)| *i > idx);
                    if self.config.chunk_acks && !ended.contains(&idx) {
                        // The listing was stale when the last batch went
                        // out: mark the end so the application can ack it.
                        let marker = Batch {
                            owner: Arc::clone(&self.owner),
                            chunk: Arc::clone(&name),
                            offset: off,
                            data: Bytes::new(),
                            ends_chunk: true,
                        };
                        if self.tx.send(Ok(marker)).await.is_err() {
                            return Ok(());
                        }
                    }
                    break;
                }
                let wait = sealed_size.is_none().then_some(self.config.wait);
                let read = self.directory.read(
                    &self.client,
                    &holders,
                    ChunkRead {
                        category: &self.category,
                        chunk: &name,
                        off,
                        max_size: self.config.max_read_bytes,
                        wait,
                        sealed: sealed_size.is_some(),
                        spread: idx,
                    },
                );
                let read = in_span(
                    read,
                    || tracing::info_span!("chunkbus.read", category = %self.category, chunk = %name, off),
                );
                let data = match read.await {
                    Ok(d) => {
                        backoff = Duration::from_millis(25);
                        missing_since = None;
                        d
                    }
                    Err(ClientError::ChunkDeleted { .. }) => {
                        // The server knows it is gone for good (acked by
                        // another consumer, retention): move on.
                        next_idx = Some(idx + 1);
                        cursor = None;
                        stale = true;
                        missing_since = None;
                        break;
                    }
                    Err(e) if e.status() == Some(404) => {
                        // Not held there, perhaps not *yet* (a replica
                        // catching up): retry, failing over, for a while
                        // quietly, then report it (and go on retrying).
                        let now = tokio::time::Instant::now();
                        let since = *missing_since.get_or_insert(now);
                        if now.duration_since(since) >= self.config.missing_chunk_wait {
                            return Err(ConsumerError::ChunkUnavailable {
                                chunk: name.to_string(),
                                waited: now.duration_since(since),
                                source: e,
                            });
                        }
                        self.stats.record(&StatsEvent::Retry {
                            category: &self.category,
                            error: &e,
                        });
                        self.client.fail_over();
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        cursor = Some((idx, Arc::clone(&name), off));
                        stale = true;
                        break;
                    }
                    Err(e) if e.is_retryable() => {
                        self.stats.record(&StatsEvent::Retry {
                            category: &self.category,
                            error: &e,
                        });
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        cursor = Some((idx, Arc::clone(&name), off));
                        stale = true;
                        break; // list again, then resume at the same cursor
                    }
                    Err(e) => return Err(e.into()),
                };
                if data.is_empty() {
                    // Open when listed: sealed since? a newer chunk?
                    cursor = Some((idx, Arc::clone(&name), off));
                    stale = true;
                    break;
                }
                if !data.ends_with(b"\n") {
                    return Err(ConsumerError::PartialMessage {
                        chunk: name.to_string(),
                        off,
                        len: data.len(),
                    });
                }
                let len = data.len() as u64;
                let batch = Batch {
                    owner: Arc::clone(&self.owner),
                    chunk: Arc::clone(&name),
                    offset: off,
                    data,
                    ends_chunk: sealed_size == Some(off + len),
                };
                if batch.ends_chunk {
                    ended.insert(idx);
                }
                self.stats.record(&StatsEvent::Read {
                    category: &self.category,
                    chunk: &name,
                    messages: batch.len() as u64,
                    bytes: len,
                });
                self.starts.lock().entry(Arc::clone(&name)).or_insert(off);
                off += len;
                if self.tx.send(Ok(batch)).await.is_err() {
                    return Ok(());
                }
                *self.progress.lock() = Some(Position {
                    chunk: name.to_string(),
                    offset: off,
                });
            }
        }
    }
}

/// The name of `owner`'s chunk number `idx`: `<owner>-chunk<9 digits>`.
fn chunk_name(owner: &str, idx: u64) -> String {
    format!("{owner}-chunk{idx:09}")
}
