//! [`ClientError`]: what a call to a chunkbus server can fail with.

/// Errors of the chunkbus client.
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
    /// The server answered with an error status; `message` is its one-line body.
    #[error("server answered {status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// Connecting, sending or receiving failed.
    #[error("request to {url} failed")]
    Transport {
        /// The request URL.
        url: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => matches!(status, 408 | 429 | 502 | 503 | 504 | 507),
            Self::InvalidUrl { .. } | Self::Decode { .. } => false,
        }
    }

    /// The HTTP status, if the server answered.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
