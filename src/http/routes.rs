//! The route table: every (path, method) the server answers, in one static
//! list ([`ROUTES`]). Dispatch, the bearer-token rule, the `Allow` header
//! of a `405` and the endpoint list of a `404` are all derived from it, so
//! they cannot disagree.
//!
//! Never parses parameters or bodies (the handlers do) and never chooses a
//! status: refusals are [`RouteError`]s, classified like every other error.

use hyper::body::Incoming;
use hyper::{Method, Request};

use super::error::ApiError;
use super::{
    ack, admin, groups, peer, peer_kafka, read, subscriptions, write, AppState, HttpResponse,
};
use crate::cluster::protocol::{
    ACK_PATH, CHANGES_PATH, FETCH_PATH, HELD_PATH, KAFKA_OFFSETS_PATH, READ_PATH,
};
use crate::error::{DomainError, ErrorKind};

/// The handler a route leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /`: the status page.
    StatusPage,
    /// `POST /write`.
    Write,
    /// `GET /read`.
    Read,
    /// `GET /listChunks`.
    ListChunks,
    /// `GET /listCategories`.
    ListCategories,
    /// `GET /ack`: chukcha's chunk ack.
    AckChunk,
    /// `POST /ack`: a consumer group position.
    AckGroup,
    /// `GET /consumers`.
    ListGroups,
    /// `DELETE /consumers`.
    DeleteGroup,
    /// `GET /subscriptions`.
    ListSubscriptions,
    /// `POST /subscriptions`.
    AddSubscription,
    /// `DELETE /subscriptions`.
    RemoveSubscription,
    /// `GET /healthz`.
    Healthz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /peers`: replication status.
    Peers,
    /// `GET /tier`: tiering status.
    Tier,
    /// `POST /peer/changes`.
    PeerChanges,
    /// `GET /peer/fetch`.
    PeerFetch,
    /// `GET /peer/held`.
    PeerHeld,
    /// `POST /peer/ack`.
    PeerAck,
    /// `GET /peer/read`.
    PeerRead,
    /// `GET /peer/kafka/offsets`.
    PeerKafkaOffsets,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Needs the bearer token when one is configured.
    Token,
    /// This (path, method) needs no token: the status page holds no data
    /// (its script sends the token the operator types in).
    Open,
    /// No request to this path needs a token, whatever its method (health
    /// checks get their `405` without credentials).
    OpenPath,
    /// A peer endpoint: needs the peer token (`peer_token`) when one is
    /// configured — the client token is refused — else the bearer token.
    Peer,
}

/// One row of the table.
#[derive(Debug)]
pub struct Route {
    /// The exact path.
    pub path: &'static str,
    /// The method.
    pub method: Method,
    /// The handler.
    pub endpoint: Endpoint,
    /// Who may call it.
    pub access: Access,
    /// Listed in the `404` answer (client endpoints); peer endpoints are
    /// internal.
    pub public: bool,
}

/// A public route needing the token.
const fn route(path: &'static str, method: Method, endpoint: Endpoint) -> Route {
    open(path, method, endpoint, Access::Token)
}

/// A public route with the given access.
const fn open(path: &'static str, method: Method, endpoint: Endpoint, access: Access) -> Route {
    Route {
        path,
        method,
        endpoint,
        access,
        public: true,
    }
}

/// An internal peer route (needs the peer token; not listed).
const fn peer_route(path: &'static str, method: Method, endpoint: Endpoint) -> Route {
    Route {
        path,
        method,
        endpoint,
        access: Access::Peer,
        public: false,
    }
}

/// Every route, in the order the `404` answer lists them; a path's methods
/// in the order its `Allow` header lists them.
pub static ROUTES: [Route; 22] = [
    open("/", Method::GET, Endpoint::StatusPage, Access::Open),
    route("/write", Method::POST, Endpoint::Write),
    route("/read", Method::GET, Endpoint::Read),
    route("/listChunks", Method::GET, Endpoint::ListChunks),
    route("/listCategories", Method::GET, Endpoint::ListCategories),
    route("/ack", Method::GET, Endpoint::AckChunk),
    route("/ack", Method::POST, Endpoint::AckGroup),
    route("/consumers", Method::GET, Endpoint::ListGroups),
    route("/consumers", Method::DELETE, Endpoint::DeleteGroup),
    route("/subscriptions", Method::GET, Endpoint::ListSubscriptions),
    route("/subscriptions", Method::POST, Endpoint::AddSubscription),
    route(
        "/subscriptions",
        Method::DELETE,
        Endpoint::RemoveSubscription,
    ),
    open("/healthz", Method::GET, Endpoint::Healthz, Access::OpenPath),
    route("/metrics", Method::GET, Endpoint::Metrics),
    route("/peers", Method::GET, Endpoint::Peers),
    route("/tier", Method::GET, Endpoint::Tier),
    peer_route(CHANGES_PATH, Method::POST, Endpoint::PeerChanges),
    peer_route(FETCH_PATH, Method::GET, Endpoint::PeerFetch),
    peer_route(HELD_PATH, Method::GET, Endpoint::PeerHeld),
    peer_route(ACK_PATH, Method::POST, Endpoint::PeerAck),
    peer_route(READ_PATH, Method::GET, Endpoint::PeerRead),
    peer_route(KAFKA_OFFSETS_PATH, Method::GET, Endpoint::PeerKafkaOffsets),
];

/// A request the table refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A token is configured and the request lacks it (or has another).
    #[error("missing or wrong bearer token: send Authorization: Bearer <token>")]
    Unauthorized,
    /// A peer endpoint without the peer token (`peer_token` is set; the
    /// client token does not open peer endpoints).
    #[error("missing or wrong peer token: peer endpoints take only Authorization: Bearer <peer_token>, not the client token")]
    PeerUnauthorized,
    /// A known path with another method.
    #[error("method {method} is not allowed on {path}; use {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: Method,
        /// The path.
        path: String,
        /// The methods the path allows (`GET, POST`).
        allow: String,
    },
    /// An unknown path.
    #[error("no such endpoint {path}; endpoints: {endpoints}")]
    NotFound {
        /// The path (at most 100 characters).
        path: String,
        /// The public endpoints.
        endpoints: String,
    },
}

impl DomainError for RouteError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Unauthorized | Self::PeerUnauthorized => ErrorKind::Unauthorized,
            Self::MethodNotAllowed { .. } => ErrorKind::MethodNotAllowed,
            Self::NotFound { .. } => ErrorKind::NotFound,
        }
    }
}

impl RouteError {
    /// The error answer, with the `Allow` header of a `405`.
    #[must_use]
    pub fn into_api_error(self) -> ApiError {
        let allow = match &self {
            Self::MethodNotAllowed { allow, .. } => Some(allow.clone()),
            _ => None,
        };
        ApiError::from(self).with_allow(allow)
    }
}

/// The endpoint of (`path`, `method`).
///
/// # Errors
/// [`RouteError::MethodNotAllowed`] for a known path with another method,
/// [`RouteError::NotFound`] for an unknown path.
pub fn resolve(path: &str, method: &Method) -> Result<Endpoint, RouteError> {
    let mut known = false;
    for r in &ROUTES {
        if r.path == path {
            if r.method == method {
                return Ok(r.endpoint);
            }
            known = true;
        }
    }
    Err(if known {
        RouteError::MethodNotAllowed {
            method: method.clone(),
            path: path.to_owned(),
            allow: allow(path),
        }
    } else {
        RouteError::NotFound {
            path: path.chars().take(100).collect(),
            endpoints: endpoints(),
        }
    })
}

/// Whether a request needs the bearer token (when one is configured):
/// every request but those of an [`Access::Open`] route and of an
/// [`Access::OpenPath`] path.
#[must_use]
pub fn needs_token(path: &str, method: &Method) -> bool {
    !ROUTES.iter().any(|r| {
        r.path == path
            && (r.access == Access::OpenPath || (r.access == Access::Open && r.method == method))
    })
}

/// Whether `path` is a peer endpoint ([`Access::Peer`], whatever the
/// method): it takes the peer token when one is configured.
#[must_use]
pub fn is_peer_path(path: &str) -> bool {
    ROUTES
        .iter()
        .any(|r| r.path == path && r.access == Access::Peer)
}

/// The methods `path` allows, as an `Allow` header value (empty when none).
#[must_use]
pub fn allow(path: &str) -> String {
    let methods: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.method.as_str())
        .collect();
    methods.join(", ")
}

/// The public endpoints, as the `404` answer lists them.
#[must_use]
pub fn endpoints() -> String {
    let mut out: Vec<&str> = Vec::new();
    for r in ROUTES.iter().filter(|r| r.public) {
        let shown = if r.endpoint == Endpoint::StatusPage {
            "/ (status page)"
        } else {
            r.path
        };
        if !out.contains(&shown) {
            out.push(shown);
        }
    }
    out.join(" ")
}

/// Runs the handler of `endpoint`.
pub(super) async fn dispatch(
    endpoint: Endpoint,
    state: &AppState,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    match endpoint {
        Endpoint::StatusPage => Ok(admin::status_page()),
        Endpoint::Write => write::write(state, req).await,
        Endpoint::Read => read::read(state, &req).await,
        Endpoint::ListChunks => admin::list_chunks(state, &req).await,
        Endpoint::ListCategories => admin::list_categories(state),
        Endpoint::AckChunk => ack::ack_chunk(state, &req).await,
        Endpoint::AckGroup => groups::ack(state, &req).await,
        Endpoint::ListGroups => groups::list(state, &req),
        Endpoint::DeleteGroup => groups::delete(state, &req).await,
        Endpoint::ListSubscriptions => subscriptions::list(state).await,
        Endpoint::AddSubscription => subscriptions::add(state, req).await,
        Endpoint::RemoveSubscription => subscriptions::remove(state, &req).await,
        Endpoint::Healthz => Ok(admin::healthz(state)),
        Endpoint::Metrics => admin::metrics(state).await,
        Endpoint::Peers => peer::status(state),
        Endpoint::Tier => admin::tier_status(state),
        Endpoint::PeerChanges => peer::changes(state, req).await,
        Endpoint::PeerFetch => peer::fetch(state, &req).await,
        Endpoint::PeerHeld => peer::held(state, &req),
        Endpoint::PeerAck => peer::ack(state, &req).await,
        Endpoint::PeerRead => read::peer_read(state, &req).await,
        Endpoint::PeerKafkaOffsets => peer_kafka::offsets(state, &req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METHODS: [Method; 6] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
    ];

    #[test]
    fn every_route_resolves_and_other_methods_get_405_with_allow() {
        for r in &ROUTES {
            assert_eq!(
                resolve(r.path, &r.method).unwrap(),
                r.endpoint,
                "{}",
                r.path
            );
            let allowed: Vec<&Method> = ROUTES
                .iter()
                .filter(|o| o.path == r.path)
                .map(|o| &o.method)
                .collect();
            for m in METHODS.iter().filter(|m| !allowed.contains(m)) {
                let e = resolve(r.path, m).unwrap_err();
                let RouteError::MethodNotAllowed { allow, .. } = &e else {
                    panic!("{m} {}: {e}", r.path);
                };
                let allow = allow.clone();
                for a in allow.split(", ") {
                    assert!(allowed.iter().any(|x| x.as_str() == a), "{allow}");
                }
                assert_eq!(allow.split(", ").count(), allowed.len());
                let api = e.into_api_error();
                assert_eq!(api.status, 405);
                assert_eq!(api.allow.as_deref(), Some(allow.as_str()));
                assert!(api.message.ends_with(&format!("; use {}", allow.as_str())));
            }
        }
    }

    #[test]
    fn allow_headers_are_unchanged() {
        for (path, want) in [
            ("/write", "POST"),
            ("/", "GET"),
            ("/read", "GET"),
            ("/peer/fetch", "GET"),
            ("/peer/changes", "POST"),
            ("/peer/ack", "POST"),
            ("/consumers", "GET, DELETE"),
            ("/subscriptions", "GET, POST, DELETE"),
            ("/ack", "GET, POST"),
        ] {
            assert_eq!(allow(path), want, "{path}");
        }
        assert_eq!(allow("/nope"), "");
    }

    #[test]
    fn unknown_path_is_404_listing_the_public_endpoints() {
        let e = resolve("/nope", &Method::GET).unwrap_err();
        let api = e.into_api_error();
        assert_eq!(api.status, 404);
        assert_eq!(api.allow, None);
        assert_eq!(
            api.message,
            "no such endpoint /nope; endpoints: / (status page) /write /read /listChunks \
             /listCategories /ack /consumers /subscriptions /healthz /metrics /peers /tier"
        );
        let long = format!("/{}", "x".repeat(300));
        let RouteError::NotFound { path, .. } = resolve(&long, &Method::GET).unwrap_err() else {
            panic!("not a 404");
        };
        assert_eq!(path.chars().count(), 100);
    }

    #[test]
    fn only_healthz_and_the_status_page_are_open() {
        assert!(!needs_token("/healthz", &Method::GET));
        assert!(!needs_token("/healthz", &Method::POST));
        assert!(!needs_token("/", &Method::GET));
        assert!(needs_token("/", &Method::POST));
        assert!(needs_token("/nope", &Method::GET));
        for r in ROUTES
            .iter()
            .filter(|r| r.path != "/" && r.path != "/healthz")
        {
            assert!(needs_token(r.path, &r.method), "{}", r.path);
        }
    }

    #[test]
    fn exactly_the_peer_endpoints_take_the_peer_token() {
        for r in &ROUTES {
            assert_eq!(
                is_peer_path(r.path),
                r.path.starts_with("/peer/"),
                "{}",
                r.path
            );
            assert_eq!(is_peer_path(r.path), !r.public, "{}", r.path);
        }
        assert!(!is_peer_path("/peer/nope") && !is_peer_path("/peers"));
        assert_eq!(RouteError::PeerUnauthorized.into_api_error().status, 401);
    }
}
