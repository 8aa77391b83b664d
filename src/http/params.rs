//! Query-string parsing into validated values, and [`RequestError`]: every
//! way a request is refused before any work. Numbers are decimal
//! `[0-9]+` fitting a u64, booleans `1|0|true|false`; a repeated parameter is
//! ambiguous and refused. Unknown parameters are ignored (chukcha clients
//! send nothing else, and future clients may add hints).

use std::borrow::Cow;

use crate::config::{MAX_READ_SIZE, MAX_WAIT_MS};
use crate::error::{DomainError, ErrorKind};
use crate::names::{Category, ChunkName, NameError};
use crate::storage::chunk::index::ProducerTag;

/// A request refused before any work: a bad query parameter, header or
/// body. Every message names what is wrong and what is allowed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// An invalid category, chunk, group or server name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A parameter given twice.
    #[error("parameter {key} is given more than once; give it once")]
    Repeated {
        /// The parameter.
        key: String,
    },
    /// A required parameter missing.
    #[error("missing parameter {key}")]
    Missing {
        /// The parameter.
        key: String,
    },
    /// Not `1|0|true|false`.
    #[error("parameter {key}={value:?} is not a boolean; use 1, 0, true or false")]
    NotBool {
        /// The parameter.
        key: String,
        /// Its value (shortened).
        value: String,
    },
    /// Not decimal digits.
    #[error("parameter {key}={value:?} is not a decimal number; use digits 0-9 only")]
    NotNumber {
        /// The parameter.
        key: String,
        /// Its value (shortened).
        value: String,
    },
    /// Digits beyond `u64::MAX`.
    #[error("parameter {key}={value:?} does not fit in 64 bits (max 18446744073709551615)")]
    TooBig {
        /// The parameter.
        key: String,
        /// Its value (shortened).
        value: String,
    },
    /// A conditional group ack whose `from` is past its `off`.
    #[error("from={from} is past off={off}; a group ack moves from `from` forward to `off`")]
    AckFromPastOff {
        /// The `from` given.
        from: u64,
        /// The `off` given.
        off: u64,
    },
    /// `max_size` above [`MAX_READ_SIZE`].
    #[error("max_size={0} is larger than the limit of {MAX_READ_SIZE} bytes (16 MiB)")]
    MaxSizeTooLarge(u64),
    /// `wait_ms` above [`MAX_WAIT_MS`].
    #[error("wait_ms={0} is larger than the limit of {MAX_WAIT_MS}")]
    WaitTooLong(u64),
    /// `min_sync_replicas` above the number of peers.
    #[error(
        "min_sync_replicas={asked} but this server has {peers} peers; use at most {peers}{}",
        peers_hint(.peers)
    )]
    TooManyReplicas {
        /// Replicas asked for.
        asked: u64,
        /// Peers configured.
        peers: u64,
    },
    /// `producer` without `seq`, or the other way round, or producer 0.
    #[error("an idempotent write needs both producer (a non-zero id) and seq; got {0}")]
    BadProducerTag(&'static str),
    /// `min_sync_replicas` above the copies the replication factor keeps
    /// besides the owner's.
    #[error(
        "min_sync_replicas={asked} but replication_factor={factor} keeps {max} copies besides this server's; use at most {max} (replication_factor - 1)"
    )]
    ReplicasAboveFactor {
        /// Replicas asked for.
        asked: u64,
        /// The replication factor.
        factor: u64,
        /// Most replicas a write can ask for.
        max: u64,
    },
    /// A `/peer/kafka/offsets` request in neither or both of its forms,
    /// or naming a chunk of another owner.
    #[error(
        "bad Kafka offsets question: {0}; give offset=K, or chunk=N&pos=B with a chunk of owner"
    )]
    KafkaOffsetsForm(&'static str),
    /// A `Content-Length` that is not a number.
    #[error("Content-Length is not a number")]
    BadContentLength,
    /// A peer's changes poll is not the expected JSON.
    #[error("bad changes poll")]
    BadPoll(#[source] serde_json::Error),
    /// A subscription's `from` that names no chunk of its category held
    /// here, or an offset that is not a message boundary of it.
    #[error("invalid \"from\" of the subscription: {0}")]
    BadStart(String),
    /// A subscription body that is not a spec. The parse error sits in the
    /// middle of the message, so it is formatted there (not a `source`).
    #[error(
        "invalid subscription JSON: {0}; expected {{\"category\",\"url\",\"group\"[,\"max_batch_bytes\",\"headers\",\"from\":{{\"chunk\",\"offset\"}},\"timeout_ms\"]}}"
    )]
    SpecJson(serde_json::Error),
}

fn peers_hint(peers: &u64) -> &'static str {
    if *peers == 0 {
        " or configure --peers"
    } else {
        ""
    }
}

impl DomainError for RequestError {
    /// Every refusal here is `BadRequest` (body reading failures are
    /// `super::intake::IntakeError`s).
    fn kind(&self) -> ErrorKind {
        ErrorKind::BadRequest
    }
}

/// Checks a long-poll time against [`MAX_WAIT_MS`].
///
/// # Errors
/// [`RequestError::WaitTooLong`].
pub fn check_wait(wait_ms: u64) -> Result<u64, RequestError> {
    if wait_ms > MAX_WAIT_MS {
        return Err(RequestError::WaitTooLong(wait_ms));
    }
    Ok(wait_ms)
}

/// Parsed query parameters of one request.
#[derive(Debug, Default)]
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    /// Parses `a=1&b=2` (percent-decoded).
    #[must_use]
    pub fn parse(query: Option<&'a str>) -> Self {
        Self {
            pairs: query
                .map(|q| form_urlencoded::parse(q.as_bytes()).collect())
                .unwrap_or_default(),
        }
    }

    fn get(&self, key: &str) -> Result<Option<&str>, RequestError> {
        let mut found = None;
        for (k, v) in &self.pairs {
            if k == key {
                if found.is_some() {
                    return Err(RequestError::Repeated {
                        key: key.to_owned(),
                    });
                }
                found = Some(v.as_ref());
            }
        }
        Ok(found)
    }

    /// A required parameter's raw value.
    ///
    /// # Errors
    /// 400 when missing or given twice.
    pub fn required(&self, key: &str) -> Result<&str, RequestError> {
        self.get(key)?.ok_or_else(|| RequestError::Missing {
            key: key.to_owned(),
        })
    }

    /// The required `category` parameter.
    ///
    /// # Errors
    /// 400 when missing or invalid.
    pub fn category(&self) -> Result<Category, RequestError> {
        Ok(Category::parse(self.required("category")?)?)
    }

    /// The required `chunk` parameter.
    ///
    /// # Errors
    /// 400 when missing or invalid.
    pub fn chunk(&self) -> Result<ChunkName, RequestError> {
        Ok(ChunkName::parse(self.required("chunk")?)?)
    }

    /// An optional chunk name.
    ///
    /// # Errors
    /// 400 when present but invalid.
    pub fn opt_chunk(&self, key: &str) -> Result<Option<ChunkName>, RequestError> {
        Ok(self.get(key)?.map(ChunkName::parse).transpose()?)
    }

    /// A required number.
    ///
    /// # Errors
    /// 400 when missing or not a decimal u64.
    pub fn u64(&self, key: &str) -> Result<u64, RequestError> {
        parse_u64(key, self.required(key)?)
    }

    /// An optional number.
    ///
    /// # Errors
    /// 400 when present but not a decimal u64.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, RequestError> {
        self.get(key)?.map(|v| parse_u64(key, v)).transpose()
    }

    /// An idempotent producer's tag: `producer` (a non-zero id) and `seq`,
    /// both or neither.
    ///
    /// # Errors
    /// 400 when only one is given, either is not a number, or the producer
    /// is 0.
    pub fn producer_tag(&self) -> Result<Option<ProducerTag>, RequestError> {
        match (self.opt_u64("producer")?, self.opt_u64("seq")?) {
            (None, None) => Ok(None),
            (Some(0), Some(_)) => Err(RequestError::BadProducerTag("producer=0")),
            (Some(producer), Some(seq)) => Ok(Some(ProducerTag { producer, seq })),
            (Some(_), None) => Err(RequestError::BadProducerTag("producer without seq")),
            (None, Some(_)) => Err(RequestError::BadProducerTag("seq without producer")),
        }
    }

    /// An optional boolean.
    ///
    /// # Errors
    /// 400 when present but not `1|0|true|false`.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, RequestError> {
        self.get(key)?
            .map(|v| match v {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                _ => Err(RequestError::NotBool {
                    key: key.to_owned(),
                    value: shorten(v),
                }),
            })
            .transpose()
    }
}

fn parse_u64(key: &str, v: &str) -> Result<u64, RequestError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RequestError::NotNumber {
            key: key.to_owned(),
            value: shorten(v),
        });
    }
    // Only digits: the one way left to fail is overflow, which the
    // variant says.
    v.parse::<u64>().map_err(|_overflow| RequestError::TooBig {
        key: key.to_owned(),
        value: shorten(v),
    })
}

/// At most 40 characters of `v`, with `…` when cut (messages show it
/// quoted).
fn shorten(v: &str) -> String {
    let mut s: String = v.chars().take(40).collect();
    if s.len() < v.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let q = Query::parse(Some("a=12&b=-1&c=1.5&d=&e=18446744073709551616&f=%31"));
        assert_eq!(q.u64("a").unwrap(), 12);
        for k in ["b", "c", "d", "e", "missing"] {
            assert!(q.u64(k).is_err(), "{k}");
        }
        assert_eq!(q.u64("f").unwrap(), 1);
    }

    #[test]
    fn duplicates_and_bools() {
        let q = Query::parse(Some("sync=1&x=true&x=false&y=yes"));
        assert_eq!(q.opt_bool("sync").unwrap(), Some(true));
        assert!(q.opt_bool("x").is_err());
        assert!(q.opt_bool("y").is_err());
        assert_eq!(q.opt_bool("z").unwrap(), None);
    }

    proptest::proptest! {
        /// Any query string: parsing never panics, a number is only ever
        /// what its decimal digits say, and a category is only ever a
        /// valid name.
        #[test]
        fn any_query_is_parsed_or_refused(q in "[a-z=&%0-9A-F._/\\-]{0,80}|\\PC{0,60}") {
            let query = Query::parse(Some(&q));
            if let Ok(n) = query.u64("off") {
                let raw = form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "off").map(|(_, v)| v.into_owned());
                proptest::prop_assert_eq!(raw.as_deref().map(str::parse::<u64>), Some(Ok(n)));
            }
            if let Ok(c) = query.category() {
                proptest::prop_assert!(c.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            }
            let _ = query.opt_bool("sync");
            let _ = query.chunk();
        }
    }

    #[test]
    fn messages_are_unchanged() {
        let q = Query::parse(Some("a=x&b=99999999999999999999&c=1&c=2&d=maybe"));
        let e = |r: Result<u64, RequestError>| r.unwrap_err().to_string();
        assert_eq!(
            e(q.u64("a")),
            "parameter a=\"x\" is not a decimal number; use digits 0-9 only"
        );
        assert_eq!(
            e(q.u64("b")),
            "parameter b=\"99999999999999999999\" does not fit in 64 bits (max 18446744073709551615)"
        );
        assert_eq!(
            e(q.u64("c")),
            "parameter c is given more than once; give it once"
        );
        assert_eq!(e(q.u64("z")), "missing parameter z");
        assert_eq!(
            q.opt_bool("d").unwrap_err().to_string(),
            "parameter d=\"maybe\" is not a boolean; use 1, 0, true or false"
        );
        let long = "9".repeat(50) + "x";
        let raw = format!("n={long}");
        let q = Query::parse(Some(&raw));
        assert_eq!(
            e(q.u64("n")),
            format!(
                "parameter n={:?} is not a decimal number; use digits 0-9 only",
                "9".repeat(40) + "…"
            )
        );
        assert_eq!(
            RequestError::TooManyReplicas { asked: 1, peers: 0 }.to_string(),
            "min_sync_replicas=1 but this server has 0 peers; use at most 0 or configure --peers"
        );
    }

    #[test]
    fn encoded_traversal_is_still_rejected() {
        let q = Query::parse(Some("category=%2e%2e%2fetc"));
        assert!(q.category().is_err());
    }
}
