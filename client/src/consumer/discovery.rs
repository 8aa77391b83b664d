//! Finding what to read: a group's stored positions, the category's chunk
//! owners (once without `follow`, periodically with it) with one
//! [`OwnerReader`] each, listing with retries, and the backoff after a
//! failure handed to the application.
//!
//! Never reads a chunk's messages (that is `reader.rs`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::acker::ReadStarts;
use super::reader::OwnerReader;
use super::{Batch, ConsumerConfig, Position, Positions};
use crate::client::{ChunkInfo, Client};
use crate::error::{ClientError, ConsumerError};
use crate::holders::Directory;
use crate::names::parse_chunk_name;
use crate::stats::{Counters, StatsEvent};

/// Finds owners (once without `follow`, periodically with it) and runs
/// one reader per owner.
pub(super) async fn discover(
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

pub(super) async fn list_retrying(
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
pub(super) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(25))
    }
}

impl Backoff {
    pub(super) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}
