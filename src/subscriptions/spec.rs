//! What a client registers for a push subscription ([`Spec`], the
//! `POST /subscriptions` body) and its validation into [`Valid`]: names,
//! receiver URL, limits and extra headers, each refusal an
//! [`InvalidSpec`] naming the field and what is allowed.
//!
//! Pure: never starts deliveries and never touches the registry file.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::names::{Category, ChunkName, GroupName, NameError};

/// Default largest batch per POST.
pub const DEFAULT_MAX_BATCH: u64 = 1 << 20;
/// Largest allowed `max_batch_bytes` (a read's limit).
pub const MAX_BATCH_LIMIT: u64 = 16 << 20;
/// Default time a receiver has to answer.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Most extra headers a subscription may send.
pub const MAX_HEADERS: usize = 32;
/// Longest allowed `timeout_ms`.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// What a client registers (`POST /subscriptions` body). `Debug` shows
/// header names only: their values are often the receiver's credentials.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Category to deliver.
    pub category: String,
    /// Receiver, `http://host:port/path`.
    pub url: String,
    /// Consumer group holding the delivery position.
    pub group: String,
    /// Largest batch per POST (whole messages; one message larger than this
    /// is sent alone). Default 1 MiB, at most 16 MiB.
    #[serde(default = "default_max_batch")]
    pub max_batch_bytes: u64,
    /// Extra request headers (e.g. the receiver's own auth token).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Where to start if the group has no position yet (default: the
    /// beginning of every owner's oldest chunk).
    #[serde(default)]
    pub from: Option<StartAt>,
    /// How long the receiver may take to answer, ms (default 30000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("category", &self.category)
            .field("url", &self.url)
            .field("group", &self.group)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field(
                "headers",
                &self
                    .headers
                    .keys()
                    .map(|k| (k, "<redacted>"))
                    .collect::<Vec<_>>(),
            )
            .field("from", &self.from)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// A starting position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartAt {
    /// Chunk name.
    pub chunk: String,
    /// Offset (a message boundary).
    pub offset: u64,
}

fn default_max_batch() -> u64 {
    DEFAULT_MAX_BATCH
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// A checked [`Spec`].
#[derive(Debug, Clone)]
pub struct Valid {
    /// The spec as given.
    pub spec: Spec,
    /// Category.
    pub category: Category,
    /// Group.
    pub group: GroupName,
    /// Parsed receiver URL.
    pub url: hyper::Uri,
    /// Parsed headers.
    pub headers: hyper::HeaderMap,
    /// Parsed start position.
    pub from: Option<(ChunkName, u64)>,
    /// Receiver timeout.
    pub timeout: Duration,
}

impl Spec {
    /// Validates every field.
    ///
    /// # Errors
    /// [`InvalidSpec`], naming the field and what is allowed.
    pub fn validate(self) -> Result<Valid, InvalidSpec> {
        let category = Category::parse(&self.category)?;
        let group = GroupName::parse(&self.group)?;
        let url: hyper::Uri = self.url.parse().map_err(|source| InvalidSpec::Url {
            url: self.url.clone(),
            source,
        })?;
        if url.scheme_str() != Some("http") || url.authority().is_none() {
            return Err(InvalidSpec::UrlScheme {
                url: self.url.clone(),
            });
        }
        if self.max_batch_bytes == 0 || self.max_batch_bytes > MAX_BATCH_LIMIT {
            return Err(InvalidSpec::MaxBatch(self.max_batch_bytes));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(InvalidSpec::Timeout(self.timeout_ms));
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(InvalidSpec::TooManyHeaders);
        }
        let mut headers = hyper::HeaderMap::new();
        for (k, v) in &self.headers {
            // The parse errors say no more than "invalid": the variant
            // names the header instead.
            let name = hyper::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_invalid| InvalidSpec::HeaderName(k.clone()))?;
            if name.as_str().starts_with("chunkbus-")
                || name == hyper::header::CONTENT_LENGTH
                || name == hyper::header::HOST
            {
                return Err(InvalidSpec::ReservedHeader(k.clone()));
            }
            let mut value = hyper::header::HeaderValue::from_str(v)
                .map_err(|_invalid| InvalidSpec::HeaderValue(k.clone()))?;
            value.set_sensitive(true); // never shown by `Debug`
            headers.insert(name, value);
        }
        let from = self
            .from
            .as_ref()
            .map(|f| ChunkName::parse(&f.chunk).map(|c| (c, f.offset)))
            .transpose()?;
        Ok(Valid {
            category,
            group,
            url,
            headers,
            from,
            timeout: Duration::from_millis(self.timeout_ms),
            spec: self,
        })
    }
}

/// Why a [`Spec`] is invalid; each message names the field and what is
/// allowed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSpec {
    /// Bad category, group or start chunk name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The receiver URL does not parse.
    #[error("invalid url {url:?}")]
    Url {
        /// The URL given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    /// The receiver URL is not `http://host…`.
    #[error("invalid url {url:?}: use http://host:port/path")]
    UrlScheme {
        /// The URL given.
        url: String,
    },
    /// `max_batch_bytes` out of range.
    #[error("max_batch_bytes={0} must be between 1 and {MAX_BATCH_LIMIT}")]
    MaxBatch(u64),
    /// `timeout_ms` out of range.
    #[error("timeout_ms={0} must be between 1 and {MAX_TIMEOUT_MS}")]
    Timeout(u64),
    /// More than [`MAX_HEADERS`] extra headers.
    #[error("at most {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// A header name that is not a valid HTTP header name.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// A header the broker sets itself.
    #[error("header {0:?} is set by the broker")]
    ReservedHeader(String),
    /// A header value that cannot be sent.
    #[error("invalid value for header {0:?}")]
    HeaderValue(String),
}
