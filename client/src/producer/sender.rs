//! A lane's sender task: seals the open batch once it has lingered, posts
//! sealed batches one at a time and in order, retries what is safe to
//! resend (exponential backoff within `delivery_timeout`), reports each
//! outcome (the batch's deliveries, ack receivers, stats) and recycles
//! batch buffers.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::delivery::Placed;
use super::lane::{Lane, OpenBatch, SealedBatch};
use super::{Shared, MAX_SPARE};
use crate::acks::BatchAck;
use crate::client::{ProducerTag, WriteReply};
use crate::error::{ClientError, ProducerError};
use crate::stats::{in_span, StatsEvent};

/// The lane's sender: posts sealed batches one at a time, in order, and
/// seals the open batch once it has lingered long enough.
pub(super) async fn run(shared: Arc<Shared>, lane: Arc<Lane>) {
    loop {
        let next = {
            let mut st = lane.state.lock();
            match st.queue.pop_front() {
                Some(batch) => Ok(batch),
                // Closed: send what is still open, then exit.
                None if st.closed => match st.open.take().and_then(OpenBatch::seal) {
                    Some(batch) => Ok(batch),
                    None => return,
                },
                None => Err(st.open.as_ref().map(|o| o.opened + shared.config.linger)),
            }
        };
        match next {
            Ok(batch) => {
                let (first_seq, count, bytes) = (batch.first_seq, batch.count, batch.body.len());
                let category = Arc::clone(&lane.category);
                in_span(send_batch(&shared, &lane, batch), move || {
                    tracing::info_span!("chunkbus.produce", %category, first_seq, count, bytes)
                })
                .await;
            }
            Err(Some(deadline)) => {
                tokio::select! {
                    () = lane.wake.notified() => {}
                    () = tokio::time::sleep_until(deadline) => seal_lingered(&lane, shared.config.linger).await,
                }
            }
            Err(None) => lane.wake.notified().await,
        }
    }
}

async fn seal_lingered(lane: &Lane, linger: Duration) {
    let _order = lane.seal_lock.lock().await;
    let mut st = lane.state.lock();
    let due = st
        .open
        .as_ref()
        .is_some_and(|o| o.opened + linger <= Instant::now());
    if due {
        if let Some(sealed) = st.open.take().and_then(OpenBatch::seal) {
            st.queue.push_back(sealed);
        }
    }
}

async fn send_batch(shared: &Shared, lane: &Lane, batch: SealedBatch) {
    let Ok(_slot) = shared.in_flight.acquire().await else {
        return;
    };
    let deadline = Instant::now() + shared.config.delivery_timeout;
    // An idempotent producer's batch carries its tag; the server stores it
    // once, so what may have been stored can be sent again too.
    let tag = shared.producer_id.map(|producer| ProducerTag {
        producer,
        seq: batch.first_seq,
    });
    let mut delivery = Attempts {
        shared,
        lane,
        body: &batch.body,
        tag,
        deadline,
        backoff: Duration::from_millis(25),
        pinned: None,
        doubt: None,
    };
    let result = delivery.run().await;
    let pinned = delivery.pinned;
    match result {
        Ok(reply) => {
            shared.stats.record(&StatsEvent::Stored {
                category: &lane.category,
                messages: batch.count,
                bytes: reply.size,
            });
            let chunk: Arc<str> = reply.chunk.as_str().into();
            batch.slot.0.resolve(Ok(Placed {
                chunk,
                offset: reply.offset,
            }));
            let ack = BatchAck {
                category: Arc::clone(&lane.category),
                first_seq: batch.first_seq,
                count: batch.count,
                chunk: reply.chunk,
                offset: reply.offset,
                size: reply.size,
            };
            shared.acks.deliver(&ack);
            lane.acked.send_replace(batch.first_seq + batch.count);
            recycle(shared, batch);
        }
        Err(e) => {
            // An earlier attempt may have stored it (the batch was in
            // doubt, pinned), whatever the last error says.
            let maybe_stored = pinned.is_some() || !(e.is_safe_to_resend() || never_stored(&e));
            let error = ProducerError::BatchFailed {
                category: lane.category.to_string(),
                first_seq: batch.first_seq,
                count: batch.count,
                maybe_stored,
                source: Arc::new(e),
            };
            shared.stats.record(&StatsEvent::Error {
                category: &lane.category,
                error: &error,
            });
            batch.slot.0.resolve(Err(error.clone()));
            lane.fail(batch.first_seq, &error);
        }
    }
}

/// Keeps the buffer of an acknowledged batch for the next one when nobody
/// else holds it and the budget can cover its whole capacity again.
fn recycle(shared: &Shared, batch: SealedBatch) {
    let SealedBatch {
        body, mut permit, ..
    } = batch;
    let max_batch = shared.config.max_batch_bytes;
    if shared.spare.lock().len() >= MAX_SPARE {
        return;
    }
    let Ok(mut buf) = body.try_into_mut() else {
        return; // still shared (a retry's clone, an application's copy)
    };
    if buf.capacity() < max_batch {
        return;
    }
    let missing = max_batch.saturating_sub(permit.num_permits());
    if missing > 0 {
        let Ok(more) = Arc::clone(&shared.budget)
            .try_acquire_many_owned(u32::try_from(missing).unwrap_or(u32::MAX))
        else {
            return; // others wait for the budget: give it back instead
        };
        permit.merge(more);
    }
    buf.clear();
    let mut spare = shared.spare.lock();
    if spare.len() < MAX_SPARE {
        spare.push((buf, permit));
    }
}

/// Whether a failed batch is sent again: when that cannot store it twice —
/// nothing was stored, or (`tagged`) the server recognises a repeat — and
/// the failure may pass (not a refusal of the request itself).
fn may_retry(e: &ClientError, tagged: bool) -> bool {
    e.is_safe_to_resend() || (tagged && e.is_retryable())
}

/// Client errors (4xx other than timeouts) where the server refused the
/// body before storing anything.
fn never_stored(e: &ClientError) -> bool {
    match e {
        ClientError::Status {
            status, written, ..
        } => *written == Some(false) || ((400..500).contains(status) && *status != 408),
        _ => false,
    }
}

/// The attempts to deliver one batch: retries with backoff within the
/// delivery timeout; for an idempotent producer, a batch in doubt (an
/// attempt that may have stored it) is *pinned* to the server that may
/// hold it and settled before anything is sent again: that server is
/// asked first (`probe`, which stores nothing): it holds the batch (done),
/// or not (sent again, to it only), or does not know idempotent writes (an
/// older server: the batch fails as `maybe_stored`); when it cannot be
/// reached, the other servers are asked whether they hold a copy.
struct Attempts<'a> {
    shared: &'a Shared,
    lane: &'a Lane,
    body: &'a bytes::Bytes,
    tag: Option<ProducerTag>,
    deadline: Instant,
    backoff: Duration,
    /// The server an attempt may have stored the batch on.
    pinned: Option<usize>,
    /// That attempt's error, reported if the doubt is never settled.
    doubt: Option<ClientError>,
}

impl Attempts<'_> {
    async fn run(&mut self) -> Result<WriteReply, ClientError> {
        loop {
            let result = match (self.pinned, self.tag) {
                (Some(at), Some(tag)) => match self.settle(at, tag).await {
                    Settled::Stored(reply) => return Ok(reply),
                    Settled::Refused(e) => return Err(e),
                    Settled::SendAgain => {
                        // Not stored there: no longer in doubt. Sent again
                        // to that server (an original still on its way
                        // there meets the same tag); a new doubt pins it
                        // again.
                        self.pinned = None;
                        self.doubt = None;
                        self.send(Some(at)).await
                    }
                    Settled::Unknown(e) => Err(e),
                },
                _ => self.send(None).await,
            };
            let e = match result {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            if !may_retry(&e, self.tag.is_some()) || Instant::now() + self.backoff >= self.deadline
            {
                return Err(self.doubt.take().unwrap_or(e));
            }
            self.shared.stats.record(&StatsEvent::Retry {
                category: &self.lane.category,
                error: &e,
            });
            tokio::time::sleep(self.backoff).await;
            self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One write, to `server` only or (`None`) with connect failover;
    /// pins the batch when the attempt may have stored it.
    async fn send(&mut self, server: Option<usize>) -> Result<WriteReply, ClientError> {
        let write = self.shared.client.write_at(
            server,
            &self.lane.category,
            self.body.clone(),
            self.shared.config.write,
            self.tag,
        );
        let (result, asked) = match self.bounded(write).await {
            Ok(r) => r,
            Err(timeout) => (Err(timeout), server.unwrap_or(0)),
        };
        if let Err(e) = &result {
            // Pinned only when the attempt may have stored the batch (not
            // for a refusal that says nothing was stored).
            let maybe_stored = !(e.is_safe_to_resend() || never_stored(e));
            if self.tag.is_some() && maybe_stored && self.pinned.is_none() {
                self.pinned = Some(server.unwrap_or(asked));
                self.doubt = Some(clone_error(e));
            }
        }
        result
    }

    /// Settles a batch in doubt on server `at` (type docs).
    async fn settle(&mut self, at: usize, tag: ProducerTag) -> Settled {
        let probe =
            self.shared
                .client
                .find_at(at, &self.lane.category, self.shared.config.write, tag);
        let e = match self.bounded(probe).await.and_then(|r| r) {
            Ok(reply) => return Settled::Stored(reply),
            Err(e) => e,
        };
        match e.status() {
            Some(404) => return Settled::SendAgain,
            Some(400 | 409) => {
                tracing::warn!(
                    category = %self.lane.category,
                    server = at,
                    error = %e,
                    "the server cannot tell whether it holds the batch (a 400: older than idempotent writes; a 409: a later batch of this producer is stored): it is not sent again"
                );
                return Settled::Refused(self.doubt.take().unwrap_or(e));
            }
            _ => {}
        }
        // Unreachable or failing: a server holding a copy settles it.
        for i in (0..self.shared.client.server_count()).filter(|&i| i != at) {
            let probe =
                self.shared
                    .client
                    .find_at(i, &self.lane.category, self.shared.config.write, tag);
            if let Ok(Ok(reply)) = self.bounded(probe).await {
                return Settled::Stored(reply);
            }
        }
        Settled::Unknown(e)
    }

    /// `f`, cut off at the delivery deadline.
    async fn bounded<T>(&self, f: impl std::future::Future<Output = T>) -> Result<T, ClientError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, f)
            .await
            .map_err(|_| ClientError::Timeout {
                url: format!("{}/write", self.shared.client.active_server()),
                after: self.shared.config.delivery_timeout,
            })
    }
}

/// How a batch in doubt turned out.
enum Settled {
    /// The server holds it: its position.
    Stored(WriteReply),
    /// Not held by the server it may have been stored on: send it again.
    SendAgain,
    /// The server cannot tell (an older server): give up, `maybe_stored`.
    Refused(ClientError),
    /// Nobody could be asked: try again later.
    Unknown(ClientError),
}

/// A copy of `e` for reporting later (the transport source is kept as
/// text).
fn clone_error(e: &ClientError) -> ClientError {
    match e {
        ClientError::Status {
            status,
            message,
            written,
        } => ClientError::Status {
            status: *status,
            message: message.clone(),
            written: *written,
        },
        ClientError::Timeout { url, after } => ClientError::Timeout {
            url: url.clone(),
            after: *after,
        },
        ClientError::Transport {
            url,
            connect,
            source,
        } => ClientError::Transport {
            url: url.clone(),
            connect: *connect,
            source: Box::new(std::io::Error::other(source.to_string())),
        },
        other => ClientError::Transport {
            url: String::new(),
            connect: false,
            source: Box::new(std::io::Error::other(other.to_string())),
        },
    }
}
