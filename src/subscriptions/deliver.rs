//! The delivery loop of one subscription: find the group's next undelivered
//! batch, POST it, advance the group on `2xx`, back off and retry the same
//! position on anything else; wait for new data when caught up.
//!
//! Connections go through the policy-checking connector (`connect.rs`); of
//! a receiver's answer at most [`MAX_ANSWER_BYTES`] are read (a longer
//! answer's connection is dropped), so a receiver cannot make the broker
//! buffer an endless body. What `GET /subscriptions` shows as `last_error`
//! does not tell a refused connection from a timed-out one
//! ([`DeliveryError::public`]); the cause is logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::Request;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::connect::{self, GuardedConnector};
use super::policy::{Denied, WebhookPolicy};
use super::{Progress, Valid};
use crate::groups::{GroupError, GroupStore};
use crate::storage::chunk::{Chunk, ReadOutcome};
use crate::storage::{Storage, StorageError};
use crate::tier::{TierError, Tiering};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Rescan at least this often while caught up (new owners, missed wake-ups).
const IDLE_RESCAN: Duration = Duration::from_secs(1);
/// Most bytes of a receiver's answer body that are read; the connection of
/// a longer answer is closed instead of drained.
pub const MAX_ANSWER_BYTES: usize = 64 << 10;
/// Most bytes of a refusing answer kept for the server log.
const LOGGED_ANSWER_BYTES: usize = 200;
/// Time each resolved address gets to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type HttpClient = hyper_util::client::legacy::Client<GuardedConnector, Full<Bytes>>;

/// Delivers one subscription until stopped.
pub(super) struct Deliverer {
    v: Valid,
    storage: Arc<Storage>,
    tiering: Option<Arc<Tiering>>,
    groups: Arc<GroupStore>,
    progress: Arc<Mutex<Progress>>,
    stop: CancellationToken,
    http: HttpClient,
}

/// Why one POST of a batch failed (the batch is sent again).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(super) enum DeliveryError {
    /// The request could not be built from the subscription.
    #[error("building the request failed")]
    Build(#[source] hyper::http::Error),
    /// The webhook policy refuses the receiver's host or an address it
    /// resolves to; nothing was sent.
    #[error(transparent)]
    Denied(Denied),
    /// No answer: connection refused, reset, ….
    #[error("POST {url} failed")]
    Send {
        /// The receiver URL.
        url: String,
        /// What happened.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The receiver answered with a non-`2xx` status.
    #[error("receiver answered {status}: {answer:?}")]
    Refused {
        /// The status.
        status: hyper::StatusCode,
        /// The start of the answer body (for the server log only: it may
        /// hold data of whatever the receiver is).
        answer: String,
    },
    /// The receiver did not answer within the subscription's timeout.
    #[error("receiver did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The subscription is being stopped.
    #[error("stopped")]
    Stopped,
}

impl DeliveryError {
    /// The `last_error` text of `GET /subscriptions`: the status of an
    /// answer, or that there was none — never whether a connection was
    /// refused, reset or timed out, nor what a refusing receiver wrote, so
    /// a caller cannot map which ports of which hosts are open. The full
    /// cause goes to the server log.
    fn public(&self) -> String {
        match self {
            Self::Build(_) | Self::Denied(_) | Self::Stopped => crate::error_chain(self),
            Self::Refused { status, .. } => format!("receiver answered {status}"),
            Self::Send { .. } | Self::Timeout(_) => {
                "no HTTP answer from the receiver (connection failed, closed or timed out; the server log has the cause)".to_owned()
            }
        }
    }
}

/// The next batch to deliver.
struct Batch {
    chunk: Arc<Chunk>,
    offset: u64,
    data: Bytes,
}

impl Deliverer {
    pub(super) fn new(
        v: Valid,
        storage: Arc<Storage>,
        tiering: Option<Arc<Tiering>>,
        groups: Arc<GroupStore>,
        progress: Arc<Mutex<Progress>>,
        stop: CancellationToken,
        policy: Arc<WebhookPolicy>,
    ) -> Self {
        let connector = GuardedConnector::new(policy, CONNECT_TIMEOUT);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            v,
            storage,
            tiering,
            groups,
            progress,
            stop,
            http,
        }
    }

    pub(super) async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        if let Err(e) = self.apply_start().await {
            tracing::error!(error = %crate::error_chain(&e), "cannot store the subscription's start position");
        }
        while !self.stop.is_cancelled() {
            let next = match self.next_batch().await {
                Ok(n) => n,
                Err(e) => {
                    let why = format!("reading the category failed: {}", crate::error_chain(&e));
                    self.failed(why.clone(), why);
                    self.pause(&mut backoff).await;
                    continue;
                }
            };
            let Some(batch) = next else {
                self.wait_for_data().await;
                continue;
            };
            let len = batch.data.len() as u64;
            match self.post(&batch).await {
                Ok(()) => {
                    let end = batch.offset + len;
                    match self
                        .groups
                        .ack(&self.v.category, &self.v.group, batch.chunk.name(), end)
                        .await
                    {
                        Ok(_) | Err(GroupError::Behind { .. }) => {
                            backoff = FIRST_BACKOFF;
                            let mut p = self.progress.lock();
                            p.delivered_batches += 1;
                            p.delivered_bytes += len;
                            p.failures = 0;
                            p.last_error = None;
                        }
                        Err(e) => {
                            // Delivered but not recorded: it will be sent again.
                            let why =
                                format!("storing the position failed: {}", crate::error_chain(&e));
                            self.failed(why.clone(), why);
                            self.pause(&mut backoff).await;
                        }
                    }
                }
                Err(e) => {
                    self.failed(e.public(), crate::error_chain(&e));
                    self.pause(&mut backoff).await;
                }
            }
        }
    }

    /// Stores `from` as the group's position if the group has none yet.
    async fn apply_start(&self) -> Result<(), GroupError> {
        let Some((chunk, offset)) = &self.v.from else {
            return Ok(());
        };
        if self
            .groups
            .positions_of(&self.v.category, &self.v.group)
            .is_some()
        {
            return Ok(());
        }
        self.groups
            .ack(&self.v.category, &self.v.group, chunk, *offset)
            .await
            .map(drop)
    }

    /// The first batch the group has not acked: chunks in order per owner;
    /// an owner's chunks older than its newest positioned chunk are done.
    async fn next_batch(&self) -> Result<Option<Batch>, TierError> {
        let Some(log) = self.storage.category(&self.v.category) else {
            return Ok(None);
        };
        let positions = self
            .groups
            .positions_of(&self.v.category, &self.v.group)
            .unwrap_or_default();
        let mut newest: HashMap<&str, u64> = HashMap::new();
        for name in positions.keys() {
            let e = newest.entry(name.owner().as_str()).or_insert(0);
            *e = (*e).max(name.index());
        }
        for chunk in log.chunks() {
            let name = chunk.name();
            let state = chunk.state();
            let start = match positions.get(name) {
                Some(p) => *p,
                None if newest
                    .get(name.owner().as_str())
                    .is_some_and(|n| *n > name.index()) =>
                {
                    continue
                }
                None => 0,
            };
            if start >= state.end {
                continue;
            }
            let max = self.v.spec.max_batch_bytes;
            let data = match self.read(&chunk, start, max).await {
                Ok(ReadOutcome::Data(d)) => d,
                Ok(ReadOutcome::Empty { .. }) => continue,
                // One message larger than the batch limit goes alone.
                Err(TierError::Storage(StorageError::MaxSizeTooSmall { next_len, .. })) => {
                    match self.read(&chunk, start, next_len).await? {
                        ReadOutcome::Data(d) => d,
                        ReadOutcome::Empty { .. } => continue,
                    }
                }
                Err(e) => return Err(e),
            };
            return Ok(Some(Batch {
                chunk,
                offset: start,
                data,
            }));
        }
        Ok(None)
    }

    /// Reads a batch from a local or tiered chunk.
    async fn read(&self, chunk: &Chunk, off: u64, max: u64) -> Result<ReadOutcome, TierError> {
        match &self.tiering {
            Some(t) if chunk.is_tiered() => t.read(&self.v.category, chunk, off, max).await,
            _ => Ok(chunk.read(off, max)?),
        }
    }

    /// Waits until new data may be there: the category's listing or an
    /// unfinished chunk changes, at most [`IDLE_RESCAN`].
    async fn wait_for_data(&self) {
        let log = self.storage.category(&self.v.category);
        let mut listing = log.as_ref().map(|l| l.subscribe_listing());
        let mut open = log
            .as_ref()
            .and_then(|l| {
                l.chunks()
                    .into_iter()
                    .rev()
                    .find(|c| !c.state().closed && !c.state().sealed)
            })
            .map(|c| c.subscribe());
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = tokio::time::sleep(IDLE_RESCAN) => {}
            _ = async { match listing.as_mut() { Some(l) => { let _ = l.changed().await; } None => std::future::pending().await } } => {}
            _ = async { match open.as_mut() { Some(o) => { let _ = o.changed().await; } None => std::future::pending().await } } => {}
        }
    }

    async fn post(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let end = batch.offset + batch.data.len() as u64;
        let mut req = Request::post(self.v.url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header("chunkbus-category", self.v.category.as_str())
            .header("chunkbus-group", self.v.group.as_str())
            .header("chunkbus-chunk", batch.chunk.name().to_string())
            .header("chunkbus-offset", batch.offset)
            .header("chunkbus-next-offset", end)
            .body(Full::new(batch.data.clone()))
            .map_err(DeliveryError::Build)?;
        for (k, v) in &self.v.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let started = tokio::time::Instant::now();
        let exchange = async {
            let resp =
                self.http
                    .request(req)
                    .await
                    .map_err(|source| match connect::denial(&source) {
                        Some(d) => DeliveryError::Denied(d.clone()),
                        None => DeliveryError::Send {
                            url: self.v.spec.url.clone(),
                            source,
                        },
                    })?;
            let status = resp.status();
            let answer = read_answer(resp.into_body(), !status.is_success()).await;
            if status.is_success() {
                Ok(())
            } else {
                Err(DeliveryError::Refused {
                    status,
                    answer: String::from_utf8_lossy(&answer).into_owned(),
                })
            }
        };
        let result = tokio::select! {
            r = tokio::time::timeout(self.v.timeout, exchange) => r.unwrap_or_else(|_elapsed| {
                Err(DeliveryError::Timeout(self.v.timeout))
            }),
            () = self.stop.cancelled() => Err(DeliveryError::Stopped),
        };
        if matches!(&result, Err(DeliveryError::Send { source, .. }) if source.is_connect()) {
            // A refused connection takes as long to report as an
            // unanswered one: the failure count's pace tells nothing either.
            tokio::select! {
                () = tokio::time::sleep_until(started + self.v.timeout) => {}
                () = self.stop.cancelled() => {}
            }
        }
        result
    }

    /// Counts a failed attempt: `public` becomes `last_error`, `detail` is
    /// logged (on the first failure and each power of two after).
    fn failed(&self, public: String, detail: String) {
        let mut p = self.progress.lock();
        p.failures += 1;
        if p.failures == 1 || p.failures.is_power_of_two() {
            tracing::warn!(category = %self.v.category, group = %self.v.group, failures = p.failures, error = %detail, "push delivery failed; retrying");
        }
        p.last_error = Some(public);
    }

    async fn pause(&self, backoff: &mut Duration) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = tokio::time::sleep(*backoff) => {}
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }
}

/// Reads at most [`MAX_ANSWER_BYTES`] of an answer body, keeping the first
/// [`LOGGED_ANSWER_BYTES`] when `keep` (a refusal, for the log). A body
/// that ends within the bound leaves its connection reusable; a longer one
/// is dropped unread, which closes the connection, so memory stays bounded
/// whatever the receiver sends.
async fn read_answer(mut body: hyper::body::Incoming, keep: bool) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut read = 0usize;
    while read < MAX_ANSWER_BYTES {
        let Some(Ok(frame)) = body.frame().await else {
            break;
        };
        if let Some(data) = frame.data_ref() {
            read += data.len();
            if keep {
                let room = LOGGED_ANSWER_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
    }
    kept
}
