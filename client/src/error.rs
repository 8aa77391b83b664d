//! [`ClientError`]: what a call to a chunkbus server can fail with, and
//! [`ProducerError`] / [`ConsumerError`] for the higher-level APIs.

use std::sync::Arc;

/// Errors of a single request to a chunkbus server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not `http://host:port[/prefix]`.
    #[error("invalid server URL {url:?}: {why}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The bearer token holds characters an HTTP header cannot carry.
    #[error("invalid token: use visible ASCII characters only")]
    InvalidToken,
    /// The CA certificates for `https://` servers are unusable, or an
    /// `https://` server was given without any.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server answered with an error status; `message` is its one-line body.
    #[error("server answered {status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The server's explanation.
        message: String,
        /// For `/write`: whether the body was appended despite the error
        /// (`chunkbus-written` header); `None` when the server did not say.
        written: Option<bool>,
    },
    /// The server answered `404` with `chunkbus-deleted: true`: the chunk
    /// was deleted for good (acked, or removed by retention) and will never
    /// be readable again. A plain `404` ([`ClientError::Status`]) is a chunk
    /// the server does not hold, perhaps not *yet*.
    #[error("server answered 404 (deleted): {message}")]
    ChunkDeleted {
        /// The server's explanation.
        message: String,
    },
    /// Connecting, sending or receiving failed.
    #[error("request to {url} failed")]
    Transport {
        /// The request URL.
        url: String,
        /// The connection could not be established: nothing was sent.
        connect: bool,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request did not complete in time ([`Client::with_request_timeout`](crate::Client::with_request_timeout)):
    /// the server accepted it but answered too slowly or not at all. A
    /// write may have been stored.
    #[error("request to {url} timed out after {after:?}")]
    Timeout {
        /// The request URL.
        url: String,
        /// The bound that ran out.
        after: std::time::Duration,
    },
    /// The server's answer was not the expected JSON.
    #[error("unexpected answer from {url}")]
    Decode {
        /// The request URL.
        url: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// Whether retrying the same request later may succeed: transport
    /// failures (connection refused, reset), `503` (shutting down,
    /// recovering, replicas not reached), `507` (disk full) and `408`.
    /// Validation errors (`400`, `404`, `413`) are permanent.
    ///
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) {
    /// if let Err(e) = client.list_categories().await {
    ///     if e.is_retryable() { /* try again later */ }
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => matches!(status, 408 | 429 | 502 | 503 | 504 | 507),
            Self::InvalidUrl { .. }
            | Self::InvalidToken
            | Self::Tls(_)
            | Self::Decode { .. }
            | Self::ChunkDeleted { .. } => false,
        }
    }

    /// Whether a failed write certainly stored nothing, so sending the same
    /// body again cannot duplicate it: the connection was never
    /// established, or the server answered a retryable status and said
    /// `chunkbus-written: false`. A reset connection or a timeout after
    /// the body was sent is *not* safe: the server may have stored it.
    ///
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// use chunkbus_client::WriteOptions;
    /// let body = bytes::Bytes::from_static(b"event\n");
    /// let reply = match client.write("events", body.clone(), WriteOptions::default()).await {
    ///     Err(e) if e.is_safe_to_resend() => client.write("events", body, WriteOptions::default()).await?,
    ///     other => other?,
    /// };
    /// # let _ = reply;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn is_safe_to_resend(&self) -> bool {
        match self {
            Self::Transport { connect, .. } => *connect,
            Self::Timeout { .. } => false,
            Self::Status { written, .. } => self.is_retryable() && *written == Some(false),
            Self::InvalidUrl { .. }
            | Self::InvalidToken
            | Self::Tls(_)
            | Self::Decode { .. }
            | Self::ChunkDeleted { .. } => false,
        }
    }

    /// Whether the server said the chunk is deleted for good
    /// ([`ClientError::ChunkDeleted`]): skipping it loses nothing.
    ///
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// match client.read("events", "node1-chunk000000000", 0, 1 << 20, None).await {
    ///     Err(e) if e.is_chunk_deleted() => { /* go on with the next chunk */ }
    ///     other => { let _ = other?; }
    /// }
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn is_chunk_deleted(&self) -> bool {
        matches!(self, Self::ChunkDeleted { .. })
    }

    /// The HTTP status, if the server answered.
    ///
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) {
    /// if let Err(e) = client.delete_group("events", "nobody").await {
    ///     assert_eq!(e.status(), Some(404));
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::ChunkDeleted { .. } => Some(404),
            _ => None,
        }
    }
}

/// Errors of a [`Producer`](crate::Producer).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// The message cannot be sent as given (not retryable).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// A batch could not be stored. Its category stops at the first such
    /// batch (later messages to it are refused with the same error until
    /// [`CategoryProducer::reset`](crate::CategoryProducer::reset)) so that
    /// no message is ever stored after a lost one; other categories go on.
    #[error(
        "batch of {count} messages from #{first_seq} of category {category:?} failed \
         ({})",
        if *.maybe_stored { "it may have been stored" } else { "it was not stored" }
    )]
    BatchFailed {
        /// Category of the batch.
        category: String,
        /// Sequence number of its first message.
        first_seq: u64,
        /// Number of messages in it.
        count: u64,
        /// Whether the server may have stored it (the outcome is unknown).
        maybe_stored: bool,
        /// The last request error.
        #[source]
        source: Arc<ClientError>,
    },
    /// The producer was closed (or stopped before the message's batch was
    /// answered).
    #[error("producer is closed")]
    Closed,
    /// [`try_send`](crate::CategoryProducer::try_send) or
    /// [`send_timeout`](crate::CategoryProducer::send_timeout) would have
    /// had to wait (longer) for memory (`buffer_bytes`): nothing was
    /// queued.
    #[error("the producer's buffer is full (buffer_bytes); the message was not queued")]
    Full,
    /// [`Producer::shutdown`](crate::Producer::shutdown) stopped with
    /// messages not acknowledged (time ran out, or a category had failed).
    #[error("{messages} messages were not acknowledged at shutdown ({})",
        categories.iter().map(|(c, n)| format!("{c}: {n}")).collect::<Vec<_>>().join(", "))]
    Undelivered {
        /// Messages not acknowledged, in all categories.
        messages: u64,
        /// Per category (sorted by name): messages not acknowledged.
        categories: Vec<(String, u64)>,
    },
}

impl ConsumerError {
    /// A group ack was refused with `409`: the group's stored position is
    /// already past it, or (a conditional ack) not where this consumer
    /// left it: another member acked those messages.
    ///
    /// ```no_run
    /// # async fn demo(consumer: chunkbus_client::Consumer, batch: chunkbus_client::Batch) {
    /// if let Err(e) = consumer.ack(&batch).await {
    ///     if e.is_conflict() { /* someone else processed it: discard my results */ }
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Client(e) if e.status() == Some(409))
    }
}

/// Errors of a [`Consumer`](crate::Consumer).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// A request failed permanently, or retries ran out.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server sent data that is not whole messages.
    #[error("server returned {len} bytes of {chunk} at offset {off} not ending in a newline")]
    PartialMessage {
        /// Chunk read.
        chunk: String,
        /// Offset read from.
        off: u64,
        /// Bytes returned.
        len: usize,
    },
    /// The server keeps answering that it does not hold a chunk the
    /// consumer must read next (a plain `404`: a replica still catching up,
    /// a load balancer sending reads to a server without it), for longer
    /// than [`missing_chunk_wait`](crate::ConsumerConfig::missing_chunk_wait).
    /// The chunk is not skipped: the consumer keeps retrying and reports
    /// this again while it lasts. Only a chunk the server says is deleted
    /// ([`ClientError::ChunkDeleted`]) is skipped.
    #[error("chunk {chunk} is not available on the server (not deleted; retrying) for {waited:?}")]
    ChunkUnavailable {
        /// The chunk.
        chunk: String,
        /// How long it has been missing.
        waited: std::time::Duration,
        /// The last answer (a `404`).
        #[source]
        source: ClientError,
    },
    /// A stored position names a chunk that is not `<owner>-chunk<9 digits>`.
    #[error("invalid position: {0}")]
    InvalidPosition(String),
    /// An earlier group ack of this consumer failed (`409`: another member
    /// moved the group; or its answer was lost, so whether it was stored
    /// is unknown). Acking on from local state could cover batches this
    /// consumer gave up (rolled back) or skip the group past ones nobody
    /// processed, so every later ack fails with this error: start a new
    /// consumer from the group's stored positions.
    #[error("an earlier group ack failed ({first}); restart the consumer from the group's stored positions")]
    GroupAckStopped {
        /// The error of the first failed ack.
        first: String,
    },
}
