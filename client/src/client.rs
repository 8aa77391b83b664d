//! [`Client`]: one method per endpoint of the server's HTTP API, with
//! failover across a list of server addresses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioExecutor;

use crate::error::ClientError;

/// Response header the server sets on a failed `/write`: `false` when the
/// body was not appended (safe to send again), `true` when it was appended
/// but a later step (fdatasync, replicas) failed.
pub const WRITTEN_HEADER: &str = "chunkbus-written";

/// Response header the server sets (`true`) on a `404` for a chunk it
/// knows is deleted for good (acked, or removed by retention). A `404`
/// without it means the server does not hold the chunk, which may still
/// change (a replica catching up): [`ClientError::ChunkDeleted`] vs
/// [`ClientError::Status`] with 404.
pub const DELETED_HEADER: &str = "chunkbus-deleted";

/// Where a write was stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct WriteReply {
    /// Chunk name, e.g. `node1-chunk000000007`.
    pub chunk: String,
    /// Offset of the body's first byte in the chunk.
    pub offset: u64,
    /// Body length in bytes.
    pub size: u64,
    /// An idempotent write ([`Client::write_idempotent`]) whose batch was
    /// stored before: the position is the original's, nothing was stored
    /// again.
    #[serde(default)]
    pub duplicate: bool,
}

/// An idempotent producer's tag of one write: the producer's id (not 0)
/// and the batch's sequence number, which must grow from one batch to the
/// next of the same producer and category (gaps are fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerTag {
    /// The producer's id: random, chosen once per producer, never 0.
    pub producer: u64,
    /// The batch's sequence number.
    pub seq: u64,
}

/// One chunk as listed by the server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ChunkInfo {
    /// Chunk name.
    pub name: String,
    /// Sealed: the chunk will never grow again.
    pub complete: bool,
    /// Bytes of whole messages readable on that server now.
    pub size: u64,
    /// The servers holding the chunk (by `--name`, its owner first), from
    /// a cluster server; empty from a single node or an older server. A
    /// [`Consumer`](crate::Consumer) reads the chunk directly from them.
    #[serde(default)]
    pub holders: Vec<String>,
}

/// A consumer group as listed by `GET /consumers`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct GroupStatus {
    /// Group name.
    pub consumer: String,
    /// Stored position per chunk.
    pub positions: Vec<GroupPosition>,
    /// Bytes of chunks on that server the group has not acked.
    pub lag_bytes: u64,
    /// Messages in those bytes.
    pub lag_messages: u64,
}

/// A group's stored position in one chunk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct GroupPosition {
    /// Chunk name.
    pub chunk: String,
    /// Acknowledged offset.
    pub offset: u64,
}

/// How long a request may take by default, from sending it to the last
/// byte of the answer (long polls get their wait on top).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Durability options of a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Reply only once the data is on the server's disk (`sync=1`).
    pub sync: bool,
    /// Reply only once this many other servers hold the bytes
    /// (`min_sync_replicas=K`); 0 = do not wait for replicas.
    pub min_sync_replicas: u32,
}

/// A client for a chunkbus server, or several interchangeable ones. Cheap
/// to clone; connections are pooled.
///
/// With several addresses the client talks to one at a time and moves to
/// the next when a connection cannot be established (nothing was sent, so
/// this is safe for every request, writes included).
#[derive(Debug, Clone)]
pub struct Client {
    bases: Arc<[String]>,
    active: Arc<AtomicUsize>,
    http: hyper_util::client::legacy::Client<crate::tls::Connector, Full<Bytes>>,
    auth: Option<hyper::header::HeaderValue>,
    /// CA certificates were given: `https://` servers can be verified.
    tls: bool,
    /// Bound on one request (see [`Client::with_request_timeout`]).
    request_timeout: Duration,
}

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

    /// A clone whose active address moves on its own from now on: its
    /// [`Client::fail_over`] and connect failovers no longer move this
    /// client's requests (nor those of its other clones). Consumer readers
    /// use one, so a reader that moves to another server for a chunk not
    /// replicated yet does not take the consumer's group acks with it.
    pub(crate) fn detached(&self) -> Self {
        Self {
            active: Arc::new(AtomicUsize::new(self.active.load(Ordering::Relaxed))),
            ..self.clone()
        }
    }

    /// Moves requests to the next address (after an answer that another
    /// server may answer better, e.g. a chunk not replicated here yet).
    pub(crate) fn fail_over(&self) {
        let n = self.bases.len();
        if n > 1 {
            let cur = self.active.load(Ordering::Relaxed);
            let _ = self.active.compare_exchange(
                cur,
                (cur + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// The address requests currently go to.
    /// ```
    /// let client = chunkbus_client::Client::new("http://127.0.0.1:8080/")?;
    /// assert_eq!(client.active_server(), "http://127.0.0.1:8080");
    /// # Ok::<(), chunkbus_client::ClientError>(())
    /// ```
    #[must_use]
    pub fn active_server(&self) -> &str {
        &self.bases[self.active.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Appends `body` (one or more messages, each ending in `\n`) to
    /// `category` atomically.
    ///
    /// # Errors
    /// [`ClientError::Status`] with 400 (bad category or body), 413 (too
    /// large), 503/507 (retryable), or a transport error.
    /// [`ClientError::is_safe_to_resend`] says whether the body certainly
    /// was not stored.
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// use chunkbus_client::WriteOptions;
    /// let reply = client.write("events", "one\ntwo\n", WriteOptions::default()).await?;
    /// println!("stored in {} at {}", reply.chunk, reply.offset);
    /// # Ok(()) }
    /// ```
    pub async fn write(
        &self,
        category: &str,
        body: impl Into<Bytes>,
        opts: WriteOptions,
    ) -> Result<WriteReply, ClientError> {
        self.write_at(None, category, body.into(), opts, None)
            .await
            .0
    }

    /// Appends `body` to `category` once, whatever repeats it: the server
    /// stores a batch tagged `tag` only if `tag.seq` is above the last
    /// sequence number it stored for `tag.producer` in this category; the
    /// same tag again is answered with the original position and
    /// [`WriteReply::duplicate`] set, a lower one is a `409`. So a write
    /// whose answer was lost may be sent again with the same tag, to the
    /// same server — or to another one that already holds a copy of the
    /// original (see docs/client.md).
    ///
    /// # Errors
    /// As [`Client::write`]; [`ClientError::Status`] 409 for a sequence
    /// number below the last stored one, 400 for producer 0.
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// use chunkbus_client::{ProducerTag, WriteOptions};
    /// let tag = ProducerTag { producer: 0x5eed, seq: 1 };
    /// let first = client.write_idempotent("events", "one\n", WriteOptions::default(), tag).await?;
    /// // The answer was lost? Send it again: stored once.
    /// let again = client.write_idempotent("events", "one\n", WriteOptions::default(), tag).await?;
    /// assert_eq!((again.chunk, again.offset), (first.chunk, first.offset));
    /// # Ok(()) }
    /// ```
    pub async fn write_idempotent(
        &self,
        category: &str,
        body: impl Into<Bytes>,
        opts: WriteOptions,
        tag: ProducerTag,
    ) -> Result<WriteReply, ClientError> {
        self.write_at(None, category, body.into(), opts, Some(tag))
            .await
            .0
    }

    /// Number of server addresses.
    pub(crate) fn server_count(&self) -> usize {
        self.bases.len()
    }

    /// Asks server number `server` (only) whether it holds the batch
    /// tagged `tag` (`/write?…&probe=1`, empty body): its position, with
    /// [`WriteReply::duplicate`] set, or an error (`404` when it does not
    /// hold it). Stores nothing.
    pub(crate) async fn find_at(
        &self,
        server: usize,
        category: &str,
        opts: WriteOptions,
        tag: ProducerTag,
    ) -> Result<WriteReply, ClientError> {
        self.write_inner(Some(server), category, Bytes::new(), opts, Some(tag), true)
            .await
            .0
    }

    /// A write to server number `server` only (no failover), or, with
    /// `None`, to the active server with failover on connect failures;
    /// also says which server was asked last.
    pub(crate) async fn write_at(
        &self,
        server: Option<usize>,
        category: &str,
        body: Bytes,
        opts: WriteOptions,
        tag: Option<ProducerTag>,
    ) -> (Result<WriteReply, ClientError>, usize) {
        self.write_inner(server, category, body, opts, tag, false)
            .await
    }

    async fn write_inner(
        &self,
        server: Option<usize>,
        category: &str,
        body: Bytes,
        opts: WriteOptions,
        tag: Option<ProducerTag>,
        probe: bool,
    ) -> (Result<WriteReply, ClientError>, usize) {
        let mut q = format!("category={}", enc(category));
        if opts.sync {
            q.push_str("&sync=1");
        }
        if opts.min_sync_replicas > 0 {
            q.push_str(&format!("&min_sync_replicas={}", opts.min_sync_replicas));
        }
        if let Some(t) = tag {
            q.push_str(&format!("&producer={}&seq={}", t.producer, t.seq));
            if probe {
                q.push_str("&probe=1");
            }
        }
        let (result, idx) = self
            .call_from(server, Method::POST, "/write", &q, body, Duration::ZERO)
            .await;
        let result = result.and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
                url: format!("{}/write", self.bases[idx % self.bases.len()]),
                source,
            })
        });
        (result, idx)
    }

    /// Whole messages of `chunk` from `off`, at most `max_size` bytes. An
    /// empty result means no more data yet (open chunk) or the end (sealed
    /// chunk). `wait` long-polls up to that long for new data.
    ///
    /// # Errors
    /// [`ClientError::Status`] with 400 (bad offset, `max_size` too small for
    /// the next message) or 404 (unknown chunk), or a transport error.
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// use std::time::Duration;
    /// let bytes = client
    ///     .read("events", "node1-chunk000000000", 0, 1 << 20, Some(Duration::from_secs(1)))
    ///     .await?;
    /// # let _ = bytes;
    /// # Ok(()) }
    /// ```
    pub async fn read(
        &self,
        category: &str,
        chunk: &str,
        off: u64,
        max_size: u64,
        wait: Option<Duration>,
    ) -> Result<Bytes, ClientError> {
        let (q, extra) = read_query(category, chunk, off, max_size, wait);
        self.call(Method::GET, "/read", &q, Bytes::new(), extra)
            .await
    }

    /// [`Client::read`] from the server at `base` (an `http(s)://host:port`
    /// address, e.g. a chunk's holder from [`Client::cluster_servers`]),
    /// whatever the client's own addresses; no failover.
    ///
    /// # Errors
    /// As [`Client::read`].
    pub async fn read_at(
        &self,
        base: &str,
        category: &str,
        chunk: &str,
        off: u64,
        max_size: u64,
        wait: Option<Duration>,
    ) -> Result<Bytes, ClientError> {
        let (q, extra) = read_query(category, chunk, off, max_size, wait);
        let base = base.trim_end_matches('/');
        self.call_one(
            base,
            Method::GET,
            "/read",
            &q,
            Bytes::new(),
            self.request_timeout.saturating_add(extra),
        )
        .await
    }

    /// The servers of the cluster by name (`GET /peers`): the server that
    /// answered, at the address this client used, and its peers at their
    /// configured addresses.
    ///
    /// # Errors
    /// A transport error, or [`ClientError::Decode`] for an unexpected body.
    pub async fn cluster_servers(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, ClientError> {
        #[derive(serde::Deserialize)]
        struct PeerRow {
            name: String,
            url: String,
        }
        #[derive(serde::Deserialize)]
        struct PeersReply {
            name: String,
            #[serde(default)]
            peers: Vec<PeerRow>,
        }
        let reply: PeersReply = self
            .json(Method::GET, "/peers", "", Bytes::new(), Duration::ZERO)
            .await?;
        let here = self.active_server().to_owned();
        let mut out: std::collections::BTreeMap<String, String> =
            reply.peers.into_iter().map(|p| (p.name, p.url)).collect();
        out.insert(reply.name, here);
        Ok(out)
    }

    /// Every non-empty chunk of `category` the server holds, oldest first
    /// per owner.
    ///
    /// # Errors
    /// [`ClientError::Status`] 400 for a bad category, or a transport error.
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// for c in client.list_chunks("events").await? {
    ///     println!("{} {} bytes{}", c.name, c.size, if c.complete { " (sealed)" } else { "" });
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_chunks(&self, category: &str) -> Result<Vec<ChunkInfo>, ClientError> {
        self.json(
            Method::GET,
            "/listChunks",
            &format!("category={}", enc(category)),
            Bytes::new(),
            Duration::ZERO,
        )
        .await
    }

    /// Like [`Client::list_chunks`], but if the server holds no chunk newer
    /// than `after` from the same owner, it waits up to `wait` for one to
    /// appear first (a chunkbus extension: `after` + `wait_ms`).
    ///
    /// # Errors
    /// As [`Client::list_chunks`].
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// use std::time::Duration;
    /// let chunks = client
    ///     .list_chunks_after("events", "node1-chunk000000003", Duration::from_secs(5))
    ///     .await?;
    /// # let _ = chunks;
    /// # Ok(()) }
    /// ```
    pub async fn list_chunks_after(
        &self,
        category: &str,
        after: &str,
        wait: Duration,
    ) -> Result<Vec<ChunkInfo>, ClientError> {
        let wait = wait.min(MAX_WAIT);
        let q = format!(
            "category={}&after={}&wait_ms={}",
            enc(category),
            enc(after),
            wait.as_millis()
        );
        self.json(Method::GET, "/listChunks", &q, Bytes::new(), wait)
            .await
    }

    /// Names of all categories.
    ///
    /// # Errors
    /// A transport or decode error.
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// let names = client.list_categories().await?;
    /// # let _ = names;
    /// # Ok(()) }
    /// ```
    pub async fn list_categories(&self) -> Result<Vec<String>, ClientError> {
        self.json(
            Method::GET,
            "/listCategories",
            "",
            Bytes::new(),
            Duration::ZERO,
        )
        .await
    }

    /// Deletes a sealed chunk that has been processed up to `size` (its
    /// final size or more).
    ///
    /// # Errors
    /// [`ClientError::Status`] 400 (not sealed, or `size` too small) or 404.
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// match client.ack_chunk("events", "node1-chunk000000000", 4096).await {
    ///     Ok(()) => {}
    ///     Err(e) if e.is_chunk_deleted() => {} // deleted already
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn ack_chunk(
        &self,
        category: &str,
        chunk: &str,
        size: u64,
    ) -> Result<(), ClientError> {
        let q = format!(
            "category={}&chunk={}&size={size}",
            enc(category),
            enc(chunk)
        );
        self.call(Method::GET, "/ack", &q, Bytes::new(), Duration::ZERO)
            .await
            .map(drop)
    }

    /// Stores consumer group `group`'s position in `chunk` as `to`,
    /// durably, only if the group is at `from` in that chunk (0 when it has
    /// no position there) — a compare-and-set (`POST
    /// /ack?consumer=G&from=F&off=T`). Of two members that processed the
    /// same messages, exactly one succeeds.
    ///
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// match client.ack_group_from("events", "billing", "node1-chunk000000000", 0, 120).await {
    ///     Ok(()) => {} // the group moved 0 → 120
    ///     Err(e) if e.status() == Some(409) => {} // someone else acked it first
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::Status`] 409 when the group is not at `from` (the
    /// message says where it is), 400 for a bad offset or `from` > `to`,
    /// 404 for an unknown chunk.
    pub async fn ack_group_from(
        &self,
        category: &str,
        group: &str,
        chunk: &str,
        from: u64,
        to: u64,
    ) -> Result<(), ClientError> {
        let q = format!(
            "category={}&consumer={}&chunk={}&from={from}&off={to}",
            enc(category),
            enc(group),
            enc(chunk)
        );
        self.call(Method::POST, "/ack", &q, Bytes::new(), Duration::ZERO)
            .await
            .map(drop)
    }

    /// Stores consumer group `group`'s position in `chunk` as `offset` (a
    /// message boundary), durably (`POST /ack?consumer=G`), if it is not
    /// behind the stored one. Unconditional otherwise: two members acking
    /// the same batch both succeed; use [`Client::ack_group_from`] when
    /// only one may.
    ///
    /// # Errors
    /// [`ClientError::Status`] 409 when `offset` is behind the stored
    /// position (the message names it), 400 for a bad offset, 404 for an
    /// unknown chunk.
    ///
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// client.ack_group("events", "billing", "node1-chunk000000000", 120).await?;
    /// # Ok(()) }
    /// ```
    pub async fn ack_group(
        &self,
        category: &str,
        group: &str,
        chunk: &str,
        offset: u64,
    ) -> Result<(), ClientError> {
        let q = format!(
            "category={}&consumer={}&chunk={}&off={offset}",
            enc(category),
            enc(group),
            enc(chunk)
        );
        self.call(Method::POST, "/ack", &q, Bytes::new(), Duration::ZERO)
            .await
            .map(drop)
    }

    /// Every consumer group of `category` with its positions and lag.
    ///
    /// # Errors
    /// A transport, status or decode error.
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// for g in client.consumers("events").await? {
    ///     println!("{}: {} messages behind", g.consumer, g.lag_messages);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn consumers(&self, category: &str) -> Result<Vec<GroupStatus>, ClientError> {
        self.json(
            Method::GET,
            "/consumers",
            &format!("category={}", enc(category)),
            Bytes::new(),
            Duration::ZERO,
        )
        .await
    }

    /// Deletes consumer group `group` of `category`.
    ///
    /// # Errors
    /// [`ClientError::Status`] 404 for an unknown group.
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// client.delete_group("events", "billing").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_group(&self, category: &str, group: &str) -> Result<(), ClientError> {
        let q = format!("category={}&consumer={}", enc(category), enc(group));
        self.call(
            Method::DELETE,
            "/consumers",
            &q,
            Bytes::new(),
            Duration::ZERO,
        )
        .await
        .map(drop)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
        extra: Duration,
    ) -> Result<T, ClientError> {
        let bytes = self.call(method, path, query, body, extra).await?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            url: format!("{}{path}", self.active_server()),
            source,
        })
    }

    /// Sends the request to the active server; on a connect failure moves
    /// on to the next address, trying each at most once. Each attempt may
    /// take the request timeout plus `extra` (a long poll's wait).
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
        extra: Duration,
    ) -> Result<Bytes, ClientError> {
        self.call_from(None, method, path, query, body, extra)
            .await
            .0
    }

    /// [`Client::call`], or with `Some(server)` a request to that server
    /// only (no failover); also returns the index of the server asked last.
    async fn call_from(
        &self,
        server: Option<usize>,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
        extra: Duration,
    ) -> (Result<Bytes, ClientError>, usize) {
        let n = self.bases.len();
        let (start, tries) = match server {
            Some(i) => (i % n.max(1), n.min(1)),
            None => (self.active.load(Ordering::Relaxed), n),
        };
        let mut last_err = None;
        let mut last_idx = start;
        for step in 0..tries {
            let idx = (start + step) % n;
            last_idx = idx;
            let attempt = self.call_one(
                &self.bases[idx],
                method.clone(),
                path,
                query,
                body.clone(),
                self.request_timeout.saturating_add(extra),
            );
            let attempt = crate::stats::in_span(
                attempt,
                || tracing::debug_span!("chunkbus.request", %method, server = %self.bases[idx], path),
            );
            match attempt.await {
                Err(e @ ClientError::Transport { connect: true, .. }) => {
                    last_err = Some(e);
                    // Move on only if nobody else has already.
                    let _ = self.active.compare_exchange(
                        idx,
                        (idx + 1) % self.bases.len(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                other => {
                    if server.is_none() && idx != start % n {
                        self.active.store(idx, Ordering::Relaxed);
                    }
                    return (other, idx);
                }
            }
        }
        let err = last_err.unwrap_or_else(|| ClientError::InvalidUrl {
            url: String::new(),
            why: "no server address given".to_owned(),
        });
        (Err(err), last_idx)
    }

    async fn call_one(
        &self,
        base: &str,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        if !self.tls && base.starts_with("https://") {
            return Err(ClientError::Tls(format!(
                "{base} needs the CA certificates that signed its certificate (Client::with_ca_pem, CLI --ca)"
            )));
        }
        let url = if query.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{query}")
        };
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(auth) = &self.auth {
            req = req.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                connect: false,
                source: Box::new(e),
            })?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ClientError::Transport {
                    url: url.clone(),
                    connect: e.is_connect(),
                    source: Box::new(e),
                })?;
            let status = resp.status().as_u16();
            let deleted = resp
                .headers()
                .get(DELETED_HEADER)
                .is_some_and(|v| v.as_bytes() == b"true");
            let written = resp
                .headers()
                .get(WRITTEN_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<bool>().ok());
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport {
                    url: url.clone(),
                    connect: false,
                    source: Box::new(e),
                })?
                .to_bytes();
            Ok::<_, ClientError>((status, written, deleted, bytes))
        };
        let (status, written, deleted, bytes) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_elapsed| ClientError::Timeout {
                url: url.clone(),
                after: timeout,
            })??;
        if status == 200 {
            Ok(bytes)
        } else if status == 404 && deleted {
            Err(ClientError::ChunkDeleted {
                message: String::from_utf8_lossy(&bytes).trim_end().to_owned(),
            })
        } else {
            Err(ClientError::Status {
                status,
                message: String::from_utf8_lossy(&bytes).trim_end().to_owned(),
                written,
            })
        }
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

/// Longest long-poll wait the server accepts (SPEC: `wait_ms` ≤ 60000).
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The query of a `/read` and the extra time its long poll may take.
fn read_query(
    category: &str,
    chunk: &str,
    off: u64,
    max_size: u64,
    wait: Option<Duration>,
) -> (String, Duration) {
    let mut q = format!(
        "category={}&chunk={}&off={off}&max_size={max_size}",
        enc(category),
        enc(chunk)
    );
    let mut extra = Duration::ZERO;
    if let Some(w) = wait {
        extra = w.min(MAX_WAIT);
        q.push_str(&format!("&wait_ms={}", extra.as_millis()));
    }
    (q, extra)
}
pub(crate) fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_clone_fails_over_alone() {
        let c = Client::with_servers(["http://127.0.0.1:1", "http://127.0.0.1:2"])
            .expect("valid addresses");
        let shared = c.clone();
        let reader = c.detached();
        reader.fail_over();
        assert_eq!(reader.active_server(), "http://127.0.0.1:2");
        assert_eq!(
            c.active_server(),
            "http://127.0.0.1:1",
            "not moved by the reader"
        );
        c.fail_over();
        assert_eq!(
            shared.active_server(),
            "http://127.0.0.1:2",
            "clones move together"
        );
        reader.fail_over();
        assert_eq!(reader.active_server(), "http://127.0.0.1:1");
    }
}
