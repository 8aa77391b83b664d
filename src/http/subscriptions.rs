//! Push subscriptions: `POST /subscriptions` (JSON body, see
//! [`crate::subscriptions::Spec`]), `GET /subscriptions`,
//! `DELETE /subscriptions?category=C&group=G`.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::ApiError;
use super::intake;
use super::params::{Query, RequestError};
use super::{json, ok_line, AppState, HttpResponse};
use crate::names::GroupName;
use crate::subscriptions::Spec;

pub(super) async fn add(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
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
