//! Retention: deletes sealed chunks that are no longer needed, once a
//! second: with `retention = "acked"` those every registered consumer group
//! of the category has acked to their end; with `retention_hours` those last
//! written longer ago; with `retention_bytes` the oldest while a category
//! holds more. Only durably sealed chunks are ever deleted; every deletion
//! is logged and counted. In a cluster each server applies retention to the
//! chunks it owns only (byte bounds count those); its deletions reach the
//! replicas as tombstones, so copies follow their owner's retention.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::config::{RetentionConfig, RetentionMode};
use crate::groups::GroupStore;
use crate::names::{ChunkName, GroupName};
use crate::storage::chunk::Chunk;
use crate::storage::{CategoryLog, Storage};

/// How often retention looks for chunks to delete.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Chunks deleted by retention since start (for metrics).
pub static DELETED_CHUNKS: AtomicU64 = AtomicU64::new(0);

/// Whether any retention rule is configured.
#[must_use]
pub fn enabled(cfg: &RetentionConfig) -> bool {
    cfg.mode == RetentionMode::Acked || cfg.max_age.is_some() || cfg.max_bytes.is_some()
}

/// Runs sweeps every [`PERIOD`] until `token` is cancelled, with the
/// settings `cfg` holds at each sweep (they change on config reload; while
/// no rule is set, nothing is swept).
pub async fn run(
    storage: Arc<Storage>,
    groups: Arc<GroupStore>,
    cfg: tokio::sync::watch::Receiver<RetentionConfig>,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let c = cfg.borrow().clone();
        if !enabled(&c) {
            continue;
        }
        let (s, g) = (Arc::clone(&storage), Arc::clone(&groups));
        if let Err(e) = tokio::task::spawn_blocking(move || sweep(&s, &g, &c)).await {
            tracing::error!(error = %e, "retention sweep failed");
        }
    }
}

/// One pass over every category; returns how many chunks were deleted.
pub fn sweep(storage: &Storage, groups: &GroupStore, cfg: &RetentionConfig) -> usize {
    let now = SystemTime::now();
    let mut deleted = 0;
    let own_only = storage.is_cluster().then(|| storage.server());
    for log in storage.logs() {
        deleted += sweep_category(&log, groups, cfg, now, own_only);
    }
    deleted
}

fn sweep_category(
    log: &CategoryLog,
    groups: &GroupStore,
    cfg: &RetentionConfig,
    now: SystemTime,
    own_only: Option<&crate::names::ServerName>,
) -> usize {
    // Write times matter only to the age and byte bounds: stat the files
    // only then (acked-only retention needs no I/O per sweep).
    let timed = cfg.max_age.is_some() || cfg.max_bytes.is_some();
    let mut chunks: Vec<(Arc<Chunk>, SystemTime)> = log
        .chunks()
        .into_iter()
        .filter(|c| own_only.is_none_or(|me| c.name().owner() == me))
        .map(|c| {
            let written = if timed {
                std::fs::metadata(c.data_path())
                    .and_then(|m| m.modified())
                    .unwrap_or(now)
            } else {
                now
            };
            (c, written)
        })
        .collect();
    let total: u64 = chunks.iter().map(|(c, _)| c.state().end).sum();
    let mut excess = cfg.max_bytes.map_or(0, |max| total.saturating_sub(max));
    // Oldest first, so the byte bound removes the oldest data.
    chunks.sort_by_key(|(_, t)| *t);
    let registered = groups.groups(log.category());
    let mut deleted = 0;
    for (chunk, written) in chunks {
        let state = chunk.state();
        if !state.sealed {
            continue;
        }
        let name = chunk.name();
        let reason = if cfg.mode == RetentionMode::Acked
            && !registered.is_empty()
            && unfinished_group(&registered, name, state.end).is_none()
        {
            "acked by every consumer group"
        } else if cfg
            .max_age
            .is_some_and(|age| now.duration_since(written).unwrap_or_default() > age)
        {
            "older than retention_hours"
        } else if excess > 0 {
            "category above retention_bytes"
        } else {
            continue;
        };
        match log.ack_chunk(name, state.end) {
            Ok(()) => {
                excess = excess.saturating_sub(state.end);
                deleted += 1;
                DELETED_CHUNKS.fetch_add(1, Ordering::Relaxed);
                tracing::info!(category = %log.category(), chunk = %name, size = state.end, reason, "retention deleted chunk");
            }
            Err(e) => {
                tracing::warn!(category = %log.category(), chunk = %name, error = %crate::error_chain(&e), "retention could not delete chunk");
            }
        }
    }
    deleted
}

/// The first group (with its position) that has not acked `chunk` to `end`.
#[must_use]
pub fn unfinished_group<'a>(
    groups: &'a [(GroupName, std::collections::BTreeMap<ChunkName, u64>)],
    chunk: &ChunkName,
    end: u64,
) -> Option<(&'a GroupName, u64)> {
    groups.iter().find_map(|(g, positions)| {
        let at = positions.get(chunk).copied().unwrap_or(0);
        (at < end).then_some((g, at))
    })
}
