//! The replica side: one task per peer pulls that peer's own chunks.
//!
//! Loop: long-poll the owner's change feed (reporting what this server now
//! holds), then fetch the bytes of every changed chunk this server lacks —
//! sealed chunks completely, the open one up to its current end — verify
//! them against the owner's index records and append them to local copies.
//! When a write on the owner waits for replicas to fdatasync, the poll
//! answer says so and the copies are synced before the next report.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use parking_lot::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::acks::PendingAcks;
use super::group_sync;
use super::link::{q, PeerClient, PeerError};
use super::protocol::{self, ChangesReply, ChangesRequest, Held};
use super::{blocking, Peer};
use crate::groups::GroupStore;
use crate::names::{Category, ChunkName, ServerName};
use crate::storage::chunk::Chunk;
use crate::storage::{CategoryLog, CopyWriter, Storage};

/// How long a changes poll waits for news when this server is caught up.
pub const POLL_WAIT: Duration = Duration::from_secs(20);
/// Most bytes asked for in one fetch of a sealed chunk (catch-up).
pub const FETCH_MAX: u64 = 8 << 20;
/// Most bytes asked for in one fetch of an open chunk: smaller, so the
/// live tail is published (and reported to waiting writes) in short steps.
const TAIL_FETCH_MAX: u64 = 1 << 20;
/// Chunks copied at once from one peer.
const PARALLEL_COPIES: usize = 4;
/// Deadline of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What this server knows of its link to one peer (as a replica of it).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LinkState {
    /// The last poll was answered.
    pub up: bool,
    /// Milliseconds since the last answer (None: never).
    #[serde(skip)]
    pub last_contact: Option<Instant>,
    /// The last error, if the link is down.
    pub last_error: Option<String>,
    /// Bytes the peer has published that this server does not hold yet.
    pub lag_bytes: u64,
    /// Since when this server has been behind (None: caught up).
    #[serde(skip)]
    pub behind_since: Option<Instant>,
    /// Bytes copied from the peer since start.
    pub copied_bytes: u64,
    /// Chunks copied completely since start.
    pub copied_chunks: u64,
}

impl LinkState {
    /// Seconds this server has been behind the peer (0 when caught up).
    #[must_use]
    pub fn lag_seconds(&self) -> f64 {
        self.behind_since.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }
}

/// The owner's view of one of its chunks, and how far this server holds it.
#[derive(Debug, Clone, Copy)]
struct Target {
    size: u64,
    complete: bool,
    local: u64,
}

impl Target {
    fn needs_work(&self) -> bool {
        self.local < self.size || self.complete
    }
}

type Key = (Category, ChunkName);

/// Everything a copy job needs.
struct Shared {
    peer: Peer,
    storage: Arc<Storage>,
    client: PeerClient,
}

/// Outcome of copying one chunk.
struct Copied {
    key: Key,
    writer: Option<CopyWriter>,
    local: u64,
    synced: u64,
    sealed: bool,
    bytes: u64,
    error: Option<String>,
    /// A copy closed now and sealing in the background.
    finished: Option<Arc<Chunk>>,
}

/// Pulls one peer's chunks until stopped.
pub struct Replicator {
    shared: Arc<Shared>,
    groups: Arc<GroupStore>,
    me: ServerName,
    status: Arc<Mutex<LinkState>>,
    pending: Arc<PendingAcks>,
    stop: CancellationToken,
}

/// What every replicator of a server shares.
#[derive(Debug, Clone)]
pub struct Local {
    /// This server's name.
    pub me: ServerName,
    /// Its storage.
    pub storage: Arc<Storage>,
    /// Its consumer groups.
    pub groups: Arc<GroupStore>,
    /// HTTP client for peers.
    pub client: PeerClient,
    /// Acks waiting for their owner (those chunks are not copied again).
    pub pending: Arc<PendingAcks>,
}

impl Replicator {
    /// A replicator of `peer`'s chunks reporting into `status`.
    pub fn new(
        peer: Peer,
        local: Local,
        status: Arc<Mutex<LinkState>>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                peer,
                storage: local.storage,
                client: local.client,
            }),
            groups: local.groups,
            me: local.me,
            status,
            pending: local.pending,
            stop,
        }
    }

    /// Runs until the stop token is cancelled.
    pub async fn run(self) {
        let mut epoch = 0u64;
        let mut since = 0u64;
        let mut groups_since: Option<u64> = None;
        let mut targets: BTreeMap<Key, Target> = BTreeMap::new();
        let mut writers: HashMap<Key, CopyWriter> = HashMap::new();
        let mut report: Vec<Held> = Vec::new();
        let mut finishing: Vec<(Key, Arc<Chunk>)> = Vec::new();
        let mut backoff = FIRST_BACKOFF;
        let peer = self.shared.peer.clone();
        let url = format!("{}{}", peer.url, protocol::CHANGES_PATH);
        while !self.stop.is_cancelled() {
            let busy = targets.values().any(Target::needs_work);
            let req = ChangesRequest {
                from: self.me.to_string(),
                epoch,
                since,
                wait_ms: if busy {
                    0
                } else {
                    POLL_WAIT.as_millis() as u64
                },
                held: std::mem::take(&mut report),
                groups_since,
            };
            let body = serde_json::to_vec(&req).unwrap_or_default();
            let limit = Duration::from_millis(req.wait_ms) + Duration::from_secs(10);
            let answer = tokio::select! {
                () = self.stop.cancelled() => break,
                a = self.shared.client.json::<ChangesReply>(peer.name.as_str(), Method::POST, &url, body.into(), limit) => a,
            };
            let reply = match answer {
                Ok(r) => r,
                Err(e) => {
                    report = req.held; // send it again next time
                    self.link_down(&e);
                    tokio::select! {
                        () = self.stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = FIRST_BACKOFF;
            if reply.epoch != epoch {
                if epoch != 0 {
                    tracing::info!(peer = %peer.name, "peer restarted; resynchronising its chunk list");
                }
                targets.clear();
                epoch = reply.epoch;
            }
            since = reply.seq;
            group_sync::apply(&self.groups, &reply.groups).await;
            groups_since = reply.groups_seq;
            self.apply_deletions(&reply, &mut targets, &mut writers)
                .await;
            self.add_targets(&reply, &mut targets);
            let copied = self.copy_round(&mut targets, &mut writers).await;
            for c in &copied {
                report.push(Held {
                    category: c.key.0.to_string(),
                    chunk: c.key.1.to_string(),
                    written: c.local,
                    synced: c.synced,
                });
            }
            finishing.extend(
                copied
                    .iter()
                    .filter_map(|c| c.finished.clone().map(|ch| (c.key.clone(), ch))),
            );
            if reply.sync {
                self.sync_copies(&mut writers, &mut report).await;
            }
            report_finishing(&mut finishing, &mut report, reply.sync).await;
            self.link_up(&targets, &copied);
        }
    }

    fn link_down(&self, e: &PeerError) {
        let mut s = self.status.lock();
        if s.up {
            tracing::warn!(peer = %self.shared.peer.name, error = %e, "replication from peer interrupted; retrying");
        } else if s.last_error.is_none() {
            // Never reached yet (peers starting together): not a warning.
            tracing::info!(peer = %self.shared.peer.name, error = %e, "peer not reachable yet; retrying");
        }
        s.up = false;
        s.last_error = Some(e.to_string());
        if s.behind_since.is_none() && s.lag_bytes > 0 {
            s.behind_since = Some(Instant::now());
        }
    }

    fn link_up(&self, targets: &BTreeMap<Key, Target>, copied: &[Copied]) {
        let lag: u64 = targets
            .values()
            .map(|t| t.size.saturating_sub(t.local))
            .sum();
        let mut s = self.status.lock();
        if !s.up {
            tracing::info!(peer = %self.shared.peer.name, "replicating from peer");
        }
        s.up = true;
        s.last_contact = Some(Instant::now());
        s.last_error = None;
        s.lag_bytes = lag;
        if lag == 0 {
            s.behind_since = None;
        } else if s.behind_since.is_none() {
            s.behind_since = Some(Instant::now());
        }
        for c in copied {
            s.copied_bytes += c.bytes;
            s.copied_chunks += u64::from(c.sealed);
        }
    }

    async fn apply_deletions(
        &self,
        reply: &ChangesReply,
        targets: &mut BTreeMap<Key, Target>,
        writers: &mut HashMap<Key, CopyWriter>,
    ) {
        for d in &reply.deleted {
            let (Ok(cat), Ok(name)) = (Category::parse(&d.category), ChunkName::parse(&d.chunk))
            else {
                continue;
            };
            let key = (cat.clone(), name.clone());
            targets.remove(&key);
            writers.remove(&key);
            let Some(log) = self.shared.storage.category(&cat) else {
                continue;
            };
            let removed = tokio::task::spawn_blocking(move || log.remove_copy(&name)).await;
            match removed {
                Ok(Ok(true)) => {
                    tracing::info!(category = %d.category, chunk = %d.chunk, "deleted copy of a chunk its owner deleted");
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %crate::error_chain(&e), "could not delete copy of an acked chunk");
                }
                Err(e) => tracing::warn!(error = %e, "deletion task failed"),
            }
            self.pending.remove(&d.category, &d.chunk);
        }
    }

    fn add_targets(&self, reply: &ChangesReply, targets: &mut BTreeMap<Key, Target>) {
        for c in &reply.chunks {
            let (Ok(cat), Ok(name)) = (Category::parse(&c.category), ChunkName::parse(&c.chunk))
            else {
                tracing::warn!(peer = %self.shared.peer.name, chunk = %c.chunk, "ignoring invalid chunk name from peer");
                continue;
            };
            if name.owner() != &self.shared.peer.name
                || self.pending.contains(&c.category, &c.chunk)
            {
                continue;
            }
            let local = self
                .shared
                .storage
                .category(&cat)
                .and_then(|l| l.chunk(&name))
                .map(|ch| ch.state());
            if local.is_some_and(|s| (s.sealed || s.closed) && c.complete && s.end == c.size) {
                targets.remove(&(cat, name));
                continue; // already held complete
            }
            targets.insert(
                (cat, name),
                Target {
                    size: c.size,
                    complete: c.complete,
                    local: local.map_or(0, |s| s.end),
                },
            );
        }
    }

    /// Copies every chunk that needs it, a few at a time.
    async fn copy_round(
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
                tracing::warn!(peer = %self.shared.peer.name, chunk = %c.key.1, error = %e, "copying chunk failed; retrying");
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

    async fn sync_copies(&self, writers: &mut HashMap<Key, CopyWriter>, report: &mut Vec<Held>) {
        let open: Vec<(Key, CopyWriter)> = writers.drain().collect();
        let synced = tokio::task::spawn_blocking(move || {
            open.into_iter()
                .map(|(k, w)| {
                    if w.chunk().synced_upto() < w.end() {
                        if let Err(e) = w.sync() {
                            tracing::error!(error = %crate::error_chain(&e), "fdatasync of a chunk copy failed");
                        }
                    }
                    (k, w)
                })
                .collect::<Vec<_>>()
        })
        .await;
        match synced {
            Ok(list) => {
                for (k, w) in list {
                    report.push(Held {
                        category: k.0.to_string(),
                        chunk: k.1.to_string(),
                        written: w.end(),
                        synced: w.chunk().synced_upto(),
                    });
                    writers.insert(k, w);
                }
            }
            Err(e) => tracing::error!(error = %e, "sync task failed"),
        }
    }
}

/// Reports copies sealing in the background once their seal is on disk
/// (waiting for it when a write on the owner waits for synced replicas).
async fn report_finishing(
    finishing: &mut Vec<(Key, Arc<Chunk>)>,
    report: &mut Vec<Held>,
    sync_wanted: bool,
) {
    /// Longest wait for a background seal before polling again.
    const SEAL_WAIT: Duration = Duration::from_secs(5);
    let mut still = Vec::new();
    for (key, chunk) in finishing.drain(..) {
        let s = if sync_wanted {
            chunk.wait_sealed(SEAL_WAIT).await
        } else {
            chunk.state()
        };
        if s.sealed || chunk.failure().is_some() {
            report.push(Held {
                category: key.0.to_string(),
                chunk: key.1.to_string(),
                written: s.end,
                synced: chunk.synced_upto(),
            });
        } else {
            still.push((key, chunk));
        }
    }
    *finishing = still;
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

async fn copy_into(
    shared: &Shared,
    key: &Key,
    target: Target,
    writer: Option<CopyWriter>,
    out: &mut Copied,
) -> Result<(), String> {
    let (cat, name) = key.clone();
    let storage = Arc::clone(&shared.storage);
    let c2 = cat.clone();
    let log: Arc<CategoryLog> = blocking(move || storage.category_or_create(&c2)).await?;
    let mut writer = match writer {
        Some(w) => w,
        None => {
            if let Some(local) = log.chunk(&name) {
                let s = local.state();
                let diverged =
                    target.complete && (s.end > target.size || (s.sealed && s.end != target.size));
                if s.sealed && !diverged {
                    out.sealed = true;
                    out.local = s.end;
                    out.synced = s.end;
                    return Ok(());
                }
                if diverged {
                    tracing::warn!(chunk = %name, held = s.end, owner_size = target.size,
                        "copy differs from the owner's final chunk; copying it again");
                    let (l, n) = (Arc::clone(&log), name.clone());
                    blocking(move || l.remove_copy(&n)).await?;
                }
            }
            let (l, n) = (Arc::clone(&log), name.clone());
            blocking(move || l.copy_writer(&n)).await?
        }
    };
    loop {
        let url = format!(
            "{}{}?category={}&chunk={}&off={}&rec={}&max_size={}",
            shared.peer.url,
            protocol::FETCH_PATH,
            q(cat.as_str()),
            q(&name.to_string()),
            writer.end(),
            writer.records(),
            if target.complete {
                FETCH_MAX
            } else {
                TAIL_FETCH_MAX
            },
        );
        let answer = shared
            .client
            .request(
                shared.peer.name.as_str(),
                Method::GET,
                &url,
                bytes::Bytes::new(),
                FETCH_TIMEOUT,
            )
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                out.writer = Some(writer);
                return Err(e.to_string());
            }
        };
        let n = answer.header_u64(protocol::RECORDS_HEADER).unwrap_or(0);
        let size = answer.header_u64(protocol::SIZE_HEADER).unwrap_or(0);
        let complete = answer.header_u64(protocol::COMPLETE_HEADER) == Some(1);
        let (records, data) = match protocol::split_fetch_body(
            &answer.body,
            usize::try_from(n).unwrap_or(usize::MAX),
        ) {
            Ok(v) => v,
            Err(e) => {
                out.writer = Some(writer);
                return Err(e.to_string());
            }
        };
        if records.is_empty() {
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
                return Err(format!(
                    "owner's final size {size} is below the {held} bytes held here; copy dropped"
                ));
            }
            out.writer = Some(writer);
            return Ok(()); // caught up with what the owner has published
        }
        let len = data.len() as u64;
        let l = Arc::clone(&log);
        let appended = tokio::task::spawn_blocking(move || {
            let r = l.append_copy(&mut writer, &records, &data);
            (writer, r)
        })
        .await;
        let (w, r) = match appended {
            Ok(v) => v,
            Err(e) => return Err(format!("copy task failed: {e}")),
        };
        writer = w;
        if let Err(e) = r {
            out.writer = Some(writer);
            return Err(crate::error_chain(&e));
        }
        out.bytes += len;
        if !complete && writer.end() >= size {
            out.writer = Some(writer);
            return Ok(());
        }
    }
}
