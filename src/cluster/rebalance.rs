//! After a placement change (peer-list reload under a replication factor):
//! drop the copies this server holds of pairs it is no longer assigned —
//! but only once every holder of the pair under the placement holds the
//! chunk complete, with the same size, *and* means to keep it (its own
//! view of the placement assigns it the pair: `assigned` in
//! `/peer/held`). So a sealed chunk never has fewer than `R` copies: the
//! `R` holders have it before an excess copy goes, and two servers whose
//! views differ during a config rollout never drop on each other's word.
//!
//! New holders copying is the replicators' job (`replicator/feed.rs`),
//! except for the pairs of an owner that left the server list: its
//! replicator is gone, so their new holders copy its sealed chunks from
//! the servers that hold them ([`Cluster::take_over`]). This module also
//! counts the progress shown on `/peers` and the status page. Never
//! deletes an own chunk, an unsealed copy, or a tiered one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use tokio_util::sync::CancellationToken;

use super::fetch::{append, fetch, FetchFrom};
use super::link::q;
use super::protocol::{HeldCopy, HELD_PATH};
use super::{Cluster, ReplicationError};
use crate::names::{Category, ChunkName, ServerName};
use crate::storage::CategoryLog;

/// How often excess copies are looked for.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// Deadline of one `/peer/held` question.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Rebalance progress, for `/peers` and the status page.
#[derive(Debug, Default)]
pub struct Progress {
    /// Sealed copies held here of pairs assigned elsewhere (last scan).
    excess_copies: AtomicU64,
    /// Their bytes.
    excess_bytes: AtomicU64,
    /// Excess copies dropped since start.
    dropped_copies: AtomicU64,
    /// Their bytes.
    dropped_bytes: AtomicU64,
}

/// A snapshot of [`Progress`].
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProgressReport {
    /// Sealed copies held here of pairs assigned elsewhere, waiting for
    /// their holders to have them.
    pub excess_copies: u64,
    /// Their bytes.
    pub excess_bytes: u64,
    /// Excess copies dropped since start.
    pub dropped_copies: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
}

impl Progress {
    /// The counters now.
    #[must_use]
    pub fn report(&self) -> ProgressReport {
        ProgressReport {
            excess_copies: self.excess_copies.load(Ordering::Relaxed),
            excess_bytes: self.excess_bytes.load(Ordering::Relaxed),
            dropped_copies: self.dropped_copies.load(Ordering::Relaxed),
            dropped_bytes: self.dropped_bytes.load(Ordering::Relaxed),
        }
    }
}

/// (category, chunk, size) of the complete copies a holder keeps.
type Kept = HashSet<(String, String, u64)>;

/// One excess copy.
struct Excess {
    log: Arc<CategoryLog>,
    name: ChunkName,
    size: u64,
}

impl Cluster {
    /// Looks for excess copies every second and drops those whose holders
    /// have them, until stopped.
    pub(super) async fn drop_excess_copies(&self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(SCAN_EVERY) => {}
            }
            if self.assignment.factor().is_none() {
                continue; // every server holds every pair
            }
            let excess = self.excess_copies();
            let bytes = excess.values().flatten().map(|e| e.size).sum();
            let count = excess.values().map(Vec::len).sum::<usize>() as u64;
            self.rebalance.excess_copies.store(count, Ordering::Relaxed);
            self.rebalance.excess_bytes.store(bytes, Ordering::Relaxed);
            for (owner, copies) in excess {
                if stop.is_cancelled() {
                    return;
                }
                self.drop_held_elsewhere(&owner, copies).await;
            }
            for owner in self.departed_owners() {
                if stop.is_cancelled() {
                    return;
                }
                self.take_over(&owner).await;
            }
        }
    }

    /// Owners of chunks known here (announced or held) that are no longer
    /// in the server list.
    fn departed_owners(&self) -> BTreeSet<ServerName> {
        let mut out = self.catalog.owners();
        if let Some(run) = self.running.get() {
            for log in run.storage.logs() {
                out.extend(log.chunks().iter().map(|c| c.name().owner().clone()));
            }
        }
        out.retain(|o| o != self.me() && !self.assignment.is_member(o.as_str()));
        out
    }

    /// Copies the sealed chunks of a departed owner's pairs assigned here
    /// from the servers that hold them (the owner's replicator is gone
    /// with it): the placement gives its pairs `R` holders among the rest.
    async fn take_over(&self, owner: &ServerName) {
        let Some(run) = self.running.get() else {
            return;
        };
        let mut offers: BTreeMap<(String, String), (u64, Vec<String>)> = BTreeMap::new();
        for peer in self.peers() {
            for h in self
                .ask_held(peer.name.as_str(), owner.as_str())
                .await
                .unwrap_or_default()
            {
                if h.complete {
                    offers
                        .entry((h.category, h.chunk))
                        .or_insert((h.size, Vec::new()))
                        .1
                        .push(peer.name.to_string());
                }
            }
        }
        for ((category, chunk), (size, sources)) in offers {
            let (Ok(cat), Ok(name)) = (Category::parse(&category), ChunkName::parse(&chunk)) else {
                continue;
            };
            if !self.assignment.holds_here(&category, owner.as_str()) {
                continue;
            }
            let storage = Arc::clone(&run.storage);
            let c2 = cat.clone();
            let log = match super::blocking(move || storage.category_or_create(&c2)).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "cannot open a category to take over a departed owner's chunk");
                    continue;
                }
            };
            let held = log.chunk(&name).map(|c| c.state());
            if log.is_deleted(&name) || held.is_some_and(|s| s.sealed || s.closed) {
                continue;
            }
            for source in &sources {
                match self.copy_whole(&log, &cat, &name, size, source).await {
                    Ok(()) => {
                        tracing::info!(chunk = %name, %source, departed = %owner, "took over a copy of a departed owner's chunk");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(chunk = %name, %source, error = %crate::error_chain(&e), "taking over a departed owner's chunk failed; trying another holder");
                    }
                }
            }
        }
    }

    /// Copies `name` (sealed at `size` on `source`) into a local copy,
    /// continuing any partial one, and closes it (sealed in the background).
    async fn copy_whole(
        &self,
        log: &Arc<CategoryLog>,
        category: &Category,
        name: &ChunkName,
        size: u64,
        source: &str,
    ) -> Result<(), ReplicationError> {
        let Some(peer) = self.peer(source) else {
            return Ok(());
        };
        let (l, n) = (Arc::clone(log), name.clone());
        let mut writer = super::blocking(move || l.copy_writer(&n)).await?;
        let from = FetchFrom {
            peer: &peer,
            category,
            chunk: name,
            max_size: self.throttle.step(super::replicator::FETCH_MAX),
        };
        while writer.end() < size {
            let fetched = fetch(&self.client, from, &writer).await?;
            if fetched.records.is_empty() {
                break;
            }
            let len = fetched.data.len() as u64;
            writer = append(log, writer, fetched.records, fetched.data)
                .await
                .map_err(|failed| failed.error)?;
            self.throttle.pay(len).await;
        }
        if writer.end() != size {
            return Err(ReplicationError::Shrunk {
                size,
                held: writer.end(),
            });
        }
        log.finish_copy(writer);
        Ok(())
    }

    /// Sealed copies of pairs this server is not assigned, by owner.
    fn excess_copies(&self) -> BTreeMap<String, Vec<Excess>> {
        let mut out: BTreeMap<String, Vec<Excess>> = BTreeMap::new();
        let Some(run) = self.running.get() else {
            return out;
        };
        for log in run.storage.logs() {
            for chunk in log.chunks() {
                let owner = chunk.name().owner();
                let s = chunk.state();
                if owner == self.me()
                    || !s.sealed
                    || chunk.is_tiered()
                    || self
                        .assignment
                        .holds_here(log.category().as_str(), owner.as_str())
                {
                    continue;
                }
                out.entry(owner.to_string()).or_default().push(Excess {
                    log: Arc::clone(&log),
                    name: chunk.name().clone(),
                    size: s.end,
                });
            }
        }
        out
    }

    /// What `holder` holds of `owner`'s chunks (None when it cannot say).
    async fn ask_held(&self, holder: &str, owner: &str) -> Option<Vec<HeldCopy>> {
        let peer = self.peer(holder)?;
        let url = format!("{}{HELD_PATH}?owner={}", peer.url, q(owner));
        self.client
            .json(holder, Method::GET, &url, bytes::Bytes::new(), ASK_TIMEOUT)
            .await
            .map_err(|e| tracing::debug!(%holder, error = %e, "could not ask what a holder has"))
            .ok()
    }

    /// The complete copies of `owner`'s chunks `holder` keeps (None when it
    /// cannot say).
    async fn kept_by(&self, holder: &str, owner: &str) -> Option<Kept> {
        Some(
            self.ask_held(holder, owner)
                .await?
                .into_iter()
                .filter(|h| h.complete && h.assigned)
                .map(|h| (h.category, h.chunk, h.size))
                .collect(),
        )
    }

    /// Drops the copies of `owner`'s chunks that every holder has.
    async fn drop_held_elsewhere(&self, owner: &str, copies: Vec<Excess>) {
        let mut answers: HashMap<String, Option<Kept>> = HashMap::new();
        for copy in copies {
            let category = copy.log.category().clone();
            let holders = self.assignment.holders(category.as_str(), owner);
            let mut all_have = !holders.is_empty();
            for h in &holders {
                if !all_have {
                    break;
                }
                all_have = if h == owner {
                    self.owner_has(&category, &copy.name, copy.size)
                } else {
                    if !answers.contains_key(h) {
                        let a = self.kept_by(h, owner).await;
                        answers.insert(h.clone(), a);
                    }
                    answers.get(h).and_then(Option::as_ref).is_some_and(|set| {
                        set.contains(&(category.to_string(), copy.name.to_string(), copy.size))
                    })
                };
            }
            if !all_have {
                continue;
            }
            let (log, name) = (Arc::clone(&copy.log), copy.name.clone());
            match super::blocking(move || log.remove_copy(&name)).await {
                Ok(true) => {
                    // This scan counted it as excess: no underflow.
                    self.rebalance.excess_copies.fetch_sub(1, Ordering::Relaxed);
                    self.rebalance
                        .excess_bytes
                        .fetch_sub(copy.size, Ordering::Relaxed);
                    self.rebalance
                        .dropped_copies
                        .fetch_add(1, Ordering::Relaxed);
                    self.rebalance
                        .dropped_bytes
                        .fetch_add(copy.size, Ordering::Relaxed);
                    tracing::info!(category = %category, chunk = %copy.name, holders = ?holders,
                        "dropped a copy this server is no longer assigned: its holders have it");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(chunk = %copy.name, error = %crate::error_chain(&e), "could not drop an excess copy");
                }
            }
        }
    }

    /// Whether the owner has `name` sealed at `size`: it announced so and
    /// has not deleted it (a tombstone removes it from the catalog).
    fn owner_has(&self, category: &Category, name: &ChunkName, size: u64) -> bool {
        self.is_peer(name.owner())
            && self
                .catalog
                .get(category, name)
                .is_some_and(|a| a.complete && a.size == size)
    }
}
