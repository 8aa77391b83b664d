//! [`PeerClient`]: HTTP requests to peers with deadlines, typed errors.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioExecutor;

/// A failed peer request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// No answer (refused, reset, timed out).
    #[error("peer {peer} unreachable: {why}")]
    Unreachable {
        /// Peer name.
        peer: String,
        /// What happened.
        why: String,
    },
    /// The peer answered with an error status.
    #[error("peer {peer} answered {status}: {body}")]
    Status {
        /// Peer name.
        peer: String,
        /// The status.
        status: StatusCode,
        /// Its error line.
        body: String,
    },
    /// The peer answered something this server cannot use.
    #[error("peer {peer} sent a bad reply: {why}")]
    BadReply {
        /// Peer name.
        peer: String,
        /// What was wrong.
        why: String,
    },
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    /// Reply headers.
    pub headers: HeaderMap,
    /// Reply body.
    pub body: Bytes,
}

impl Answer {
    /// A numeric header, if present and valid.
    #[must_use]
    pub fn header_u64(&self, name: &str) -> Option<u64> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
    }
}

/// Pooled HTTP/1.1 client for peer requests.
#[derive(Debug, Clone)]
pub struct PeerClient {
    http: hyper_util::client::legacy::Client<chunkbus_client::tls::Connector, Full<Bytes>>,
    /// `Authorization` value sent to peers (the cluster token), if any.
    auth: PeerAuth,
}

/// The `Authorization` value sent to peers; shared by every clone of a
/// [`PeerClient`] and replaced when the token is reloaded.
#[derive(Debug, Clone, Default)]
pub struct PeerAuth(std::sync::Arc<parking_lot::RwLock<Option<hyper::header::HeaderValue>>>);

impl PeerAuth {
    /// Sends `Authorization: Bearer <token>` from now on (None: nothing).
    pub fn set(&self, token: Option<&crate::auth::Token>) {
        let v = token.and_then(|t| {
            let mut v =
                hyper::header::HeaderValue::from_str(&format!("Bearer {}", t.as_str())).ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        *self.0.write() = v;
    }

    fn get(&self) -> Option<hyper::header::HeaderValue> {
        self.0.read().clone()
    }
}

impl PeerClient {
    /// A client that authenticates with the cluster `token` and verifies
    /// `https://` peers with `tls` (trust roots from `--tls-ca`; without
    /// them an `https://` handshake fails, which config validation
    /// prevents).
    ///
    /// # Errors
    /// rustls refusing a configuration without trust roots (it does not).
    pub fn new(
        token: Option<&crate::auth::Token>,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, chunkbus_client::tls::TlsError> {
        let auth = PeerAuth::default();
        auth.set(token);
        let tls = match tls {
            Some(t) => t,
            None => chunkbus_client::tls::untrusting_config()?,
        };
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(chunkbus_client::tls::connector(tls));
        Ok(Self { http, auth })
    }

    /// The token sent with every request, replaceable at runtime.
    #[must_use]
    pub fn auth(&self) -> &PeerAuth {
        &self.auth
    }

    /// Sends one request and reads the whole answer within `limit`.
    ///
    /// # Errors
    /// [`PeerError`]: unreachable/timeout, non-2xx status.
    pub async fn request(
        &self,
        peer: &str,
        method: Method,
        url: &str,
        body: Bytes,
        limit: Duration,
    ) -> Result<Answer, PeerError> {
        let unreachable = |why: String| PeerError::Unreachable {
            peer: peer.to_owned(),
            why,
        };
        let mut req = Request::builder().method(method).uri(url);
        if !body.is_empty() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = self.auth.get() {
            req = req.header(hyper::header::AUTHORIZATION, auth);
        }
        let req = req.body(Full::new(body)).map_err(|e| PeerError::BadReply {
            peer: peer.to_owned(),
            why: format!("cannot build request to {url}: {e}"),
        })?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| unreachable(crate::error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading reply: {e}")))?
                .to_bytes();
            Ok::<_, PeerError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_elapsed| {
                unreachable(format!("no answer within {} ms", limit.as_millis()))
            })??;
        if !parts.status.is_success() {
            return Err(PeerError::Status {
                peer: peer.to_owned(),
                status: parts.status,
                body: String::from_utf8_lossy(&body[..body.len().min(500)])
                    .trim()
                    .to_owned(),
            });
        }
        Ok(Answer {
            headers: parts.headers,
            body,
        })
    }

    /// Sends a `GET` and returns the answer — whatever its status — as
    /// soon as its head arrives (within `limit`); the body is left to the
    /// caller to stream.
    ///
    /// # Errors
    /// [`PeerError::Unreachable`]: no answer head within `limit`.
    pub async fn get_streamed(
        &self,
        peer: &str,
        url: &str,
        limit: Duration,
    ) -> Result<hyper::Response<hyper::body::Incoming>, PeerError> {
        let mut req = Request::builder().method(Method::GET).uri(url);
        if let Some(auth) = self.auth.get() {
            req = req.header(hyper::header::AUTHORIZATION, auth);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| PeerError::BadReply {
                peer: peer.to_owned(),
                why: format!("cannot build request to {url}: {e}"),
            })?;
        let unreachable = |why: String| PeerError::Unreachable {
            peer: peer.to_owned(),
            why,
        };
        match tokio::time::timeout(limit, self.http.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(unreachable(crate::error_chain(&e))),
            Err(_elapsed) => Err(unreachable(format!(
                "no answer within {} ms",
                limit.as_millis()
            ))),
        }
    }

    /// A JSON request and reply.
    ///
    /// # Errors
    /// As [`PeerClient::request`], or [`PeerError::BadReply`] for bad JSON.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        peer: &str,
        method: Method,
        url: &str,
        body: Bytes,
        limit: Duration,
    ) -> Result<T, PeerError> {
        let a = self.request(peer, method, url, body, limit).await?;
        serde_json::from_slice(&a.body).map_err(|e| PeerError::BadReply {
            peer: peer.to_owned(),
            why: format!("bad JSON: {e}"),
        })
    }
}

/// Percent-encodes one query value (names are `[A-Za-z0-9_-]`, but stay safe).
#[must_use]
pub fn q(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}
