//! [`OwnerReader`]: reads one owner's chunks in order — oldest first, the
//! open one long-polled — and hands whole-message batches to the
//! application; skips a chunk only when the server says it was deleted.
//!
//! Never acks (that is `acker.rs`) and never looks for new owners (that
//! is `discovery.rs`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::acker::ReadStarts;
use super::discovery::{list_retrying, Backoff};
use super::{Batch, ConsumerConfig, Position};
use crate::client::{ChunkInfo, Client};
use crate::error::{ClientError, ConsumerError};
use crate::holders::{ChunkRead, Directory};
use crate::names::parse_chunk_name;
use crate::stats::{in_span, Counters, StatsEvent};

/// Reads one owner's chunks in order.
pub(super) struct OwnerReader {
    pub(super) client: Client,
    pub(super) category: Arc<str>,
    pub(super) owner: Arc<str>,
    pub(super) config: ConsumerConfig,
    pub(super) start: Option<Position>,
    /// Without `follow`: the last chunk of this owner at start and its size.
    pub(super) target: Option<(String, u64)>,
    pub(super) tx: mpsc::Sender<Result<Batch, ConsumerError>>,
    pub(super) stats: Arc<Counters>,
    pub(super) starts: ReadStarts,
    /// Where the last batch handed to the application ended: a reader
    /// restarted after a failure resumes there.
    pub(super) progress: parking_lot::Mutex<Option<Position>>,
    /// Where chunks' holders are: reads go to them directly.
    pub(super) directory: Arc<Directory>,
}

impl OwnerReader {
    /// Reads until done (without `follow`) or the consumer is dropped. A
    /// failure is handed to the application every time it happens, and
    /// the reader starts again after a backoff from where it was: an
    /// owner's reader never disappears silently.
    pub(super) async fn run(mut self) {
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
