//! The replicator's side of the owner's change feed (`POST /peer/changes`,
//! `docs/peers.md`): build the poll (with what this server now holds), send
//! it, and turn the answer into work — a new owner epoch resets the chunk
//! list, tombstones delete local copies, changed chunks become copy
//! targets, group positions are applied.
//!
//! Never fetches chunk bytes (that is `copy.rs`) and never touches
//! this server's own chunks.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hyper::Method;

use super::{Key, Replicator, Target, POLL_WAIT};
use crate::cluster::catalog::Announced;
use crate::cluster::group_sync;
use crate::cluster::link::PeerError;
use crate::cluster::protocol::{self, ChangesReply, ChangesRequest, Held};
use crate::names::{Category, ChunkName};
use crate::storage::CopyWriter;

/// How much longer than its wait a poll may take to be answered.
const POLL_SLACK: Duration = Duration::from_secs(10);

/// Where this server is in one owner's change feed.
#[derive(Debug, Default)]
pub(super) struct Cursor {
    /// The owner's process run the positions below refer to (0: none yet).
    epoch: u64,
    /// Last change sequence number seen.
    since: u64,
    /// Last consumer-group event number seen (None: ask for a snapshot).
    groups_since: Option<u64>,
}

impl Cursor {
    /// Forgets the owner's epoch, so that the next poll gets its full
    /// state (after a placement change).
    pub(super) fn restart(&mut self) {
        self.epoch = 0;
        self.since = 0;
    }
}

impl Replicator {
    /// The next poll: waits for news unless copies are still `busy`.
    pub(super) fn changes_request(
        &self,
        cursor: &Cursor,
        busy: bool,
        held: Vec<Held>,
    ) -> ChangesRequest {
        ChangesRequest {
            from: self.me.to_string(),
            epoch: cursor.epoch,
            since: cursor.since,
            wait_ms: if busy {
                0
            } else {
                u64::try_from(POLL_WAIT.as_millis()).unwrap_or(u64::MAX)
            },
            held,
            groups_since: cursor.groups_since,
        }
    }

    /// Sends one poll and waits for its answer.
    pub(super) async fn poll(&self, req: &ChangesRequest) -> Result<ChangesReply, PeerError> {
        let peer = &self.shared.peer;
        let url = format!("{}{}", peer.url, protocol::CHANGES_PATH);
        let body = serde_json::to_vec(req).unwrap_or_default();
        let limit = Duration::from_millis(req.wait_ms) + POLL_SLACK;
        self.shared
            .client
            .json::<ChangesReply>(peer.name.as_str(), Method::POST, &url, body.into(), limit)
            .await
    }

    /// Applies an answer: epoch and positions, group events, deletions,
    /// and the chunks to copy.
    pub(super) async fn apply(
        &self,
        reply: &ChangesReply,
        cursor: &mut Cursor,
        targets: &mut BTreeMap<Key, Target>,
        writers: &mut HashMap<Key, CopyWriter>,
    ) {
        let full = reply.epoch != cursor.epoch;
        if full {
            if cursor.epoch != 0 {
                tracing::info!(peer = %self.shared.peer.name, "peer restarted; resynchronising its chunk list");
            }
            targets.clear();
            cursor.epoch = reply.epoch;
        }
        self.record_catalog(reply, full);
        cursor.since = reply.seq;
        group_sync::apply(&self.groups, &reply.groups).await;
        cursor.groups_since = reply.groups_seq;
        self.apply_deletions(reply, targets, writers).await;
        self.add_targets(reply, targets);
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
            log.note_deleted_copy(&name);
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

    /// Records the owner's announced chunks (all of them, held here or
    /// not) and its deletions in the catalog.
    fn record_catalog(&self, reply: &ChangesReply, full: bool) {
        let owner = &self.shared.peer.name;
        let announced: Vec<_> = reply
            .chunks
            .iter()
            .filter_map(|c| {
                let cat = Category::parse(&c.category).ok()?;
                let name = ChunkName::parse(&c.chunk).ok()?;
                (name.owner() == owner).then_some((
                    cat,
                    name,
                    Announced {
                        size: c.size,
                        complete: c.complete,
                    },
                ))
            })
            .collect();
        if full {
            self.catalog.replace_owner(owner, &announced);
        } else {
            self.catalog.update(&announced);
        }
        for d in &reply.deleted {
            if let (Ok(cat), Ok(name)) = (Category::parse(&d.category), ChunkName::parse(&d.chunk))
            {
                self.catalog.remove(&cat, &name);
            }
        }
    }

    fn add_targets(&self, reply: &ChangesReply, targets: &mut BTreeMap<Key, Target>) {
        for c in &reply.chunks {
            let (Ok(cat), Ok(name)) = (Category::parse(&c.category), ChunkName::parse(&c.chunk))
            else {
                tracing::warn!(peer = %self.shared.peer.name, chunk = %c.chunk, "ignoring invalid chunk name from peer");
                continue;
            };
            if name.owner() != &self.shared.peer.name {
                continue;
            }
            // Before the pending check: an acked chunk was announced too.
            if let Some(log) = self.shared.storage.category(&cat) {
                log.note_announced(&name);
            }
            if self.pending.contains(&c.category, &c.chunk) {
                continue;
            }
            let local = self
                .shared
                .storage
                .category(&cat)
                .and_then(|l| l.chunk(&name))
                .map(|ch| ch.state());
            let partial_here = local.is_some_and(|s| !s.sealed && !s.closed);
            if !partial_here
                && !self
                    .assignment
                    .holds_here(&c.category, name.owner().as_str())
            {
                // Another server's pair under the replication factor. A
                // copy begun before the placement changed is finished, so
                // that it counts until the new holders have the chunk.
                continue;
            }
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
}
