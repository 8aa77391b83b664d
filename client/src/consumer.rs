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

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::{ChunkInfo, Client};
use crate::error::{ClientError, ConsumerError};
use crate::names::parse_chunk_name;

/// Tuning of a [`Consumer`].
#[derive(Debug, Clone)]
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
    /// (`POST /ack?consumer=G`) before [`Consumer::ack`] returns.
    pub group: Option<String>,
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
        }
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
    #[must_use]
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }

    /// The messages, each with its trailing newline.
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        self.data.split_inclusive(|&b| b == b'\n')
    }

    /// Where to resume after this batch.
    #[must_use]
    pub fn position(&self) -> Position {
        Position {
            chunk: self.chunk.to_string(),
            offset: self.end(),
        }
    }
}

/// Reads one category; see the module docs.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions};
/// let client = Client::new("http://127.0.0.1:8080")?;
/// let saved = Positions::default(); // or what the application stored
/// let mut consumer = Consumer::start(client, "events", ConsumerConfig::default(), saved)?;
/// while let Some(batch) = consumer.next().await? {
///     for msg in batch.messages() {
///         print!("{}", String::from_utf8_lossy(msg));
///     }
///     consumer.ack(&batch).await?;
///     // store consumer.positions() with the results, in one transaction
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    category: Arc<str>,
    chunk_acks: bool,
    group: Option<String>,
    positions: Positions,
    rx: mpsc::Receiver<Result<Batch, ConsumerError>>,
    tasks: JoinSet<()>,
}

impl Consumer {
    /// Starts reading `category` after `from` (empty: from the beginning).
    /// Needs a Tokio runtime.
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
        let mut tasks = JoinSet::new();
        tasks.spawn(discover(
            client.clone(),
            Arc::clone(&category),
            config.clone(),
            from.clone(),
            tx,
        ));
        Ok(Self {
            client,
            category,
            chunk_acks: config.chunk_acks,
            group: config.group.clone(),
            positions: from,
            rx,
            tasks,
        })
    }

    /// The next batch; `None` once everything is read (only without
    /// `follow`).
    ///
    /// # Errors
    /// A permanent error (bad category, server answered 4xx, malformed
    /// data). Transport errors and 503s are retried with backoff without
    /// being reported. A permanent error is reported every time it
    /// happens: the reader that hit it (or owner discovery) starts again
    /// after a backoff (25 ms doubling to 5 s) from the last batch it
    /// handed out, so an owner's messages never stop silently and `next`
    /// never returns `None` while something failed.
    ///
    /// # Cancel safety
    /// Cancel safe: a batch is removed from the read-ahead queue only when
    /// this future returns it.
    pub async fn next(&mut self) -> Result<Option<Batch>, ConsumerError> {
        match self.rx.recv().await {
            Some(Ok(batch)) => Ok(Some(batch)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }

    /// Marks `batch` (and everything before it from the same owner) as
    /// processed. With a `group`, the position is stored on the server
    /// first; with `chunk_acks`, the end of a sealed chunk deletes the
    /// chunk on the server.
    ///
    /// # Errors
    /// The group ack failed: a `409` ([`ConsumerError::is_conflict`]) means
    /// the group had already moved past this batch (another member
    /// processed it); or the chunk ack failed (other than the chunk being
    /// already gone).
    pub async fn ack(&mut self, batch: &Batch) -> Result<(), ConsumerError> {
        if let Some(group) = &self.group {
            if !batch.data.is_empty() {
                self.client
                    .ack_group(&self.category, group, &batch.chunk, batch.end())
                    .await?;
            }
        }
        self.positions
            .0
            .insert(batch.owner.to_string(), batch.position());
        if self.chunk_acks && batch.ends_chunk {
            match self
                .client
                .ack_chunk(&self.category, &batch.chunk, batch.end())
                .await
            {
                Ok(()) => {}
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// What has been acknowledged so far.
    #[must_use]
    pub fn positions(&self) -> &Positions {
        &self.positions
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
                if tx.send(Err(e.into())).await.is_err() {
                    return;
                }
                backoff.wait().await;
                continue;
            }
        };
        for chunk in &listing {
            let Some((owner, _)) = parse_chunk_name(&chunk.name) else {
                continue;
            };
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
                        client: client.clone(),
                        category: Arc::clone(&category),
                        owner: owner.into(),
                        config: config.clone(),
                        start: from.0.get(owner).cloned(),
                        target,
                        tx: tx.clone(),
                        progress: parking_lot::Mutex::new(None),
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
    /// Where the last batch handed to the application ended: a reader
    /// restarted after a failure resumes there.
    progress: parking_lot::Mutex<Option<Position>>,
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
        // (chunk index, name, offset) being read; None = pick the next one
        // at or after `next_idx`.
        let mut cursor: Option<(u64, Arc<str>, u64)> = None;
        let mut next_idx = 0u64;
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
                // A resume position whose chunk is gone (acked away):
                // continue with the next one.
                if let Some((idx, _, _)) = &cursor {
                    if !mine.iter().any(|(i, _)| i == idx) {
                        next_idx = idx + 1;
                        cursor = None;
                    }
                }
            }
            if cursor.is_none() {
                cursor = mine
                    .iter()
                    .find(|(i, _)| *i >= next_idx)
                    .map(|(i, c)| (*i, c.name.as_str().into(), 0));
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
            // Read this chunk until it yields nothing, or its known end.
            loop {
                if let Some((tname, tsize)) = &self.target {
                    if **tname == *name && off >= *tsize {
                        return Ok(());
                    }
                }
                if sealed_size.is_some_and(|s| off >= s) {
                    next_idx = idx + 1;
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
                let data = match self
                    .client
                    .read(&self.category, &name, off, self.config.max_read_bytes, wait)
                    .await
                {
                    Ok(d) => {
                        backoff = Duration::from_millis(25);
                        d
                    }
                    Err(e) if e.status() == Some(404) => {
                        // Deleted (acked by another consumer): move on.
                        next_idx = idx + 1;
                        cursor = None;
                        stale = true;
                        break;
                    }
                    Err(e) if e.is_retryable() => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
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
                off += len;
                cursor = Some((idx, Arc::clone(&name), off));
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
