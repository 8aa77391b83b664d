//! One copy round of the replicator: copy every target chunk that needs it,
//! a few at a time (open chunks first), each up to what the owner has
//! published now, and seal a copy once the owner's chunk is complete and
//! held whole. A copy that differs from the owner's final chunk is dropped
//! and copied again.
//!
//! Never decides which chunks are targets (that is `feed.rs`) and
//! never writes to chunk files except through the storage copy writer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::task::JoinSet;

use super::{Key, Replicator, Shared, Target, FETCH_MAX, FIRST_BACKOFF};
use crate::cluster::fetch::{append, fetch, FetchFrom};
use crate::cluster::{blocking, ReplicationError};
use crate::storage::chunk::Chunk;
use crate::storage::{CategoryLog, CopyWriter};

/// Most bytes asked for in one fetch of an open chunk: smaller, so the
/// live tail is published (and reported to waiting writes) in short steps.
const TAIL_FETCH_MAX: u64 = 1 << 20;
/// Chunks copied at once from one peer.
const PARALLEL_COPIES: usize = 4;

/// Outcome of copying one chunk.
pub(super) struct Copied {
    pub(super) key: Key,
    writer: Option<CopyWriter>,
    pub(super) local: u64,
    pub(super) synced: u64,
    pub(super) sealed: bool,
    pub(super) bytes: u64,
    error: Option<ReplicationError>,
    /// A copy closed now and sealing in the background.
    pub(super) finished: Option<Arc<Chunk>>,
}

impl Replicator {
    /// Copies every chunk that needs it, a few at a time.
    pub(super) async fn copy_round(
        &self,
        targets: &mut BTreeMap<Key, Target>,
        writers: &mut HashMap<Key, CopyWriter>,
    ) -> Vec<Copied> {
        let mut todo: Vec<(Key, Target)> = targets
            .iter()
            .filter(|(_, t)| t.needs_work())
            .map(|(k, t)| (k.clone(), *t))
            .collect();
        // Open chunks first: they carry the live tail that writes wait for.
        todo.sort_by_key(|(_, t)| t.complete);
        let mut jobs = JoinSet::new();
        let mut done = Vec::new();
        let mut todo = todo.into_iter();
        loop {
            while jobs.len() < PARALLEL_COPIES {
                let Some((key, target)) = todo.next() else {
                    break;
                };
                let writer = writers.remove(&key);
                let shared = Arc::clone(&self.shared);
                jobs.spawn(copy_chunk(shared, key, target, writer));
            }
            let Some(joined) = jobs.join_next().await else {
                break;
            };
            let Ok(c) = joined else {
                tracing::error!("chunk copy task panicked");
                continue;
            };
            if let Some(e) = &c.error {
                tracing::warn!(peer = %self.shared.peer.name, chunk = %c.key.1, error = %crate::error_chain(e), "copying chunk failed; retrying");
            }
            if c.sealed {
                targets.remove(&c.key);
            } else if let Some(t) = targets.get_mut(&c.key) {
                t.local = c.local;
                t.size = t.size.max(c.local);
            }
            done.push(c);
        }
        for c in &mut done {
            if let Some(w) = c.writer.take() {
                writers.insert(c.key.clone(), w);
            }
        }
        if done.iter().any(|c| c.error.is_some()) {
            // Do not spin on a failing copy.
            tokio::time::sleep(FIRST_BACKOFF).await;
        }
        done
    }
}

/// Copies one chunk up to what the owner has published now; seals the copy
/// once the owner's chunk is complete and held whole.
async fn copy_chunk(
    shared: Arc<Shared>,
    key: Key,
    target: Target,
    writer: Option<CopyWriter>,
) -> Copied {
    let mut out = Copied {
        key: key.clone(),
        writer: None,
        local: target.local,
        synced: 0,
        sealed: false,
        bytes: 0,
        error: None,
        finished: None,
    };
    if let Err(e) = copy_into(&shared, &key, target, writer, &mut out).await {
        out.error = Some(e);
    }
    if let Some(w) = &out.writer {
        out.local = w.end();
        out.synced = w.chunk().synced_upto();
    }
    out
}

/// The writer of the local copy: the one kept from the last round, else
/// a new or reopened one. `None` when the copy here is already sealed and
/// matches the owner's (then `out` says so).
async fn open_writer(
    log: &Arc<CategoryLog>,
    key: &Key,
    target: Target,
    out: &mut Copied,
) -> Result<Option<CopyWriter>, ReplicationError> {
    let name = &key.1;
    if let Some(local) = log.chunk(name) {
        let s = local.state();
        let diverged =
            target.complete && (s.end > target.size || (s.sealed && s.end != target.size));
        if s.sealed && !diverged {
            out.sealed = true;
            out.local = s.end;
            out.synced = s.end;
            return Ok(None);
        }
        if diverged {
            tracing::warn!(chunk = %name, held = s.end, owner_size = target.size,
                "copy differs from the owner's final chunk; copying it again");
            let (l, n) = (Arc::clone(log), name.clone());
            blocking(move || l.remove_copy(&n)).await?;
        }
    }
    let (l, n) = (Arc::clone(log), name.clone());
    Ok(Some(blocking(move || l.copy_writer(&n)).await?))
}

async fn copy_into(
    shared: &Shared,
    key: &Key,
    target: Target,
    writer: Option<CopyWriter>,
    out: &mut Copied,
) -> Result<(), ReplicationError> {
    let (cat, name) = key;
    let storage = Arc::clone(&shared.storage);
    let c2 = cat.clone();
    let log: Arc<CategoryLog> = blocking(move || storage.category_or_create(&c2)).await?;
    let mut writer = match writer {
        Some(w) => w,
        None => match open_writer(&log, key, target, out).await? {
            Some(w) => w,
            None => return Ok(()),
        },
    };
    let from = FetchFrom {
        peer: &shared.peer,
        category: cat,
        chunk: name,
        max_size: if target.complete {
            shared.throttle.step(FETCH_MAX)
        } else {
            TAIL_FETCH_MAX
        },
    };
    loop {
        let fetched = match fetch(&shared.client, from, &writer).await {
            Ok(f) => f,
            Err(e) => {
                out.writer = Some(writer);
                return Err(e);
            }
        };
        let (size, complete) = (fetched.size, fetched.complete);
        if fetched.records.is_empty() {
            if complete && size == writer.end() {
                let end = writer.end();
                let chunk = Arc::clone(writer.chunk());
                out.synced = chunk.synced_upto();
                // Complete for readers now; the durable seal follows in the
                // background so the next chunk's copy does not wait for it.
                log.finish_copy(writer);
                out.sealed = true;
                out.local = end;
                out.finished = Some(chunk);
                return Ok(());
            }
            if complete && size < writer.end() {
                let held = writer.end();
                drop(writer);
                let (l, n) = (Arc::clone(&log), name.clone());
                blocking(move || l.remove_copy(&n)).await?;
                out.local = 0;
                return Err(ReplicationError::Shrunk { size, held });
            }
            out.writer = Some(writer);
            return Ok(()); // caught up with what the owner has published
        }
        let len = fetched.data.len() as u64;
        writer = match append(&log, writer, fetched.records, fetched.data).await {
            Ok(w) => w,
            Err(failed) => {
                out.writer = failed.writer;
                return Err(failed.error);
            }
        };
        out.bytes += len;
        if target.complete {
            // Catch-up of a sealed chunk: paced (`rebalance_rate`).
            shared.throttle.pay(len).await;
        }
        if !complete && writer.end() >= size {
            out.writer = Some(writer);
            return Ok(());
        }
    }
}
