//! `GET /ack?category=C&chunk=NAME&size=S`: chukcha's chunk ack. A sealed
//! chunk acked with `S` ≥ its size is deleted — in a cluster on every
//! server: the owner deletes it and its tombstone reaches the replicas; an
//! ack received by a replica is forwarded to the owner (stored and retried
//! while the owner is unreachable).

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;

use super::error::ApiError;
use super::params::Query;
use super::{ok_line, AppState, HttpResponse, ServiceError};
use crate::cluster::acks::PendingAck;
use crate::cluster::{BlockingError, Cluster, ClusterError, Forwarded};
use crate::config::RetentionMode;
use crate::groups::GroupError;
use crate::names::{Category, ChunkName};
use crate::storage::{CategoryLog, Storage, StorageError};

/// How long an ack waits for a closed chunk's seal to reach the disk.
const SEAL_WAIT: Duration = Duration::from_secs(10);

pub(super) async fn ack_chunk(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let name = query.chunk()?;
    let size = query.u64("size")?;
    let storage = state.storage()?;
    match state.cluster.get() {
        Some(cluster) if name.owner() != storage.server() => {
            let held = storage
                .category(&category)
                .and_then(|log| log.chunk(&name))
                .is_some_and(|c| cluster.answers_locally(&category, &c));
            match cluster.catalog.get(&category, &name) {
                Some(announced) if !held && cluster.assignment.factor().is_some() => {
                    ack_elsewhere(cluster, &category, &name, size, announced).await?;
                }
                _ => ack_copy(cluster, storage, &category, &name, size).await?,
            }
        }
        _ => ack_local(state, storage, &category, &name, size).await?,
    }
    Ok(ok_line())
}

/// Checks an ack against the chunk held here: known, sealed (waiting
/// briefly for a closed chunk's seal), `size` at least its final size.
async fn check_ack(
    storage: &Storage,
    category: &Category,
    name: &ChunkName,
    size: u64,
) -> Result<(Arc<CategoryLog>, u64), ApiError> {
    let unknown = || storage.missing_chunk(category, name);
    let log = storage.category(category).ok_or_else(unknown)?;
    let chunk = log.chunk(name).ok_or_else(unknown)?;
    // Listed as complete as soon as it is closed; delete only once the seal
    // is on disk.
    let sealed = chunk.wait_sealed(SEAL_WAIT).await;
    check_final(name, sealed.sealed, sealed.end, size)?;
    Ok((log, sealed.end))
}

/// A chukcha ack of `size` may delete `name` only once the chunk is final
/// (`sealed`, or announced complete) and `size` covers its `end`.
/// Validation (400) before conflicts (409), as everywhere.
fn check_final(name: &ChunkName, sealed: bool, end: u64, size: u64) -> Result<(), ApiError> {
    if !sealed {
        return Err(StorageError::NotSealed {
            name: name.to_string(),
        }
        .into());
    }
    if size < end {
        return Err(StorageError::AckTooSmall {
            name: name.to_string(),
            size,
            final_size: end,
        }
        .into());
    }
    Ok(())
}

/// Acks a chunk this server owns (or any chunk on a single node): deletes
/// it here; in a cluster its tombstone tells the replicas.
pub(super) async fn ack_local(
    state: &AppState,
    storage: &Storage,
    category: &Category,
    name: &ChunkName,
    size: u64,
) -> Result<(), ApiError> {
    let (log, end) = check_ack(storage, category, name, size).await?;
    if state.live.retention().mode == RetentionMode::Acked {
        let groups = state.groups()?.groups(category);
        if let Some((g, at)) = crate::retention::unfinished_group(&groups, name, end) {
            return Err(GroupError::Unfinished {
                group: g.to_string(),
                chunk: name.to_string(),
                at,
                end,
            }
            .into());
        }
    }
    // Unlinking a large file and syncing the directory take milliseconds
    // (ext4 frees every extent): never on an async worker, where they would
    // stall every request that worker serves. The replica progress is
    // forgotten in the same task, so a request dropped meanwhile cannot
    // leave it behind.
    let n = name.clone();
    let cluster = state.cluster.get().map(Arc::clone);
    let c = category.clone();
    crate::cluster::blocking(move || {
        log.ack_chunk(&n, size)?;
        if let Some(cluster) = cluster {
            cluster.progress.forget(c.as_str(), &n.to_string());
        }
        Ok(())
    })
    .await
    .map_err(|e| match e {
        BlockingError::Storage(e) => ApiError::from(e),
        BlockingError::Join(source) => ApiError::from(ServiceError::TaskFailed {
            what: "deleting the acked chunk",
            source,
        }),
    })?;
    Ok(())
}

/// Acks a chunk held elsewhere (under a replication factor), checked
/// against what its owner announced, then forwarded to the owner like
/// [`ack_copy`] (which checks it again, and whose deletion reaches every
/// holder).
async fn ack_elsewhere(
    cluster: &Cluster,
    category: &Category,
    name: &ChunkName,
    size: u64,
    announced: crate::cluster::catalog::Announced,
) -> Result<(), ApiError> {
    check_final(name, announced.complete, announced.size, size)?;
    let forwarded = cluster
        .forward_ack(PendingAck {
            category: category.to_string(),
            chunk: name.to_string(),
            size,
        })
        .await?;
    if matches!(forwarded, Forwarded::Queued) {
        tracing::info!(chunk = %name, owner = %name.owner(), "owner unreachable; ack stored and forwarded when it returns");
    }
    cluster.catalog.remove(category, name);
    Ok(())
}

/// Acks a copy of a peer's chunk: the owner applies it (and tells every
/// replica); if the owner is unreachable the ack is stored and forwarded
/// when it returns. The copy here is deleted either way.
async fn ack_copy(
    cluster: &Cluster,
    storage: &Storage,
    category: &Category,
    name: &ChunkName,
    size: u64,
) -> Result<(), ApiError> {
    let (log, _) = check_ack(storage, category, name, size).await?;
    let forwarded = cluster
        .forward_ack(PendingAck {
            category: category.to_string(),
            chunk: name.to_string(),
            size,
        })
        .await?;
    if matches!(forwarded, Forwarded::Queued) {
        tracing::info!(chunk = %name, owner = %name.owner(), "owner unreachable; ack stored and forwarded when it returns");
    }
    log.note_deleted_copy(name);
    let n = name.clone();
    crate::cluster::blocking(move || log.remove_copy(&n))
        .await
        .map_err(ClusterError::RemoveCopy)?;
    Ok(())
}
