//! Push subscriptions: `POST /subscriptions` (JSON body, see
//! [`crate::subscriptions::Spec`], declared `application/json` or not
//! declared), `GET /subscriptions`, `DELETE /subscriptions?category=C&group=G`.

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::ApiError;
use super::params::{Query, RequestError};
use super::{json, ok_line, AppState, HttpResponse};
use crate::names::GroupName;
use crate::subscriptions::Spec;

/// Largest registration body.
const MAX_SPEC_BYTES: usize = 64 << 10;

pub(super) async fn add(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    super::guard::require_json(req.headers())?;
    let subs = state.subscriptions()?;
    let body = Limited::new(req.into_body(), MAX_SPEC_BYTES)
        .collect()
        .await
        .map_err(|source| RequestError::SpecUnreadable {
            max: MAX_SPEC_BYTES,
            source,
        })?
        .to_bytes();
    let spec: Spec = serde_json::from_slice(&body).map_err(RequestError::SpecJson)?;
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
