//! Making a [`Client`]: [`ClientBuilder`], the constructors (addresses
//! checked here) and the settings (CA certificates, token, request
//! timeout).
//!
//! Never sends a request.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;

use super::Client;
use crate::error::ClientError;

/// How long a request may take by default, from sending it to the last
/// byte of the answer (long polls get their wait on top).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a [`Client`] ([`Client::builder`]).
///
/// ```
/// use std::time::Duration;
/// use chunkbus_client::Client;
///
/// let client = Client::builder()
///     .server("http://10.0.0.1:8080")
///     .server("http://10.0.0.2:8080")
///     .token("s3cret")
///     .request_timeout(Duration::from_secs(10))
///     .build()?;
/// assert_eq!(client.request_timeout(), Duration::from_secs(10));
/// # Ok::<(), chunkbus_client::ClientError>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ClientBuilder {
    servers: Vec<String>,
    token: Option<String>,
    ca_pem: Option<Vec<u8>>,
    request_timeout: Option<Duration>,
}

impl ClientBuilder {
    /// Adds a server address (`http://host:port` or `https://…`); several
    /// are tried in the order added.
    ///
    /// ```
    /// let b = chunkbus_client::Client::builder().server("http://127.0.0.1:8080");
    /// # let _ = b;
    /// ```
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.servers.push(url.into());
        self
    }

    /// Adds several server addresses.
    ///
    /// ```
    /// let b = chunkbus_client::Client::builder().servers(["http://a:8080", "http://b:8080"]);
    /// # let _ = b;
    /// ```
    pub fn servers<S: Into<String>>(mut self, urls: impl IntoIterator<Item = S>) -> Self {
        self.servers.extend(urls.into_iter().map(Into::into));
        self
    }

    /// Sends `Authorization: Bearer <token>` ([`Client::with_token`]).
    ///
    /// ```
    /// let b = chunkbus_client::Client::builder().token("s3cret");
    /// # let _ = b;
    /// ```
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Trusts the CA certificates in `pem` for `https://` servers
    /// ([`Client::with_ca_pem`]).
    ///
    /// ```no_run
    /// let pem = std::fs::read("ca.pem")?;
    /// let b = chunkbus_client::Client::builder().ca_pem(pem);
    /// # let _ = b;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Bounds every request ([`Client::with_request_timeout`]).
    ///
    /// ```
    /// let b = chunkbus_client::Client::builder().request_timeout(std::time::Duration::from_secs(3));
    /// # let _ = b;
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// The client.
    ///
    /// ```
    /// let client = chunkbus_client::Client::builder().server("http://127.0.0.1:8080").build()?;
    /// # let _ = client;
    /// # Ok::<(), chunkbus_client::ClientError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Client::with_servers`], [`Client::with_ca_pem`] and
    /// [`Client::with_token`].
    pub fn build(self) -> Result<Client, ClientError> {
        let mut client = Client::with_servers(&self.servers)?;
        if let Some(pem) = &self.ca_pem {
            client = client.with_ca_pem(pem)?;
        }
        if let Some(token) = &self.token {
            client = client.with_token(token)?;
        }
        if let Some(t) = self.request_timeout {
            client = client.with_request_timeout(t);
        }
        Ok(client)
    }
}
impl Client {
    /// A [`ClientBuilder`]: addresses, token, CA certificates, timeout.
    ///
    /// ```
    /// let client = chunkbus_client::Client::builder().server("http://127.0.0.1:8080").build()?;
    /// # let _ = client;
    /// # Ok::<(), chunkbus_client::ClientError>(())
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client for the server at `base_url` (`http://host:port`, or
    /// `https://host:port` together with [`Client::with_ca_pem`]).
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] for anything but an `http://` or
    /// `https://` URL.
    /// ```
    /// let client = chunkbus_client::Client::new("http://127.0.0.1:8080")?;
    /// assert_eq!(client.active_server(), "http://127.0.0.1:8080");
    /// # Ok::<(), chunkbus_client::ClientError>(())
    /// ```
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_servers([base_url])
    }

    /// A client for several servers of one cluster, tried in order.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] for an empty list or anything but
    /// `http://` and `https://` URLs.
    /// ```
    /// let client = chunkbus_client::Client::with_servers(["http://10.0.0.1:8080", "http://10.0.0.2:8080"])?;
    /// # let _ = client;
    /// # Ok::<(), chunkbus_client::ClientError>(())
    /// ```
    pub fn with_servers<S: AsRef<str>>(
        urls: impl IntoIterator<Item = S>,
    ) -> Result<Self, ClientError> {
        let bases = urls
            .into_iter()
            .map(|u| check_url(u.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if bases.is_empty() {
            return Err(ClientError::InvalidUrl {
                url: String::new(),
                why: "no server address given".to_owned(),
            });
        }
        let tls = crate::tls::untrusting_config().map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Self {
            bases: bases.into(),
            active: Arc::new(AtomicUsize::new(0)),
            http: http_client(tls),
            auth: None,
            tls: false,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Verifies `https://` servers against the CA certificates in `pem`
    /// (one or more `CERTIFICATE` blocks), and nothing else.
    ///
    /// # Errors
    /// [`ClientError::Tls`] when `pem` holds no usable certificate.
    /// ```no_run
    /// let pem = std::fs::read("ca.pem")?;
    /// let client = chunkbus_client::Client::new("https://broker:8443")?.with_ca_pem(&pem)?;
    /// # let _ = client;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        let tls = crate::tls::client_config(pem).map_err(|e| ClientError::Tls(e.to_string()))?;
        self.http = http_client(tls);
        self.tls = true;
        Ok(self)
    }

    /// Sends `Authorization: Bearer <token>` with every request (servers
    /// started with `--token`).
    ///
    /// # Errors
    /// [`ClientError::InvalidToken`] when the token has characters a
    /// header cannot carry.
    /// ```
    /// let client = chunkbus_client::Client::new("http://127.0.0.1:8080")?.with_token("s3cret")?;
    /// # let _ = client;
    /// # Ok::<(), chunkbus_client::ClientError>(())
    /// ```
    pub fn with_token(mut self, token: &str) -> Result<Self, ClientError> {
        let mut v = hyper::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::InvalidToken)?;
        v.set_sensitive(true);
        self.auth = Some(v);
        Ok(self)
    }

    /// Bounds every request: sending it, waiting for the answer and reading
    /// the answer together may take at most `timeout` (default
    /// [`DEFAULT_REQUEST_TIMEOUT`]); long polls (`read` and
    /// `list_chunks_after` with a wait) get their wait on top. A request
    /// that runs out of time fails with [`ClientError::Timeout`], which for
    /// a write means "maybe stored". Connecting is bounded separately
    /// (5 s per address).
    /// ```
    /// use std::time::Duration;
    /// let client = chunkbus_client::Client::new("http://127.0.0.1:8080")?
    ///     .with_request_timeout(Duration::from_secs(5));
    /// assert_eq!(client.request_timeout(), Duration::from_secs(5));
    /// # Ok::<(), chunkbus_client::ClientError>(())
    /// ```
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The bound on one request (see [`Client::with_request_timeout`]).
    /// ```
    /// let client = chunkbus_client::Client::new("http://127.0.0.1:8080")?;
    /// assert_eq!(client.request_timeout(), chunkbus_client::DEFAULT_REQUEST_TIMEOUT);
    /// # Ok::<(), chunkbus_client::ClientError>(())
    /// ```
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

fn check_url(url: &str) -> Result<String, ClientError> {
    let base = url.trim_end_matches('/').to_owned();
    let invalid = |why: &str| ClientError::InvalidUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .ok_or_else(|| invalid("use http://host:port or https://host:port"))?;
    if rest.is_empty() {
        return Err(invalid("missing host"));
    }
    base.parse::<hyper::Uri>()
        .map_err(|e| invalid(&e.to_string()))?;
    Ok(base)
}

fn http_client(
    tls: rustls::ClientConfig,
) -> hyper_util::client::legacy::Client<crate::tls::Connector, Full<Bytes>> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build(crate::tls::connector(tls))
}
