//! Push subscriptions: `POST /subscriptions` (JSON body, see
//! [`crate::subscriptions::Spec`], declared `application/json` or not
//! declared), `GET /subscriptions`, `DELETE /subscriptions?category=C&group=G`.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::ApiError;
use super::intake;
use super::params::{Query, RequestError};
use super::{json, ok_line, AppState, HttpResponse};
use crate::names::{Category, ChunkName, GroupName};
use crate::storage::StorageError;
use crate::subscriptions::Spec;
use crate::tier::TierError;

pub(super) async fn add(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    super::guard::require_json(req.headers())?;
    let subs = state.subscriptions()?;
    let body = intake::receive(
        state,
        req.into_body(),
        intake::MAX_SPEC_BODY,
        "subscription body",
        |_| Ok::<_, ApiError>(()),
    )
    .await?;
    let spec: Spec = serde_json::from_slice(&body.contiguous()).map_err(RequestError::SpecJson)?;
    drop(body);
    check_start(state, &spec).await?;
    subs.add(spec).await?;
    let mut r = ok_line();
    *r.status_mut() = StatusCode::CREATED; // success, not a failure status
    Ok(r)
}

pub(super) async fn list(state: &AppState) -> Result<HttpResponse, ApiError> {
    json(&state.subscriptions()?.list().await)
}

pub(super) async fn remove(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let group = GroupName::parse(query.required("group")?)?;
    state.subscriptions()?.remove(&category, &group).await?;
    Ok(ok_line())
}

/// Checks a spec's `from` against this server's chunks: it must name a
/// chunk of the category held here (local or tiered) and a message
/// boundary of it, at most its end; otherwise the delivery could never
/// start and would retry forever. Invalid names are left to
/// `Spec::validate`, which says what is allowed.
///
/// # Errors
/// [`RequestError::BadStart`] (`400`), or the failure to read a tiered
/// chunk's boundary.
async fn check_start(state: &AppState, spec: &Spec) -> Result<(), ApiError> {
    let Some(from) = &spec.from else {
        return Ok(());
    };
    let (Ok(category), Ok(name)) = (
        Category::parse(&spec.category),
        ChunkName::parse(&from.chunk),
    ) else {
        return Ok(());
    };
    let storage = state.storage()?;
    let Some(chunk) = storage.category(&category).and_then(|log| log.chunk(&name)) else {
        return Err(RequestError::BadStart(format!(
            "chunk {name} does not exist in category {category} on this server; use a chunk GET /listChunks lists"
        ))
        .into());
    };
    let checked = if chunk.is_tiered() {
        match state
            .tiering()?
            .check_boundary(&category, &chunk, from.offset)
            .await
        {
            Err(TierError::Storage(e)) => Err(e),
            other => return Ok(other?),
        }
    } else {
        chunk.check_boundary(from.offset)
    };
    match checked {
        Err(e @ (StorageError::OffsetBeyondEnd { .. } | StorageError::NotBoundary { .. })) => {
            Err(RequestError::BadStart(e.to_string()).into())
        }
        other => Ok(other?),
    }
}
