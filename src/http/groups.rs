//! Consumer groups: `POST /ack?category=C&consumer=G&chunk=NAME&off=O`
//! (durable, forward-only positions; with `&from=F` a compare-and-set:
//! accepted only when the group is at `F` in that chunk), `GET /consumers?category=C`
//! (positions and lag), `DELETE /consumers?category=C&consumer=G`.

use hyper::body::Incoming;
use hyper::Request;

use super::error::ApiError;
use super::params::{Query, RequestError};
use super::{json, ok_line, AppState, HttpResponse};
use crate::groups::Acked;
use crate::names::{Category, ChunkName, GroupName};
use crate::storage::StorageError;

/// One group in `GET /consumers`.
#[derive(serde::Serialize)]
struct GroupStatus {
    consumer: String,
    positions: Vec<PositionOut>,
    /// Bytes of chunks held here that the group has not acked.
    lag_bytes: u64,
    /// Messages in those bytes.
    lag_messages: u64,
}

#[derive(serde::Serialize)]
struct PositionOut {
    chunk: String,
    offset: u64,
}

fn group_param(query: &Query<'_>) -> Result<GroupName, ApiError> {
    Ok(GroupName::parse(query.required("consumer")?)?)
}

pub(super) async fn ack(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let group = group_param(&query)?;
    let name = query.chunk()?;
    let off = query.u64("off")?;
    let from = query.opt_u64("from")?;
    if let Some(from) = from.filter(|&f| f > off) {
        return Err(RequestError::AckFromPastOff { from, off }.into());
    }
    let storage = state.storage()?;
    state.groups()?;
    let local = storage.category(&category).and_then(|log| log.chunk(&name));
    let elsewhere = state
        .cluster
        .get()
        .filter(|c| c.assignment.factor().is_some())
        .and_then(|c| c.catalog.get(&category, &name));
    let chunk = match (local, elsewhere) {
        (Some(chunk), _) => chunk,
        (None, Some(announced)) => {
            // Held elsewhere: the position is checked against the size
            // its owner announced (a final size bounds it; the message
            // boundary is known only to the holders).
            if announced.complete && off > announced.size {
                return Err(StorageError::OffsetBeyondEnd {
                    name: name.to_string(),
                    off,
                    size: announced.size,
                }
                .into());
            }
            return record_position(state, &category, &group, &name, from, off).await;
        }
        (None, None) => return Err(storage.missing_chunk(&category, &name).into()),
    };
    if chunk.is_tiered() {
        state
            .tiering()?
            .check_boundary(&category, &chunk, off)
            .await?;
    } else {
        chunk.check_boundary(off)?;
    }
    record_position(state, &category, &group, &name, from, off).await
}

/// Stores a checked group position and tells the peers.
async fn record_position(
    state: &AppState,
    category: &Category,
    group: &GroupName,
    name: &ChunkName,
    from: Option<u64>,
    off: u64,
) -> Result<HttpResponse, ApiError> {
    let acked = state
        .groups()?
        .ack_if(category, group, name, from, off)
        .await?;
    if let (Some(cluster), Acked::Moved) = (state.cluster.get(), acked) {
        cluster.group_feed.acked(category, group, name, off);
    }
    Ok(ok_line())
}

pub(super) fn list(state: &AppState, req: &Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let category = Query::parse(req.uri().query()).category()?;
    let storage = state.storage()?;
    let groups = state.groups()?;
    let log = storage.category(&category);
    let mut out = Vec::new();
    for (group, positions) in groups.groups(&category) {
        let (lag_bytes, lag_messages) = match &log {
            Some(l) => l.lag(&positions)?,
            None => (0, 0),
        };
        out.push(GroupStatus {
            consumer: group.to_string(),
            positions: positions
                .into_iter()
                .map(|(chunk, offset)| PositionOut {
                    chunk: chunk.to_string(),
                    offset,
                })
                .collect(),
            lag_bytes,
            lag_messages,
        });
    }
    json(&out)
}

pub(super) async fn delete(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let group = group_param(&query)?;
    state.groups()?.delete(&category, &group).await?;
    if let Some(cluster) = state.cluster.get() {
        cluster.group_feed.deleted(&category, &group);
    }
    Ok(ok_line())
}
