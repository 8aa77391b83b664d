//! The HTTP surface: routing on (method, path), request limits, and the
//! handlers. Handlers validate input, call one storage function and map
//! failures through [`error::ApiError`]; nothing here touches files.

mod ack;
mod admin;
pub mod body;
pub mod error;
mod groups;
pub mod params;
mod peer;
mod read;
mod subscriptions;
mod write;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::groups::GroupStore;
use crate::metrics::{Metrics, StatusLabel};
use crate::storage::Storage;
use crate::subscriptions::Subscriptions;
use crate::tier::Tiering;
use error::ApiError;

/// The response type of every handler.
pub type HttpResponse = Response<body::Body>;

/// State shared by all connections.
#[derive(Debug)]
pub struct AppState {
    /// Validated settings.
    pub config: Arc<Config>,
    /// Set once startup recovery has finished; until then requests get 503.
    pub storage: OnceLock<Arc<Storage>>,
    /// Set as soon as storage is open, before crash pull-back, so peers
    /// recovering at the same time can pull from this server.
    pub peer_storage: OnceLock<Arc<Storage>>,
    /// The cluster (peers configured); set with `peer_storage`.
    pub cluster: OnceLock<Arc<Cluster>>,
    /// Tiering (when configured); set before `storage`.
    pub tiering: OnceLock<Arc<Tiering>>,
    /// Consumer group positions; set together with `storage`.
    pub groups: OnceLock<Arc<GroupStore>>,
    /// Push subscriptions; set together with `storage`.
    pub subscriptions: OnceLock<Arc<Subscriptions>>,
    /// Request counters for `/metrics`.
    pub metrics: Metrics,
    /// Cancelled when shutdown starts: long polls return, writes get 503.
    pub shutdown: CancellationToken,
    /// Bytes of request bodies that may be held in memory at once, across
    /// all connections (see [`body_budget_bytes`]).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Settings that change on config reload (token, retention, tiering
    /// thresholds).
    pub live: Arc<crate::reload::Live>,
}

/// Global bound on buffered write bodies: 64 × `max_batch_size` (256 MiB
/// with defaults).
#[must_use]
pub fn body_budget_bytes(max_batch_size: u64) -> usize {
    usize::try_from(max_batch_size.saturating_mul(64)).unwrap_or(usize::MAX >> 4)
}

impl AppState {
    /// State for a server that is still recovering.
    #[must_use]
    pub fn new(config: Arc<Config>, shutdown: CancellationToken) -> Self {
        let budget = body_budget_bytes(config.startup.limits.max_batch_size)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            live: Arc::new(crate::reload::Live::new(&config.live)),
            config,
            storage: OnceLock::new(),
            peer_storage: OnceLock::new(),
            cluster: OnceLock::new(),
            tiering: OnceLock::new(),
            groups: OnceLock::new(),
            subscriptions: OnceLock::new(),
            metrics: Metrics::default(),
            shutdown,
            body_budget: Arc::new(tokio::sync::Semaphore::new(budget)),
        }
    }

    fn groups(&self) -> Result<&Arc<GroupStore>, ApiError> {
        self.storage()?;
        self.groups
            .get()
            .ok_or_else(|| ApiError::unavailable("server is recovering its data; retry shortly"))
    }

    fn subscriptions(&self) -> Result<&Arc<Subscriptions>, ApiError> {
        self.storage()?;
        self.subscriptions
            .get()
            .ok_or_else(|| ApiError::unavailable("server is recovering its data; retry shortly"))
    }

    fn cluster(&self) -> Result<&Arc<Cluster>, ApiError> {
        self.cluster.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "this server has no peers (--peers is not set)",
            )
        })
    }

    fn tiering(&self) -> Result<&Arc<Tiering>, ApiError> {
        self.tiering.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "chunk is tiered but tiering is not configured on this server",
            )
        })
    }

    fn peer_storage(&self) -> Result<&Arc<Storage>, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(ApiError::unavailable("server is shutting down"));
        }
        self.peer_storage
            .get()
            .ok_or_else(|| ApiError::unavailable("server is opening its data; retry shortly"))
    }

    fn storage(&self) -> Result<&Arc<Storage>, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(ApiError::unavailable(
                "server is shutting down; retry on another server or after restart",
            ));
        }
        self.storage
            .get()
            .ok_or_else(|| ApiError::unavailable("server is recovering its data; retry shortly"))
    }
}

/// Routes one request. Never fails at the HTTP level: errors become responses.
///
/// # Errors
/// Never (the `Result` is what hyper's `service_fn` wants).
pub async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let denied = authorize(&state, &req, &path).err();
    let result = match (path.as_str(), &method) {
        _ if denied.is_some() => Err(denied.unwrap_or_else(|| unreachable!("checked"))),
        ("/write", &Method::POST) => write::write(&state, req).await,
        ("/read", &Method::GET) => read::read(&state, &req).await,
        ("/listChunks", &Method::GET) => admin::list_chunks(&state, &req).await,
        ("/listCategories", &Method::GET) => admin::list_categories(&state),
        ("/ack", &Method::GET) => ack::ack_chunk(&state, &req).await,
        ("/ack", &Method::POST) => groups::ack(&state, &req).await,
        ("/consumers", &Method::GET) => groups::list(&state, &req),
        ("/consumers", &Method::DELETE) => groups::delete(&state, &req).await,
        ("/subscriptions", &Method::POST) => subscriptions::add(&state, req).await,
        ("/subscriptions", &Method::GET) => subscriptions::list(&state).await,
        ("/subscriptions", &Method::DELETE) => subscriptions::remove(&state, &req).await,
        ("/healthz", &Method::GET) => Ok(admin::healthz(&state)),
        ("/", &Method::GET) => Ok(ok(
            Bytes::from_static(STATUS_PAGE),
            "text/html; charset=utf-8",
        )),
        ("/metrics", &Method::GET) => admin::metrics(&state).await,
        ("/peers", &Method::GET) => peer::status(&state),
        ("/tier", &Method::GET) => admin::tier_status(&state),
        (crate::cluster::protocol::CHANGES_PATH, &Method::POST) => peer::changes(&state, req).await,
        (crate::cluster::protocol::FETCH_PATH, &Method::GET) => peer::fetch(&state, &req).await,
        (crate::cluster::protocol::HELD_PATH, &Method::GET) => peer::held(&state, &req),
        (crate::cluster::protocol::ACK_PATH, &Method::POST) => peer::ack(&state, &req).await,
        _ => Err(not_routed(&path, &method)),
    };
    let resp = result.unwrap_or_else(|e| {
        state
            .metrics
            .errors
            .get_or_create(&StatusLabel {
                status: e.status.as_u16(),
            })
            .inc();
        tracing::debug!(%method, %path, status = e.status.as_u16(), message = %e.message, "request refused");
        let allow = (e.status == StatusCode::METHOD_NOT_ALLOWED).then(|| allowed(&path));
        let unauthorized = e.status == StatusCode::UNAUTHORIZED;
        let mut r = e.into_response();
        if unauthorized {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"chunkbus\""),
            );
        }
        if let Some(Some(a)) = allow {
            r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(a));
        }
        r
    });
    Ok(resp)
}

/// The status page: static HTML with its script and styles inline (no
/// external assets), which reads the JSON endpoints it shows.
const STATUS_PAGE: &[u8] = include_bytes!("status.html");

/// Checks the bearer token (when one is configured) on every path but
/// `/healthz` and the static status page `/` (which holds no data; its
/// script sends the token the operator types in), comparing in constant
/// time.
fn authorize(state: &AppState, req: &Request<Incoming>, path: &str) -> Result<(), ApiError> {
    use subtle::ConstantTimeEq;
    if path == "/healthz" || (path == "/" && req.method() == Method::GET) {
        return Ok(());
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    let ok = state.live.with_token(|token| match token {
        None => true,
        Some(t) => bool::from(given.ct_eq(t.as_str().as_bytes())),
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send Authorization: Bearer <token>",
        ))
    }
}

fn allowed(path: &str) -> Option<&'static str> {
    Some(match path {
        "/write" => "POST",
        "/" | "/read" | "/listChunks" | "/listCategories" | "/healthz" | "/metrics" | "/peers"
        | "/tier" | "/peer/fetch" | "/peer/held" => "GET",
        "/peer/changes" | "/peer/ack" => "POST",
        "/consumers" => "GET, DELETE",
        "/subscriptions" => "GET, POST, DELETE",
        "/ack" => "GET, POST",
        _ => return None,
    })
}

fn not_routed(path: &str, method: &Method) -> ApiError {
    match allowed(path) {
        Some(a) => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed on {path}; use {a}"),
        ),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no such endpoint {}; endpoints: / (status page) /write /read /listChunks /listCategories /ack /consumers /subscriptions /healthz /metrics /peers /tier",
                path.chars().take(100).collect::<String>()
            ),
        ),
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
    let mut body = serde_json::to_vec(value).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding JSON failed: {e}"),
        )
    })?;
    body.push(b'\n');
    Ok(ok(Bytes::from(body), "application/json"))
}
