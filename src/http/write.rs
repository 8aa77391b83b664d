//! `POST /write?category=C[&sync=1][&min_sync_replicas=K]`: validate the
//! body as it streams in (refusing oversize input without buffering it),
//! append it atomically, then wait for durability if asked.

use hyper::body::Incoming;
use hyper::{header, Request};

use super::error::ApiError;
use super::intake::{self, Received};
use super::params::{Query, RequestError};
use super::{json, AppState, HttpResponse};
use crate::cluster::progress::Need;
use crate::cluster::ClusterError;
use crate::storage::chunk::format::{BodyChecker, BodyError};

#[derive(serde::Serialize)]
struct WriteReply<'a> {
    chunk: &'a str,
    offset: u64,
    size: u64,
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
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let sync = query.opt_bool("sync")?.unwrap_or(false);
    let replicas = query.opt_u64("min_sync_replicas")?.unwrap_or(0);
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
    let cluster = state.cluster.get().filter(|_| replicas > 0);
    // Counted before appending, so replicas fetching these bytes already
    // know to fdatasync them.
    let _sync_waiter = cluster
        .filter(|_| durable)
        .map(|c| c.progress.sync_waiter());
    let appended = storage.append(&category, frames, body).await?;
    // The bytes are in the chunk now: free their memory before waiting.
    drop(reservation);
    if durable {
        storage
            .wait_durable(&appended)
            .await
            .map_err(|e| ApiError::from(e).with_written(true))?;
    }
    if let Some(cluster) = cluster {
        let name = appended.chunk.name().to_string();
        let end = appended.offset + appended.size;
        let k = usize::try_from(replicas).unwrap_or(usize::MAX);
        let timeout = state.config.startup.replication_timeout;
        cluster
            .progress
            .wait_for(
                &Need {
                    category: category.as_str(),
                    chunk: &name,
                    end,
                    replicas: k,
                    durable,
                },
                timeout,
                state.shutdown.cancelled(),
            )
            .await
            .map_err(|have| {
                ApiError::from(ClusterError::NotReplicated {
                    chunk: name.clone(),
                    offset: appended.offset,
                    have,
                    want: k,
                    durable,
                    timeout_ms: timeout.as_millis(),
                })
                .with_written(true)
            })?;
    }
    state.metrics.writes.inc();
    state.metrics.write_bytes.inc_by(appended.size);
    let name = appended.chunk.name().to_string();
    json(&WriteReply {
        chunk: &name,
        offset: appended.offset,
        size: appended.size,
    })
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
