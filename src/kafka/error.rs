//! The Kafka listener's errors: [`FrameError`] ends a connection (the
//! byte stream cannot be trusted any more); [`PartitionError`] is one
//! partition's answer inside a response, as a Kafka error code plus a
//! message. [`code_for`] maps a domain error (storage, reads, cluster) to
//! a Kafka error code by its kind, [`lookup_code`] a group coordinator's
//! lookup through holders; the protocol's own refusals (a wrong leader or
//! coordinator, an invalid name, a store still loading) are chosen where
//! the request is checked. Never does I/O.

use kafka_protocol::ResponseError;

use crate::cluster::ClusterError;
use crate::error::{DomainError, ErrorKind};

/// Why a connection is closed without reading further.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Reading from or writing to the socket failed.
    #[error("connection I/O failed")]
    Io(#[from] std::io::Error),
    /// The length prefix announces more than the frame limit.
    #[error("request frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The limit (`max_batch_size` plus headroom).
        max: u64,
    },
    /// The length prefix is negative or too small for a request header.
    #[error("request frame length {0} is invalid")]
    BadLength(i32),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a request frame")]
    Truncated,
    /// The request header or body does not decode.
    #[error("malformed {what} request (api key {api_key}, version {version}): {why}")]
    Malformed {
        /// Which API.
        what: &'static str,
        /// Its key.
        api_key: i16,
        /// Its version.
        version: i16,
        /// The decoder's complaint.
        why: String,
    },
    /// An API key this server does not serve, or a version outside the
    /// supported range: answered with `UNSUPPORTED_VERSION`, then closed.
    #[error("unsupported api key {api_key} version {version}")]
    Unsupported {
        /// Requested key.
        api_key: i16,
        /// Requested version.
        version: i16,
    },
    /// The client has not authenticated (SASL) and sent another request.
    #[error("request before SASL authentication")]
    Unauthenticated,
    /// SASL/PLAIN with a wrong password (answered, then closed).
    #[error("SASL authentication failed")]
    AuthenticationFailed,
    /// A response could not be encoded (a bug).
    #[error("encoding the {what} response failed: {why}")]
    Encode {
        /// Which API.
        what: &'static str,
        /// The encoder's complaint.
        why: String,
    },
}

/// One partition's (or group's) failure: a Kafka error code and a message
/// saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionError {
    /// The Kafka error.
    pub code: ResponseError,
    /// Human-readable reason (sent where the API has a message field).
    pub message: String,
}

impl PartitionError {
    /// An error with a message.
    #[must_use]
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// From a chunkbus domain error (see [`code_for`]).
    #[must_use]
    pub fn from_domain(e: &impl DomainError) -> Self {
        Self::new(code_for(e.kind()), crate::error_chain(e))
    }
}

/// The Kafka error code for a chunkbus failure kind.
#[must_use]
pub fn code_for(kind: ErrorKind) -> ResponseError {
    match kind {
        ErrorKind::BadRequest | ErrorKind::UnsupportedMediaType => ResponseError::InvalidRequest,
        ErrorKind::Unauthorized | ErrorKind::Forbidden => ResponseError::TopicAuthorizationFailed,
        ErrorKind::NotFound | ErrorKind::Deleted => ResponseError::UnknownTopicOrPartition,
        ErrorKind::PayloadTooLarge => ResponseError::MessageTooLarge,
        ErrorKind::Conflict => ResponseError::PolicyViolation,
        ErrorKind::RequestTimeout => ResponseError::RequestTimedOut,
        ErrorKind::Unavailable => ResponseError::LeaderNotAvailable,
        ErrorKind::DiskFull
        | ErrorKind::Internal
        | ErrorKind::BadGateway
        | ErrorKind::Relayed(_) => ResponseError::KafkaStorageError,
        _ => ResponseError::UnknownServerError,
    }
}

/// The Kafka error code for a failed lookup of a partition's offsets
/// through its holders (`OffsetCommit`/`OffsetFetch`): no holder answering
/// in time is the retriable `COORDINATOR_LOAD_IN_PROGRESS` (the client
/// retries the same coordinator); anything else as [`code_for`].
#[must_use]
pub fn lookup_code(e: &ClusterError) -> ResponseError {
    match e {
        ClusterError::NoHolderAnswered { .. } => ResponseError::CoordinatorLoadInProgress,
        other => code_for(other.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_a_retriable_storage_error() {
        let c = code_for(ErrorKind::DiskFull);
        assert_eq!(c, ResponseError::KafkaStorageError);
        assert!(c.is_retriable());
        assert!(!code_for(ErrorKind::BadRequest).is_retriable());
    }

    #[test]
    fn only_no_holder_answering_is_a_coordinator_still_loading() {
        let none = ClusterError::NoHolderAnswered {
            chunk: "n1's chunks of c".to_owned(),
            tried: "n2: timed out".to_owned(),
        };
        assert_eq!(lookup_code(&none), ResponseError::CoordinatorLoadInProgress);
        let refused = ClusterError::NotAPeer {
            from: "n3".to_owned(),
            me: "n1".to_owned(),
        };
        assert_eq!(lookup_code(&refused), code_for(refused.kind()));
    }
}
