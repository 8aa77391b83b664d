//! `GET /ack?category=C&chunk=NAME&size=S`: chukcha's chunk ack. A sealed
//! chunk acked with `S` ≥ its size is deleted.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::ApiError;
use super::params::Query;
use super::{ok_line, AppState, HttpResponse};
use crate::config::RetentionMode;
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
    let chunk = log.chunk(&name).ok_or_else(|| StorageError::UnknownChunk {
        category: category.to_string(),
        name: name.to_string(),
    })?;
    // Listed as complete as soon as it is closed; delete only once the seal
    // is on disk.
    let sealed = chunk.wait_sealed(SEAL_WAIT).await;
    // Validation (400) before conflicts (409), as everywhere.
    if !sealed.sealed {
        return Err(StorageError::NotSealed {
            name: name.to_string(),
        }
        .into());
    }
    if size < sealed.end {
        return Err(StorageError::AckTooSmall {
            name: name.to_string(),
            size,
            final_size: sealed.end,
        }
        .into());
    }
    if state.config.retention.mode == RetentionMode::Acked {
        let groups = state.groups()?.groups(&category);
        if let Some((g, at)) = crate::retention::unfinished_group(&groups, &name, sealed.end) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "retention is \"acked\" and consumer group {g} is at offset {at} of {} in {name}; \
                     the chunk is deleted once every group has acked it",
                    sealed.end
                ),
            ));
        }
    }
    log.ack_chunk(&name, size)?;
    Ok(ok_line())
}
