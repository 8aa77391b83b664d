//! `GET /read?category=C&chunk=NAME&off=O&max_size=M[&wait_ms=T]`: whole
//! messages from the chunk's mapping (zero-copy), with an optional long poll
//! that ends on new data, on seal, on timeout or at shutdown.

use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;

use super::error::ApiError;
use super::params::{check_wait, Query, RequestError};
use super::{ok, AppState, HttpResponse};
use crate::config::MAX_READ_SIZE;
use crate::storage::chunk::ReadOutcome;
use crate::storage::StorageError;

pub(super) async fn read(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let name = query.chunk()?;
    let off = query.u64("off")?;
    let max_size = query.u64("max_size")?;
    let wait_ms = query.opt_u64("wait_ms")?.unwrap_or(0);
    if max_size > MAX_READ_SIZE {
        return Err(RequestError::MaxSizeTooLarge(max_size).into());
    }
    check_wait(wait_ms)?;
    let storage = state.storage()?;
    let unknown = || StorageError::UnknownChunk {
        category: category.to_string(),
        name: name.to_string(),
    };
    let chunk = storage
        .category(&category)
        .and_then(|log| log.chunk(&name))
        .ok_or_else(unknown)?;
    if chunk.is_tiered() {
        let tiering = state.tiering()?;
        let outcome = tiering.read(&category, &chunk, off, max_size).await?;
        let body = match outcome {
            ReadOutcome::Data(b) => b,
            ReadOutcome::Empty { .. } => Bytes::new(),
        };
        state.metrics.reads.inc();
        state.metrics.read_bytes.inc_by(body.len() as u64);
        return Ok(ok(body, "application/octet-stream"));
    }
    let s = chunk.state();
    if off > s.end && !s.sealed && name.owner() != storage.server() {
        // Past what an incomplete copy holds: no data here yet (SPEC).
        return Ok(ok(Bytes::new(), "application/octet-stream"));
    }
    let outcome = chunk.read(off, max_size)?;
    let outcome = match outcome {
        ReadOutcome::Empty { sealed: false } if wait_ms > 0 => {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
            let mut rx = chunk.subscribe();
            loop {
                let s = *rx.borrow_and_update();
                if s.end > off || s.sealed || s.closed {
                    break;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep_until(deadline) => break,
                    () = state.shutdown.cancelled() => break,
                }
            }
            chunk.read(off, max_size)?
        }
        other => other,
    };
    let body = match outcome {
        ReadOutcome::Data(b) => b,
        ReadOutcome::Empty { .. } => Bytes::new(),
    };
    state.metrics.reads.inc();
    state.metrics.read_bytes.inc_by(body.len() as u64);
    Ok(ok(body, "application/octet-stream"))
}
