//! `GET /ack?category=C&chunk=NAME&size=S`: chukcha's chunk ack. A sealed
//! chunk acked with `S` ≥ its size is deleted.

use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;

use super::error::ApiError;
use super::params::Query;
use super::{ok, AppState, HttpResponse};
use crate::storage::StorageError;

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
    let log = storage
        .category(&category)
        .ok_or_else(|| StorageError::UnknownChunk {
            category: category.to_string(),
            name: name.to_string(),
        })?;
    if let Some(chunk) = log.chunk(&name) {
        // Listed as complete as soon as it is closed; delete only once the
        // seal is on disk.
        chunk.wait_sealed(SEAL_WAIT).await;
    }
    log.ack_chunk(&name, size)?;
    Ok(ok(Bytes::from_static(b"ok\n"), "text/plain; charset=utf-8"))
}
