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
    let mut backoff = Duration::from_millis(25);
    // An idempotent producer's batch carries its tag; the server stores it
    // once, so what may have been stored can be sent again too — to the
    // server that may hold it (pinned after the first such failure), which
    // answers a repeat with the original position.
    let tag = shared.producer_id.map(|producer| ProducerTag {
        producer,
        seq: batch.first_seq,
    });
    let mut pinned: Option<usize> = None;
    let result = loop {
        let (result, server) = shared
            .client
            .write_at(
                pinned,
                &lane.category,
                batch.body.clone(),
                shared.config.write,
                tag,
            )
            .await;
        match result {
            Ok(reply) => break Ok(reply),
            Err(e) if may_retry(&e, tag.is_some()) && Instant::now() + backoff < deadline => {
                if !e.is_safe_to_resend() {
                    pinned = Some(server);
                } else if let (Some(at), Some(tag)) = (pinned, tag) {
                    // The server that may hold the batch cannot be
                    // reached: another one that already holds a copy of it
                    // settles the doubt (never a second store: a probe
                    // stores nothing).
                    if let Some(reply) = find_elsewhere(shared, lane, at, tag).await {
                        break Ok(reply);
                    }
                }
                shared.stats.record(&StatsEvent::Retry {
                    category: &lane.category,
                    error: &e,
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => break Err(e),
        }
    };
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

/// Asks every server but `except` whether it holds the batch tagged `tag`
/// (a copy replicated from the server that stored it); the first that does
/// answers with its position.
async fn find_elsewhere(
    shared: &Shared,
    lane: &Lane,
    except: usize,
    tag: ProducerTag,
) -> Option<WriteReply> {
    for i in (0..shared.client.server_count()).filter(|&i| i != except) {
        if let Ok(reply) = shared
            .client
            .find_at(i, &lane.category, shared.config.write, tag)
            .await
        {
            return Some(reply);
        }
    }
    None
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
