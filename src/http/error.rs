//! [`ApiError`]: the only place where failures become HTTP statuses.
//! Every error body is one line of plain text saying what was wrong and
//! what is allowed (SPEC).

use bytes::Bytes;
use hyper::{header, Response, StatusCode};

use crate::names::NameError;
use crate::storage::chunk::format::BodyError;
use crate::storage::StorageError;

/// Header on `/write` errors: `false` = nothing was appended (safe to
/// resend), `true` = appended, but a later step (fdatasync) failed.
pub use chunkbus_client::WRITTEN_HEADER;

/// An HTTP error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// One-line message.
    pub message: String,
    /// For `/write`: whether the body was appended despite the error; sent
    /// as the `chunkbus-written` header so clients know whether resending
    /// could duplicate it.
    pub written: Option<bool>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            written: None,
        }
    }

    /// The same error, saying whether a write's body was appended.
    #[must_use]
    pub fn with_written(mut self, written: bool) -> Self {
        self.written = Some(written);
        self
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `503 Service Unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// The response: status plus the message as one text line.
    #[must_use]
    pub fn into_response(self) -> Response<super::body::Body> {
        let mut line = self.message.replace(['\n', '\r'], " ");
        line.push('\n');
        let mut resp = Response::new(super::body::Body::new(Bytes::from(line)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(written) = self.written {
            resp.headers_mut().insert(
                WRITTEN_HEADER,
                header::HeaderValue::from_static(if written { "true" } else { "false" }),
            );
        }
        resp
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        let status = match e {
            BodyError::Empty | BodyError::MissingFinalNewline => StatusCode::BAD_REQUEST,
            BodyError::MessageTooLarge { .. } | BodyError::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<crate::tier::TierError> for ApiError {
    fn from(e: crate::tier::TierError) -> Self {
        match e {
            crate::tier::TierError::Storage(s) => s.into(),
            other => {
                let message = crate::error_chain(&other);
                tracing::error!(error = %message, "reading a tiered chunk failed");
                Self::new(StatusCode::BAD_GATEWAY, message)
            }
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        let status = match &e {
            StorageError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            StorageError::Failed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            StorageError::UnknownChunk { .. } => StatusCode::NOT_FOUND,
            StorageError::NotSealed { .. }
            | StorageError::AckTooSmall { .. }
            | StorageError::OffsetBeyondEnd { .. }
            | StorageError::NotBoundary { .. }
            | StorageError::MaxSizeTooSmall { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = crate::error_chain(&e);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %message, "internal storage error");
        }
        Self::new(status, message)
    }
}
