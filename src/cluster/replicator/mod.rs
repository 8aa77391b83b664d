//! The replica side: one task per peer pulls that peer's own chunks.
//!
//! Loop: long-poll the owner's change feed (reporting what this server now
//! holds; `feed.rs`), then fetch the bytes of every changed chunk this server
//! lacks — sealed chunks completely, the open one up to its current end —
//! verify them against the owner's index records and append them to local
//! copies (`copy.rs`). When a write on the owner waits for replicas to
//! fdatasync, the poll answer says so and the copies are synced before the
//! next report.
//!
//! This module runs the loop and keeps the link's status; it never copies
//! this server's own chunks and never writes chunk files itself (that goes
//! through `storage`).

mod copy;
mod feed;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::acks::PendingAcks;
use super::assignment::Assignment;
use super::catalog::Catalog;
use super::link::{PeerClient, PeerError};
use super::protocol::{Held, KafkaAddr};
use super::Peer;
use crate::groups::GroupStore;
use crate::names::{Category, ChunkName, ServerName};
use crate::storage::chunk::Chunk;
use crate::storage::{CopyWriter, Storage};
use copy::Copied;
use feed::Cursor;

/// How long a changes poll waits for news when this server is caught up.
pub const POLL_WAIT: Duration = Duration::from_secs(20);
/// Most bytes asked for in one fetch of a sealed chunk (catch-up).
pub const FETCH_MAX: u64 = 8 << 20;
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
    /// The peer's advertised Kafka address, as its last answer said (kept
    /// while it is down; None: no Kafka listener, or never reached).
    #[serde(skip)]
    pub kafka: Option<KafkaAddr>,
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
    throttle: Arc<super::throttle::Throttle>,
}

/// Pulls one peer's chunks until stopped.
pub struct Replicator {
    shared: Arc<Shared>,
    groups: Arc<GroupStore>,
    me: ServerName,
    status: Arc<Mutex<LinkState>>,
    pending: Arc<PendingAcks>,
    assignment: Arc<Assignment>,
    catalog: Arc<Catalog>,
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
    /// Which pairs this server copies.
    pub assignment: Arc<Assignment>,
    /// Where every announced chunk is recorded, held here or not.
    pub catalog: Arc<Catalog>,
    /// Paces copying of sealed chunks.
    pub throttle: Arc<super::throttle::Throttle>,
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
                throttle: local.throttle,
            }),
            groups: local.groups,
            me: local.me,
            status,
            pending: local.pending,
            assignment: local.assignment,
            catalog: local.catalog,
            stop,
        }
    }

    /// Runs until the stop token is cancelled.
    pub async fn run(self) {
        let mut cursor = Cursor::default();
        let mut targets: BTreeMap<Key, Target> = BTreeMap::new();
        let mut writers: HashMap<Key, CopyWriter> = HashMap::new();
        let mut report: Vec<Held> = Vec::new();
        let mut finishing: Vec<(Key, Arc<Chunk>)> = Vec::new();
        let mut backoff = FIRST_BACKOFF;
        let mut placement = self.assignment.subscribe();
        while !self.stop.is_cancelled() {
            if placement.has_changed().unwrap_or(false) {
                placement.borrow_and_update();
                // Pairs may have moved here: ask for the full state again
                // (copies continue from what is held; nothing is fetched
                // twice).
                cursor.restart();
            }
            let busy = targets.values().any(Target::needs_work);
            let req = self.changes_request(&cursor, busy, std::mem::take(&mut report));
            let answer = tokio::select! {
                () = self.stop.cancelled() => break,
                a = self.poll(&req) => Some(a),
                _ = placement.changed() => None,
            };
            let Some(answer) = answer else {
                report = req.held; // the poll was dropped: report again
                cursor.restart();
                placement.borrow_and_update();
                continue;
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
            self.status.lock().kafka.clone_from(&reply.kafka);
            self.apply(&reply, &mut cursor, &mut targets, &mut writers)
                .await;
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
