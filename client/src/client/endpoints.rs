//! The endpoints of [`Client`] besides `/write`: `/read` (also from a
//! given holder), `/peers`, `/listChunks` (also long-polled),
//! `/listCategories`, `/ack` (chunk and group acks) and `/consumers`.
//!
//! Never retries or fails over itself: `transport.rs` does what failover
//! there is.

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;

use super::transport::enc;
use super::{ChunkInfo, Client, GroupStatus};
use crate::error::ClientError;

impl Client {
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
