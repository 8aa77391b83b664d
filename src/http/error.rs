//! [`ApiError`]: the only place where failures become HTTP statuses.
//!
//! Every layer classifies its own errors with an [`ErrorKind`]
//! ([`DomainError::kind`], next to each error's definition); [`status_of`]
//! is the one mapping from kinds to statuses, and the one conversion
//! `impl<E: DomainError> From<E> for ApiError` turns any of them into a
//! response. Every error body is one line of plain text saying what was
//! wrong and what is allowed (SPEC): the error and its causes
//! ([`crate::error_chain`]). Server-side failures (`500`, `502`) are logged
//! here. Handlers never choose a failure status.

use bytes::Bytes;
use hyper::{header, Response, StatusCode};

use crate::error::{DomainError, ErrorKind};

/// Header on `/write` errors: `false` = nothing was appended (safe to
/// resend), `true` = appended, but a later step (fdatasync) failed.
pub use chunkbus_client::WRITTEN_HEADER;

/// Header on a `404` for a chunk known to be deleted for good (`true`):
/// a consumer may skip it. A `404` without it may be a chunk this server
/// does not hold *yet*.
pub use chunkbus_client::DELETED_HEADER;

/// The status answering each kind of failure.
#[must_use]
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        // SPEC: an unknown chunk is a `404`; the `chunkbus-deleted` header
        // tells a deleted one apart.
        ErrorKind::NotFound | ErrorKind::Deleted => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
        // A peer's status came from a `StatusCode`, so it is valid.
        ErrorKind::Relayed(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
    }
}

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
    /// For `405`: the methods the path allows (the `Allow` header).
    pub allow: Option<String>,
    /// The chunk asked for is deleted for good: sent as
    /// `chunkbus-deleted: true` on the `404`.
    pub deleted: bool,
}

impl<E: DomainError> From<E> for ApiError {
    fn from(e: E) -> Self {
        let kind = e.kind();
        let message = crate::error_chain(&e);
        match kind {
            ErrorKind::Internal => tracing::error!(error = %message, "internal error"),
            ErrorKind::BadGateway => tracing::error!(error = %message, "upstream store failed"),
            _ => {}
        }
        Self {
            status: status_of(kind),
            message,
            written: None,
            allow: None,
            deleted: kind == ErrorKind::Deleted,
        }
    }
}

impl ApiError {
    /// The same error, saying whether a write's body was appended.
    #[must_use]
    pub fn with_written(mut self, written: bool) -> Self {
        self.written = Some(written);
        self
    }

    /// The same error, listing the methods the path allows.
    #[must_use]
    pub fn with_allow(mut self, allow: Option<String>) -> Self {
        self.allow = allow;
        self
    }

    /// The response: status plus the message as one text line, with
    /// `WWW-Authenticate` on `401`, `Allow` when known, and
    /// `chunkbus-written` when set.
    #[must_use]
    pub fn into_response(self) -> Response<super::body::Body> {
        let mut line = self.message.replace(['\n', '\r'], " ");
        line.push('\n');
        let mut resp = Response::new(super::body::Body::new(Bytes::from(line)));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(written) = self.written {
            h.insert(
                WRITTEN_HEADER,
                header::HeaderValue::from_static(if written { "true" } else { "false" }),
            );
        }
        if self.deleted {
            h.insert(DELETED_HEADER, header::HeaderValue::from_static("true"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"chunkbus\""),
            );
        }
        if let Some(v) = self
            .allow
            .and_then(|a| header::HeaderValue::try_from(a).ok())
        {
            h.insert(header::ALLOW, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status() {
        let table = [
            (ErrorKind::BadRequest, 400),
            (ErrorKind::Unauthorized, 401),
            (ErrorKind::Forbidden, 403),
            (ErrorKind::NotFound, 404),
            (ErrorKind::Deleted, 404),
            (ErrorKind::MethodNotAllowed, 405),
            (ErrorKind::RequestTimeout, 408),
            (ErrorKind::Conflict, 409),
            (ErrorKind::PayloadTooLarge, 413),
            (ErrorKind::UnsupportedMediaType, 415),
            (ErrorKind::Internal, 500),
            (ErrorKind::BadGateway, 502),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::DiskFull, 507),
            (ErrorKind::Relayed(409), 409),
            (ErrorKind::Relayed(503), 503),
            (ErrorKind::Relayed(42), 502),
        ];
        for (kind, status) in table {
            assert_eq!(status_of(kind).as_u16(), status, "{kind:?}");
        }
    }

    #[test]
    fn storage_errors_keep_their_statuses() {
        use crate::storage::StorageError;
        let io = || std::io::Error::other("boom");
        let cases: [(StorageError, u16); 6] = [
            (
                StorageError::DiskFull {
                    op: "append",
                    path: "/d/c".into(),
                    source: io(),
                },
                507,
            ),
            (
                StorageError::Failed {
                    category: "c".into(),
                    reason: "fdatasync".into(),
                },
                503,
            ),
            (
                StorageError::UnknownChunk {
                    category: "c".into(),
                    name: "n-chunk000000001".into(),
                },
                404,
            ),
            (
                StorageError::NotBoundary {
                    name: "n-chunk000000001".into(),
                    off: 3,
                },
                400,
            ),
            (
                StorageError::MaxSizeTooSmall {
                    max_size: 1,
                    next_len: 6,
                },
                400,
            ),
            (
                StorageError::Io {
                    op: "open",
                    path: "/d/c".into(),
                    source: io(),
                },
                500,
            ),
        ];
        for (e, status) in cases {
            let text = crate::error_chain(&e);
            let api = ApiError::from(e);
            assert_eq!(api.status.as_u16(), status, "{text}");
            assert_eq!(api.message, text);
        }
    }

    #[test]
    fn body_and_name_errors_are_client_errors() {
        use crate::storage::chunk::format::BodyError;
        assert_eq!(ApiError::from(BodyError::Empty).status, 400);
        let big = BodyError::BodyTooLarge { len: 9, max: 8 };
        assert_eq!(ApiError::from(big).status, 413);
        let name = crate::names::Category::parse("../x").unwrap_err();
        let api = ApiError::from(name);
        assert_eq!(api.status, 400);
        assert!(
            api.message.starts_with("invalid category"),
            "{}",
            api.message
        );
    }

    #[test]
    fn response_carries_the_headers() {
        let r = ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "no\ntoken".into(),
            written: Some(false),
            allow: None,
            deleted: false,
        }
        .into_response();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(r.headers()[WRITTEN_HEADER], "false");
        let r = ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: "use GET".into(),
            written: None,
            allow: Some("GET, POST".into()),
            deleted: false,
        }
        .into_response();
        assert_eq!(r.headers()[header::ALLOW], "GET, POST");
        assert!(!r.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
