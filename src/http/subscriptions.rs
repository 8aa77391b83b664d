//! Push subscriptions: `POST /subscriptions` (JSON body, see
//! [`crate::subscriptions::Spec`]), `GET /subscriptions`,
//! `DELETE /subscriptions?category=C&group=G`.

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::ApiError;
use super::params::Query;
use super::{json, ok_line, AppState, HttpResponse};
use crate::names::GroupName;
use crate::subscriptions::{Spec, SubscriptionError};

/// Largest registration body.
const MAX_SPEC_BYTES: usize = 64 << 10;

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        let status = match &e {
            SubscriptionError::Invalid(_) => StatusCode::BAD_REQUEST,
            SubscriptionError::Exists { .. } => StatusCode::CONFLICT,
            SubscriptionError::Unknown { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = crate::error_chain(&e);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %message, "subscription registry error");
        }
        ApiError::new(status, message)
    }
}

pub(super) async fn add(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let subs = state.subscriptions()?;
    let body = Limited::new(req.into_body(), MAX_SPEC_BYTES)
        .collect()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("subscription body unreadable or over {MAX_SPEC_BYTES} bytes: {e}"),
            )
        })?
        .to_bytes();
    let spec: Spec = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid subscription JSON: {e}; expected {{\"category\",\"url\",\"group\"[,\"max_batch_bytes\",\"headers\",\"from\":{{\"chunk\",\"offset\"}},\"timeout_ms\"]}}"
        ))
    })?;
    subs.add(spec).await?;
    let mut r = ok_line();
    *r.status_mut() = StatusCode::CREATED;
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
