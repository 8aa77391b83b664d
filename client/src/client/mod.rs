//! [`Client`]: one method per endpoint of the server's HTTP API, with
//! failover across a list of server addresses.
//!
//! `Client` is one type; its methods live by job:
//! - `builder`: [`ClientBuilder`] and the constructors and settings
//!   (addresses, CA certificates, token, request timeout);
//! - `transport`: request plumbing — URLs, the active address and
//!   failover (`call`/`call_from`), one request to one server under the
//!   timeout with the auth header (`call_one`), answers to errors;
//! - `write`: `/write`, plain and idempotent, and probes;
//! - `endpoints`: every other endpoint (`/read`, `/listChunks`,
//!   `/listCategories`, `/ack`, `/consumers`, `/peers`);
//! - `types`: what requests and answers carry ([`WriteReply`],
//!   [`ChunkInfo`], [`WriteOptions`], …) and the response header names.

mod builder;
mod endpoints;
mod transport;
mod types;
mod write;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

pub use builder::{ClientBuilder, DEFAULT_REQUEST_TIMEOUT};
pub use types::{
    ChunkInfo, GroupPosition, GroupStatus, ProducerTag, WriteOptions, WriteReply, DELETED_HEADER,
    WRITTEN_HEADER,
};

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
