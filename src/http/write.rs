//! `POST /write?category=C[&sync=1][&min_sync_replicas=K][&producer=P&seq=N[&probe=1]]`:
//! validate the body as it streams in (refusing oversize input without
//! buffering it), append it atomically (once per producer and sequence
//! number, for an idempotent producer), then wait for durability if asked.
//! With `probe=1` nothing is stored: the answer says whether this server
//! holds the tagged batch (its position) or not (`404`).

use std::time::Instant;

use hyper::body::Incoming;
use hyper::{header, Request};

use super::error::ApiError;
use super::intake::{self, Received};
use super::params::{Query, RequestError};
use super::{json, AppState, HttpResponse};
use crate::cluster::progress::Need;
use crate::cluster::ClusterError;
use crate::names::Category;
use crate::storage::chunk::format::{BodyChecker, BodyError};
use crate::storage::{Appended, Duplicate, TaggedAppend};

#[derive(serde::Serialize)]
struct WriteReply<'a> {
    chunk: &'a str,
    offset: u64,
    size: u64,
    /// Present (`true`) when an idempotent producer's batch was stored
    /// before: the position is the original's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

pub(super) async fn write(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    // Errors say whether the body was appended (`chunkbus-written`); any
    // error not marked otherwise happened before anything was stored.
    write_marked(state, req).await.map_err(|e| match e.written {
        Some(_) => e,
        None => e.with_written(false),
    })
}

async fn write_marked(state: &AppState, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let sync = query.opt_bool("sync")?.unwrap_or(false);
    let replicas = query.opt_u64("min_sync_replicas")?.unwrap_or(0);
    let tag = query.producer_tag()?;
    // Readiness first: until recovery ends the peer count is not known yet
    // (a restarting node would otherwise refuse `min_sync_replicas` with a
    // permanent-looking 400 instead of the retryable 503).
    let storage = state.storage()?;
    let cluster = state.cluster.get();
    let peers = cluster.map_or(0, |c| c.peer_count()) as u64;
    if replicas > peers {
        return Err(RequestError::TooManyReplicas {
            asked: replicas,
            peers,
        }
        .into());
    }
    if let Some(factor) = cluster.and_then(|c| c.assignment.factor()) {
        let max = factor.saturating_sub(1) as u64;
        if replicas > max {
            return Err(RequestError::ReplicasAboveFactor {
                asked: replicas,
                factor: factor as u64,
                max,
            }
            .into());
        }
    }
    if query.opt_bool("probe")?.unwrap_or(false) {
        // Asks only whether the batch is held here; the body is not read.
        let tag = tag.ok_or(RequestError::BadProducerTag(
            "probe without producer and seq",
        ))?;
        let durable = sync || storage.fsync_every_write();
        let found = storage.find_tagged(&category, tag).await?;
        return answer_duplicate(state, &category, found, durable, replicas).await;
    }
    let limits = &state.config.startup.limits;
    if let Some(len) = content_length(&req)? {
        if len > limits.max_batch_size {
            return Err(BodyError::BodyTooLarge {
                len,
                max: limits.max_batch_size,
            }
            .into());
        }
    }
    // A new category past `max_categories` is refused before the body is read.
    storage.admits(&category)?;
    // Memory is charged as the body arrives (a client that announces a
    // body and sends nothing holds none); under overload bodies wait for
    // the budget and TCP pushes back instead of the process growing.
    let mut checker = BodyChecker::new(limits.max_message_size, limits.max_batch_size);
    let Received {
        frames,
        reservation,
    } = intake::receive(
        state,
        req.into_body(),
        limits.max_batch_size,
        "write body",
        |piece| checker.feed(piece).map_err(ApiError::from),
    )
    .await?;
    let body = checker.finish()?;
    let durable = sync || storage.fsync_every_write();
    // Counted before appending, so replicas fetching these bytes already
    // know to fdatasync them.
    let _sync_waiter = state
        .cluster
        .get()
        .filter(|_| replicas > 0 && durable)
        .map(|c| c.progress.sync_waiter());
    let appending = Instant::now();
    let appended = match tag {
        None => storage.append(&category, frames, body).await?,
        Some(tag) => match storage.append_tagged(&category, frames, body, tag).await? {
            TaggedAppend::Stored(a) => a,
            TaggedAppend::Duplicate(d) => {
                drop(reservation);
                return answer_duplicate(state, &category, d, durable, replicas).await;
            }
        },
    };
    state
        .metrics
        .append_seconds
        .observe(appending.elapsed().as_secs_f64());
    // The bytes are in the chunk now: free their memory before waiting.
    drop(reservation);
    let name = appended.chunk.name().to_string();
    let end = appended.offset + appended.size;
    if durable {
        storage
            .wait_durable(&appended)
            .await
            .map_err(|e| ApiError::from(e).with_written(true))?;
    }
    wait_for_replicas(
        state,
        &category,
        &name,
        appended.offset,
        end,
        replicas,
        durable,
    )
    .await?;
    state.metrics.writes.inc();
    state.metrics.write_bytes.inc_by(appended.size);
    state
        .metrics
        .write_seconds
        .observe(started.elapsed().as_secs_f64());
    json(&WriteReply {
        chunk: &name,
        offset: appended.offset,
        size: appended.size,
        duplicate: false,
    })
}

/// The answer to a repeat of an idempotent producer's stored batch: the
/// original's position, once it is as durable and replicated as this
/// request asks (the original's request may have failed before that).
/// An original in another server's chunk (a copy here, found by a
/// producer whose server is unreachable) counts this copy as its one
/// replica: made durable here for `sync=1`, enough for
/// `min_sync_replicas` up to 1; above that only the owner can count, and
/// the answer is `503` (stored). An original whose chunk is gone (acked
/// and deleted) was durable long ago: no waits.
async fn answer_duplicate(
    state: &AppState,
    category: &Category,
    d: Duplicate,
    durable: bool,
    replicas: u64,
) -> Result<HttpResponse, ApiError> {
    let Duplicate { position, chunk } = d;
    let name = position.chunk.to_string();
    let end = position.offset + position.size;
    let storage = state.storage()?;
    if let Some(chunk) = chunk {
        let own = position.chunk.owner() == storage.server();
        if !own && replicas > 1 {
            return Err(ApiError::from(ClusterError::NotReplicated {
                chunk: name,
                offset: position.offset,
                have: 1,
                want: usize::try_from(replicas).unwrap_or(usize::MAX),
                durable,
                timeout_ms: 0,
            })
            .with_written(true));
        }
        // Counted before waiting, so replicas fetching these bytes know to
        // fdatasync them.
        let _sync_waiter = state
            .cluster
            .get()
            .filter(|_| own && replicas > 0 && durable)
            .map(|c| c.progress.sync_waiter());
        if durable {
            let appended = Appended {
                chunk,
                offset: position.offset,
                size: position.size,
            };
            storage
                .wait_durable(&appended)
                .await
                .map_err(|e| ApiError::from(e).with_written(true))?;
        }
        if own {
            wait_for_replicas(
                state,
                category,
                &name,
                position.offset,
                end,
                replicas,
                durable,
            )
            .await?;
        }
    }
    state.metrics.duplicate_writes.inc();
    json(&WriteReply {
        chunk: &name,
        offset: position.offset,
        size: position.size,
        duplicate: true,
    })
}

/// Waits until `replicas` peers hold the chunk `name` up to `end` (and
/// have synced it, if `durable`); nothing to wait for when `replicas` is 0.
async fn wait_for_replicas(
    state: &AppState,
    category: &Category,
    name: &str,
    offset: u64,
    end: u64,
    replicas: u64,
    durable: bool,
) -> Result<(), ApiError> {
    let Some(cluster) = state.cluster.get().filter(|_| replicas > 0) else {
        return Ok(());
    };
    let timeout = state.config.startup.replication_timeout;
    cluster
        .wait_replicated(
            &Need {
                category: category.as_str(),
                chunk: name,
                end,
                replicas: usize::try_from(replicas).unwrap_or(usize::MAX),
                durable,
            },
            offset,
            timeout,
            state.shutdown.cancelled(),
        )
        .await
        .map_err(|e| ApiError::from(e).with_written(true))
}

fn content_length(req: &Request<Incoming>) -> Result<Option<u64>, RequestError> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(RequestError::BadContentLength)
        })
        .transpose()
}
