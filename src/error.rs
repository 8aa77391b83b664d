//! What the layers' errors have in common: [`ErrorKind`], the neutral
//! classification each domain error gives itself through
//! [`DomainError::kind`], and [`error_chain`] to print an error with its
//! causes on one line.
//!
//! Every error that can become an HTTP answer implements [`DomainError`]
//! next to its definition (`StorageError`, `BodyError`, `TierError`,
//! `NameError`, `GroupError`, `SubscriptionError`, `ClusterError`, and the
//! HTTP layer's own `RequestError`, `ServiceError`, `RouteError`).
//! `http/error.rs` then turns a kind into a status — the only place that
//! does. This module never depends on HTTP types, so the domains can
//! classify their failures without knowing about hyper. Errors that never
//! reach a response (replication, push delivery, peer-list parsing) do not
//! implement the trait.

/// What kind of failure an error is, independent of any protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed or names something invalid; resending it
    /// unchanged fails again.
    BadRequest,
    /// The bearer token is missing or wrong.
    Unauthorized,
    /// The caller is known but not allowed to do this (a peer that is not
    /// configured).
    Forbidden,
    /// The thing named (chunk, group, subscription, endpoint) does not exist.
    NotFound,
    /// The thing named existed and was deleted for good (a chunk acked or
    /// removed by retention): distinct from [`ErrorKind::NotFound`], which
    /// may still appear (a copy not replicated yet).
    Deleted,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// The client was too slow to send its request.
    RequestTimeout,
    /// The request is valid but conflicts with the current state (an ack
    /// behind the stored position, an existing subscription).
    Conflict,
    /// The request body or a message in it is larger than allowed.
    PayloadTooLarge,
    /// The request body is declared in a media type the endpoint does not
    /// take (a JSON body not sent as `application/json`).
    UnsupportedMediaType,
    /// A bug or an unexpected local failure; logged.
    Internal,
    /// An upstream service (the object store) failed; logged.
    BadGateway,
    /// Temporarily impossible (recovering, shutting down, read-only after a
    /// failed fsync, replicas not reached); retry later or elsewhere.
    Unavailable,
    /// The disk is full; nothing was stored.
    DiskFull,
    /// A peer's answer passed on unchanged: the HTTP status code it sent.
    Relayed(u16),
}

/// An error that knows what kind of failure it is.
pub trait DomainError: std::error::Error {
    /// The classification that decides how the failure is answered.
    fn kind(&self) -> ErrorKind;
}

/// Formats an error and its `source()` chain as one line: `error: cause: cause…`.
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_is_one_line_with_causes() {
        let e = Outer(std::io::Error::other("denied"));
        assert_eq!(error_chain(&e), "cannot open x: denied");
    }
}
