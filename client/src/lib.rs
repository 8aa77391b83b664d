//! Rust client for [chunkbus](https://example.invalid/chunkbus), a persistent
//! event bus over HTTP.
//!
//! [`Client`] maps one method to each endpoint of the server's API:
//! [`Client::write`] appends newline-terminated messages to a category,
//! [`Client::list_chunks`] and [`Client::read`] fetch whole messages by
//! (chunk, offset), and [`Client::ack_chunk`] deletes a sealed chunk that has
//! been fully processed (chukcha semantics).
//!
//! # Example
//! ```no_run
//! use chunkbus_client::{Client, WriteOptions};
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), chunkbus_client::ClientError> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let at = client.write("events", "hello\nworld\n", WriteOptions::default()).await?;
//! println!("stored in {} at offset {}", at.chunk, at.offset);
//!
//! for chunk in client.list_chunks("events").await? {
//!     let mut off = 0;
//!     loop {
//!         let bytes = client.read("events", &chunk.name, off, 1 << 20, Some(Duration::from_millis(100))).await?;
//!         if bytes.is_empty() {
//!             break; // nothing more yet (open chunk) or end (sealed chunk)
//!         }
//!         off += bytes.len() as u64;
//!         for msg in bytes.split_inclusive(|&b| b == b'\n') {
//!             print!("{}", String::from_utf8_lossy(msg));
//!         }
//!     }
//!     if chunk.complete && off == chunk.size {
//!         client.ack_chunk("events", &chunk.name, chunk.size).await?;
//!     }
//! }
//! # Ok(()) }
//! ```
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

mod error;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use error::ClientError;

/// Where a write was stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct WriteReply {
    /// Chunk name, e.g. `node1-chunk000000007`.
    pub chunk: String,
    /// Offset of the body's first byte in the chunk.
    pub offset: u64,
    /// Body length in bytes.
    pub size: u64,
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
}

/// Durability options of a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Reply only once the data is on the server's disk (`sync=1`).
    pub sync: bool,
}

/// A client for one chunkbus server. Cheap to clone; connections are pooled.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client for the server at `base_url` (`http://host:port`).
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] for anything but an `http://` URL.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_owned();
        let invalid = |why: &str| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            why: why.to_owned(),
        };
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| invalid("only http:// is supported"))?;
        if rest.is_empty() {
            return Err(invalid("missing host"));
        }
        base.parse::<hyper::Uri>()
            .map_err(|e| invalid(&e.to_string()))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { base, http })
    }

    /// Appends `body` (one or more messages, each ending in `\n`) to
    /// `category` atomically.
    ///
    /// # Errors
    /// [`ClientError::Status`] with 400 (bad category or body), 413 (too
    /// large), 503/507 (retryable), or a transport error.
    pub async fn write(
        &self,
        category: &str,
        body: impl Into<Bytes>,
        opts: WriteOptions,
    ) -> Result<WriteReply, ClientError> {
        let mut q = format!("category={}", enc(category));
        if opts.sync {
            q.push_str("&sync=1");
        }
        self.json(Method::POST, "/write", &q, body.into()).await
    }

    /// Whole messages of `chunk` from `off`, at most `max_size` bytes. An
    /// empty result means no more data yet (open chunk) or the end (sealed
    /// chunk). `wait` long-polls up to that long for new data.
    ///
    /// # Errors
    /// [`ClientError::Status`] with 400 (bad offset, `max_size` too small for
    /// the next message) or 404 (unknown chunk), or a transport error.
    pub async fn read(
        &self,
        category: &str,
        chunk: &str,
        off: u64,
        max_size: u64,
        wait: Option<Duration>,
    ) -> Result<Bytes, ClientError> {
        let mut q = format!(
            "category={}&chunk={}&off={off}&max_size={max_size}",
            enc(category),
            enc(chunk)
        );
        if let Some(w) = wait {
            q.push_str(&format!("&wait_ms={}", w.as_millis().min(60_000)));
        }
        self.call(Method::GET, "/read", &q, Bytes::new()).await
    }

    /// Every non-empty chunk of `category` the server holds, oldest first
    /// per owner.
    ///
    /// # Errors
    /// [`ClientError::Status`] 400 for a bad category, or a transport error.
    pub async fn list_chunks(&self, category: &str) -> Result<Vec<ChunkInfo>, ClientError> {
        self.json(
            Method::GET,
            "/listChunks",
            &format!("category={}", enc(category)),
            Bytes::new(),
        )
        .await
    }

    /// Names of all categories.
    ///
    /// # Errors
    /// A transport or decode error.
    pub async fn list_categories(&self) -> Result<Vec<String>, ClientError> {
        self.json(Method::GET, "/listCategories", "", Bytes::new())
            .await
    }

    /// Deletes a sealed chunk that has been processed up to `size` (its
    /// final size or more).
    ///
    /// # Errors
    /// [`ClientError::Status`] 400 (not sealed, or `size` too small) or 404.
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
        self.call(Method::GET, "/ack", &q, Bytes::new())
            .await
            .map(drop)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
    ) -> Result<T, ClientError> {
        let bytes = self.call(method, path, query, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            url: format!("{}{path}", self.base),
            source,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        let url = if query.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{query}", self.base)
        };
        let transport = |source: Box<dyn std::error::Error + Send + Sync>| ClientError::Transport {
            url: url.clone(),
            source,
        };
        let req = Request::builder()
            .method(method)
            .uri(&url)
            .body(Full::new(body))
            .map_err(|e| transport(Box::new(e)))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| transport(Box::new(e)))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(Box::new(e)))?
            .to_bytes();
        if status == 200 {
            Ok(bytes)
        } else {
            Err(ClientError::Status {
                status,
                message: String::from_utf8_lossy(&bytes).trim_end().to_owned(),
            })
        }
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
