//! The HTTP surface: one entry point ([`handle`]) that checks the bearer
//! token, resolves the route in the table (`routes.rs`), runs the handler
//! and turns any failure into its answer (`error.rs`, the only place
//! statuses are chosen). Handlers validate input (`params.rs`), call
//! storage, groups, cluster or tiering, and return typed errors with `?`;
//! nothing here touches files.
//!
//! - `state.rs`: [`AppState`], the services shared by all connections.
//! - `intake.rs`: receiving request bodies (size, idle and total time
//!   bounds) under the global memory budget of `budget.rs`.
//! - `routes.rs`: the route table, dispatch, `Allow` and the `404` list.
//! - [`params`]: query parsing and [`params::RequestError`].
//! - [`error`]: [`error::ApiError`], kinds → statuses.
//! - [`guard`]: browser defences (Host, cross-site, JSON media type).
//! - handlers: `write.rs`, `read.rs`, `ack.rs`, `groups.rs`,
//!   `subscriptions.rs`, `admin.rs`, `peer.rs`, `peer_kafka.rs`.

mod ack;
mod admin;
pub mod body;
pub mod budget;
pub mod error;
mod groups;
pub mod guard;
mod intake;
pub mod params;
mod peer;
mod peer_kafka;
mod read;
pub mod routes;
mod state;
mod subscriptions;
mod write;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{header, Request, Response};

use crate::metrics::StatusLabel;
use error::ApiError;
pub use intake::{body_budget_bytes, body_reserve_bytes, IntakeError, BODY_TIMEOUT};
use routes::RouteError;
pub use state::{AppState, ServiceError};

/// The response type of every handler.
pub type HttpResponse = Response<body::Body>;

/// Routes one request: the `Host` check, the bearer token, the route, the
/// cross-site check (`guard.rs`), then the handler. Never fails at the
/// HTTP level: errors become responses.
///
/// # Errors
/// Never (the `Result` is what hyper's `service_fn` wants).
pub async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let startup = &state.config.startup;
    let endpoint = guard::check_host(startup, req.headers())
        .map_err(ApiError::from)
        .and_then(|()| {
            authorize(&state, &req, &path)
                .and_then(|()| routes::resolve(&path, &method))
                .map_err(RouteError::into_api_error)
        })
        .and_then(|e| {
            guard::check_origin(startup, e, req.headers())
                .map(|()| e)
                .map_err(ApiError::from)
        });
    let result = match endpoint {
        Ok(endpoint) => routes::dispatch(endpoint, &state, req).await,
        Err(e) => Err(e),
    };
    Ok(result.unwrap_or_else(|e| refused(&state, &method, &path, e)))
}

/// Answers the one request of a connection beyond `max_connections`
/// (which is then closed): `GET /healthz` as usual, so load balancers
/// still see a live node; anything else `503`, doing nothing (a write gets
/// `chunkbus-written: false`).
///
/// # Errors
/// Never (the `Result` is what hyper's `service_fn` wants).
pub async fn handle_over_limit(
    state: Arc<AppState>,
    req: Request<Incoming>,
    max_connections: usize,
) -> Result<HttpResponse, Infallible> {
    let path = req.uri().path();
    let endpoint = routes::resolve(path, req.method()).ok();
    if endpoint == Some(routes::Endpoint::Healthz) {
        return Ok(admin::healthz(&state));
    }
    let e = ApiError::from(ServiceError::ConnectionLimit {
        max: max_connections,
    });
    let e = if endpoint == Some(routes::Endpoint::Write) {
        e.with_written(false)
    } else {
        e
    };
    Ok(refused(&state, req.method(), path, e))
}

/// Counts and logs a refusal; its response.
fn refused(state: &AppState, method: &hyper::Method, path: &str, e: ApiError) -> HttpResponse {
    state
        .metrics
        .errors
        .get_or_create(&StatusLabel {
            status: e.status.as_u16(),
        })
        .inc();
    tracing::debug!(%method, %path, status = e.status.as_u16(), message = %e.message, "request refused");
    e.into_response()
}

/// Checks the bearer token (when one is configured) on every request the
/// route table does not mark open (`/healthz`, `GET /`), comparing in
/// constant time. Peer endpoints take only the peer token when
/// `peer_token` is set (the client token is refused there, and the peer
/// token everywhere else); without it they take the bearer token.
fn authorize(state: &AppState, req: &Request<Incoming>, path: &str) -> Result<(), RouteError> {
    if !routes::needs_token(path, req.method()) {
        return Ok(());
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if routes::is_peer_path(path) {
        let peer = state
            .live
            .with_peer_token(|token| token.map(|t| t.matches(given)));
        match peer {
            Some(true) => return Ok(()),
            Some(false) => return Err(RouteError::PeerUnauthorized),
            None => {} // no peer token: peers send the bearer token
        }
    }
    let ok = state.live.with_token(|token| match token {
        None => true,
        Some(t) => t.matches(given),
    });
    if ok {
        Ok(())
    } else {
        Err(RouteError::Unauthorized)
    }
}

/// The `200 ok` text answer of requests that only change state.
pub(crate) fn ok_line() -> HttpResponse {
    ok(Bytes::from_static(b"ok\n"), "text/plain; charset=utf-8")
}

/// A `200` response with a body and content type.
pub(crate) fn ok(body: Bytes, content_type: &'static str) -> HttpResponse {
    let mut r = Response::new(body::Body::new(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// A `200` JSON response.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<HttpResponse, ApiError> {
    let mut body = serde_json::to_vec(value).map_err(ServiceError::EncodeJson)?;
    body.push(b'\n');
    Ok(ok(Bytes::from(body), "application/json"))
}
