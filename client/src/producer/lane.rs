//! The send path of one category ("lane"): its open batch, sealing into
//! the lane's queue in sequence order, the memory budget, and the
//! application's handle [`CategoryProducer`] (send, enqueue, try_send,
//! send_timeout, send_lines, flush, reset).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::delivery::{BatchSlot, Delivery, SlotGuard, Stored};
use super::{Handle, Shared};
use crate::error::ProducerError;

/// Per-category state shared by `send` callers and the sender task.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) category: Arc<str>,
    pub(crate) state: Mutex<LaneState>,
    /// Serializes sealing (and the budget wait that precedes opening a new
    /// batch), so sealed batches enter the queue in sequence order.
    pub(crate) seal_lock: tokio::sync::Mutex<()>,
    /// Wakes the sender task: a batch was queued or opened, or close.
    pub(crate) wake: Notify,
    /// Sequence number below which every message has been acknowledged.
    pub(crate) acked: watch::Sender<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct LaneState {
    pub(crate) open: Option<OpenBatch>,
    pub(crate) queue: VecDeque<SealedBatch>,
    pub(crate) next_seq: u64,
    pub(crate) closed: bool,
    /// The batch that could not be stored, until `reset`.
    failure: Option<LaneFailure>,
    /// Counts failures, so a flush that started before one reports it
    /// even when `reset` already cleared it.
    failures: u64,
    /// The most recent failure (kept across `reset` for such flushes).
    last_failure: Option<ProducerError>,
}

/// A lane's failed batch and what was dropped with it.
#[derive(Debug, Clone)]
struct LaneFailure {
    error: ProducerError,
    /// Sequence numbers not stored (or, for the failed batch itself with
    /// `maybe_stored`, perhaps stored): the failed batch and everything
    /// buffered behind it.
    dropped: Range<u64>,
}

/// What [`CategoryProducer::reset`] cleared.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LaneReset {
    /// The failure that stopped the category ([`ProducerError::BatchFailed`]).
    pub error: ProducerError,
    /// Sequence numbers that were not sent: the failed batch (which may
    /// have been stored if the error says so) and everything buffered
    /// behind it when it failed.
    pub dropped: Range<u64>,
}

/// The batch `send` appends to.
#[derive(Debug)]
pub(crate) struct OpenBatch {
    buf: BytesMut,
    first_seq: u64,
    count: u64,
    pub(crate) opened: Instant,
    permit: OwnedSemaphorePermit,
    slot: SlotGuard,
}

/// A batch waiting for (or in) its request.
#[derive(Debug)]
pub(crate) struct SealedBatch {
    pub(crate) body: Bytes,
    pub(crate) first_seq: u64,
    pub(crate) count: u64,
    pub(crate) permit: OwnedSemaphorePermit,
    /// Resolved by the sender; resolved `Closed` if dropped unanswered.
    pub(crate) slot: SlotGuard,
}

impl OpenBatch {
    pub(crate) fn seal(mut self) -> Option<SealedBatch> {
        if self.count == 0 {
            return None;
        }
        // Give back the part of the reservation this batch does not use,
        // unless the batch is nearly full: then it keeps all of it, so its
        // buffer can be recycled once acknowledged without waiting for the
        // budget again (senders wait on it all the time under load).
        let unused = self.permit.num_permits().saturating_sub(self.buf.len());
        if unused > self.permit.num_permits() / 8 {
            drop(self.permit.split(unused));
        }
        Some(SealedBatch {
            body: self.buf.freeze(),
            first_seq: self.first_seq,
            count: self.count,
            permit: self.permit,
            slot: self.slot,
        })
    }

    /// Appends one framed message (`body` + newline) and returns its
    /// delivery. The caller checked there is room.
    fn push(&mut self, body: &[u8], seq: u64) -> Delivery {
        let at = self.buf.len() as u64;
        self.buf.extend_from_slice(body);
        self.buf.extend_from_slice(b"\n");
        self.count += 1;
        Delivery {
            slot: Arc::clone(&self.slot.0),
            seq,
            at,
            len: body.len() as u64 + 1,
        }
    }
}

impl Lane {
    pub(crate) fn new(category: Arc<str>) -> Self {
        Self {
            category,
            state: Mutex::new(LaneState::default()),
            seal_lock: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            acked: watch::Sender::new(0),
        }
    }

    /// The last handle is gone: the sender sends what is buffered, then
    /// exits. Returns the messages not acknowledged yet.
    pub(crate) fn close_on_drop(&self) -> u64 {
        let mut st = self.state.lock();
        st.closed = true;
        let undelivered = if st.failure.is_none() {
            st.next_seq.saturating_sub(*self.acked.borrow())
        } else {
            0
        };
        drop(st);
        self.wake.notify_one();
        undelivered
    }

    /// Shutdown: drops everything buffered (its deliveries resolve
    /// `Closed`) and returns the messages not acknowledged.
    pub(crate) fn drop_buffered(&self) -> u64 {
        let mut st = self.state.lock();
        let unacked = st.next_seq.saturating_sub(*self.acked.borrow());
        st.open = None;
        st.queue.clear();
        unacked
    }

    /// Stops the sender task and wakes every waiter.
    pub(crate) fn stop(&self) {
        self.state.lock().closed = true;
        self.wake.notify_one();
        self.acked.send_modify(|_| {});
    }

    /// The batch from `first_seq` failed with `error`: fail-stop for this
    /// category. What is buffered behind it is dropped at once (its memory
    /// goes back to the other categories; its deliveries get `error`).
    pub(crate) fn fail(&self, first_seq: u64, error: &ProducerError) {
        let dropped: Vec<SlotGuard> = {
            let mut st = self.state.lock();
            let open = st.open.take().map(|o| o.slot);
            let mut dropped: Vec<SlotGuard> = st.queue.drain(..).map(|b| b.slot).collect();
            dropped.extend(open);
            st.failures += 1;
            st.last_failure = Some(error.clone());
            st.failure = Some(LaneFailure {
                error: error.clone(),
                dropped: first_seq..st.next_seq,
            });
            dropped
        };
        for slot in dropped {
            slot.0.resolve(Err(error.clone()));
        }
        // Wake flushers so they see the failure.
        self.acked.send_modify(|_| {});
    }

    /// Sending fails with the lane's failure, or `Closed` after close.
    fn check(shared: &Shared, st: &LaneState) -> Result<(), ProducerError> {
        if let Some(f) = &st.failure {
            return Err(f.error.clone());
        }
        if shared.closed.load(Ordering::Relaxed) {
            return Err(ProducerError::Closed);
        }
        Ok(())
    }

    /// Seals the open batch and waits until every message queued so far
    /// is acknowledged.
    pub(crate) async fn flush(&self, shared: &Shared) -> Result<(), ProducerError> {
        let (target, failures) = {
            let _order = self.seal_lock.lock().await;
            let mut st = self.state.lock();
            if let Some(f) = &st.failure {
                return Err(f.error.clone());
            }
            if let Some(sealed) = st.open.take().and_then(OpenBatch::seal) {
                st.queue.push_back(sealed);
            }
            self.wake.notify_one();
            (st.next_seq, st.failures)
        };
        let mut acked = self.acked.subscribe();
        loop {
            if *acked.borrow_and_update() >= target {
                return Ok(());
            }
            {
                let st = self.state.lock();
                if st.failures != failures {
                    // Failed since this flush began (maybe reset already).
                    let e = st.last_failure.clone().unwrap_or(ProducerError::Closed);
                    return Err(e);
                }
                if shared.closed.load(Ordering::Relaxed)
                    && st.closed
                    && st.queue.is_empty()
                    && st.open.is_none()
                {
                    return Err(ProducerError::Closed);
                }
            }
            // The sender task publishes progress and failure through `acked`.
            if acked.changed().await.is_err() {
                return Err(ProducerError::Closed);
            }
        }
    }
}

/// Sends messages to one category. Cheap to clone; clones share order.
///
/// Three ways to send one message, by how long the caller may wait:
/// [`send`](Self::send) waits until it is stored,
/// [`enqueue`](Self::enqueue) until it is queued (memory allows), and
/// [`try_send`](Self::try_send) never waits; the last two return a
/// [`Delivery`] to await where it was stored. See [`Producer`](crate::Producer)
/// for cancel safety.
#[derive(Debug, Clone)]
pub struct CategoryProducer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) _handle: Arc<Handle>,
    pub(crate) lane: Arc<Lane>,
}

/// Why a message cannot be queued at all.
fn frame(message: &[u8], max: usize) -> Result<&[u8], ProducerError> {
    let body = message.strip_suffix(b"\n").unwrap_or(message);
    if let Some(pos) = memchr::memchr(b'\n', body) {
        return Err(ProducerError::InvalidMessage(format!(
            "message contains a newline at byte {pos}; a message is one line"
        )));
    }
    check_len(body.len() + 1, max)?;
    Ok(body)
}

fn check_len(len: usize, max: usize) -> Result<(), ProducerError> {
    if len > max {
        return Err(ProducerError::InvalidMessage(format!(
            "message of {len} bytes (newline included) is longer than max_message_bytes={max}"
        )));
    }
    Ok(())
}

impl CategoryProducer {
    /// The category this handle sends to.
    ///
    /// ```no_run
    /// # fn demo(producer: chunkbus_client::Producer) -> Result<(), chunkbus_client::ProducerError> {
    /// assert_eq!(producer.category("events")?.name(), "events");
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.lane.category
    }

    /// Sends one message (a trailing newline is added when missing) and
    /// waits until the server has stored it: resolves to where.
    ///
    /// Waiting for each message before sending the next sends one batch per
    /// message; for throughput, send concurrently (several tasks, or
    /// [`enqueue`](Self::enqueue) many and await their deliveries).
    ///
    /// ```no_run
    /// # async fn demo(events: chunkbus_client::CategoryProducer) -> Result<(), chunkbus_client::ProducerError> {
    /// let stored = events.send(r#"{"user":42}"#).await?;
    /// println!("#{} is in {} at {}", stored.seq, stored.chunk, stored.offset);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue), then the batch's failure
    /// ([`ProducerError::BatchFailed`]) or [`ProducerError::Closed`].
    ///
    /// # Cancel safety
    /// Once queued, the message is sent even if this future is dropped;
    /// only the answer is lost.
    pub async fn send(&self, message: impl AsRef<[u8]>) -> Result<Stored, ProducerError> {
        self.enqueue(message).await?.await
    }

    /// Queues one message (a trailing newline is added when missing) and
    /// returns its [`Delivery`], a future of where it was stored. Waits
    /// only when the memory budget is spent (backpressure). Drop the
    /// delivery when per-message answers do not matter
    /// ([`Producer::flush`](crate::Producer::flush) and
    /// [`Producer::subscribe_acks`](crate::Producer::subscribe_acks) still
    /// tell).
    ///
    /// ```no_run
    /// # async fn demo(events: chunkbus_client::CategoryProducer) -> Result<(), chunkbus_client::ProducerError> {
    /// let mut pending = Vec::new();
    /// for i in 0..1000 {
    ///     pending.push(events.enqueue(format!("event {i}")).await?);
    /// }
    /// for d in pending {
    ///     let stored = d.await?;
    ///     # let _ = stored;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerError::InvalidMessage`] for an embedded newline or a
    /// message longer than `max_message_bytes`; the category's failure
    /// if a batch failed earlier; [`ProducerError::Closed`].
    ///
    /// # Cancel safety
    /// Cancel safe: the message is queued only in the step that returns.
    pub async fn enqueue(&self, message: impl AsRef<[u8]>) -> Result<Delivery, ProducerError> {
        let body = frame(message.as_ref(), self.shared.config.max_message_bytes)?;
        let need = body.len() + 1;
        loop {
            if let Some(d) = self.append(body)? {
                return Ok(d);
            }
            self.rotate(need).await?;
        }
    }

    /// Queues one message without ever waiting: fails with
    /// [`ProducerError::Full`] when it would have to wait for memory (or
    /// for another caller sealing a batch right now).
    ///
    /// ```no_run
    /// # fn demo(events: chunkbus_client::CategoryProducer) -> Result<(), chunkbus_client::ProducerError> {
    /// use chunkbus_client::ProducerError;
    /// match events.try_send("tick") {
    ///     Ok(delivery) => drop(delivery), // queued; not waiting for the answer
    ///     Err(ProducerError::Full) => { /* shed load: drop or count the message */ }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerError::Full`], or as [`enqueue`](Self::enqueue).
    pub fn try_send(&self, message: impl AsRef<[u8]>) -> Result<Delivery, ProducerError> {
        let body = frame(message.as_ref(), self.shared.config.max_message_bytes)?;
        if let Some(d) = self.append(body)? {
            return Ok(d);
        }
        self.try_rotate(body.len() + 1)?;
        self.append(body)?.ok_or(ProducerError::Full)
    }

    /// Like [`enqueue`](Self::enqueue), waiting at most `timeout` for
    /// memory; then fails with [`ProducerError::Full`] and nothing was
    /// queued.
    ///
    /// ```no_run
    /// # async fn demo(events: chunkbus_client::CategoryProducer) -> Result<(), chunkbus_client::ProducerError> {
    /// use std::time::Duration;
    /// let delivery = events.send_timeout("tick", Duration::from_millis(10)).await?;
    /// # drop(delivery);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerError::Full`], or as [`enqueue`](Self::enqueue).
    ///
    /// # Cancel safety
    /// As [`enqueue`](Self::enqueue).
    pub async fn send_timeout(
        &self,
        message: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Delivery, ProducerError> {
        tokio::time::timeout(timeout, self.enqueue(message))
            .await
            .unwrap_or(Err(ProducerError::Full))
    }

    /// Queues already framed messages: `lines` must be one or more
    /// messages each ending in `\n` (what a file of lines holds). Returns
    /// the sequence number of the first one. Large inputs are split at
    /// message boundaries into batches.
    ///
    /// ```no_run
    /// # async fn demo(events: chunkbus_client::CategoryProducer) -> Result<(), chunkbus_client::ProducerError> {
    /// let first = events.send_lines(b"one\ntwo\nthree\n").await?;
    /// println!("#{first}..#{}", first + 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ProducerError::InvalidMessage`] if `lines` is empty, does not end
    /// in a newline or holds a message longer than `max_message_bytes`
    /// (nothing of `lines` is queued then); the category's failure.
    ///
    /// # Cancel safety
    /// Cancelled while waiting for memory, a prefix of `lines` (whole
    /// messages) may have been queued.
    pub async fn send_lines(&self, lines: &[u8]) -> Result<u64, ProducerError> {
        if !lines.ends_with(b"\n") {
            return Err(ProducerError::InvalidMessage(
                "lines must be non-empty and end with a newline".to_owned(),
            ));
        }
        let max_msg = self.shared.config.max_message_bytes;
        let mut start = 0usize;
        for nl in memchr::memchr_iter(b'\n', lines) {
            check_len(nl + 1 - start, max_msg)?;
            start = nl + 1;
        }
        let max_batch = self.shared.config.max_batch_bytes;
        let mut rest = lines;
        let mut first = None;
        while !rest.is_empty() {
            let appended = {
                let mut st = self.lane.state.lock();
                Lane::check(&self.shared, &st)?;
                let LaneState { open, next_seq, .. } = &mut *st;
                match open.as_mut() {
                    Some(open) => {
                        let room = max_batch - open.buf.len();
                        let take = if rest.len() <= room {
                            rest.len()
                        } else {
                            memchr::memrchr(b'\n', &rest[..room]).map_or(0, |i| i + 1)
                        };
                        if take > 0 {
                            let part = &rest[..take];
                            let n = memchr::memchr_iter(b'\n', part).count() as u64;
                            open.buf.extend_from_slice(part);
                            open.count += n;
                            first.get_or_insert(*next_seq);
                            *next_seq += n;
                            rest = &rest[take..];
                        }
                        take
                    }
                    None => 0,
                }
            };
            if appended == 0 {
                let next_len = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
                debug_assert!(next_len <= max_msg);
                self.rotate(next_len).await?;
            }
        }
        Ok(first.unwrap_or(0))
    }

    /// Sends the open batch and waits until every message sent through
    /// this category so far is acknowledged.
    ///
    /// ```no_run
    /// # async fn demo(events: chunkbus_client::CategoryProducer) -> Result<(), chunkbus_client::ProducerError> {
    /// events.enqueue("a").await?;
    /// events.flush().await?; // "a" is stored
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The category's failure.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn flush(&self) -> Result<(), ProducerError> {
        self.lane.flush(&self.shared).await
    }

    /// Clears this category's failure so it accepts messages again
    /// (sequence numbers go on from where they were). Returns what was
    /// cleared, or None when the category had not failed.
    ///
    /// ```no_run
    /// # async fn demo(events: chunkbus_client::CategoryProducer) {
    /// if let Some(reset) = events.reset().await {
    ///     eprintln!("lost #{:?}: {}", reset.dropped, reset.error);
    /// }
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe: the failure is cleared only in the step that returns.
    pub async fn reset(&self) -> Option<LaneReset> {
        let _order = self.lane.seal_lock.lock().await;
        let mut st = self.lane.state.lock();
        let failure = st.failure.take()?;
        let next = st.next_seq;
        drop(st);
        // Everything up to here is settled: stored, or reported dropped.
        self.lane.acked.send_replace(next);
        Some(LaneReset {
            error: failure.error,
            dropped: failure.dropped,
        })
    }

    /// Appends `body` to the open batch if it has room.
    fn append(&self, body: &[u8]) -> Result<Option<Delivery>, ProducerError> {
        let mut st = self.lane.state.lock();
        Lane::check(&self.shared, &st)?;
        let LaneState { open, next_seq, .. } = &mut *st;
        if let Some(open) = open.as_mut() {
            if open.buf.len() + body.len() < self.shared.config.max_batch_bytes {
                let d = open.push(body, *next_seq);
                *next_seq += 1;
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// Seals the open batch unless it has room for `need` bytes (under
    /// the lane lock). Returns false when it has room (someone else
    /// rotated meanwhile).
    fn seal_full(&self, need: usize) -> bool {
        let mut st = self.lane.state.lock();
        if let Some(open) = &st.open {
            if open.buf.len() + need <= self.shared.config.max_batch_bytes {
                return false;
            }
        }
        if let Some(sealed) = st.open.take().and_then(OpenBatch::seal) {
            st.queue.push_back(sealed);
            self.lane.wake.notify_one();
        }
        true
    }

    /// Opens a batch with `buf` and its reservation.
    fn open(&self, buf: BytesMut, permit: OwnedSemaphorePermit) -> Result<(), ProducerError> {
        let mut st = self.lane.state.lock();
        // Checked under the lock that a failure takes too: no batch opens
        // on a failed lane.
        Lane::check(&self.shared, &st)?;
        let first_seq = st.next_seq;
        st.open = Some(OpenBatch {
            buf,
            first_seq,
            count: 0,
            opened: Instant::now(),
            permit,
            slot: SlotGuard(Arc::new(BatchSlot::new(Arc::clone(&self.lane.category)))),
        });
        self.lane.wake.notify_one();
        Ok(())
    }

    /// Seals the open batch unless it has room for `need` bytes, then
    /// opens a new one once the budget allows.
    async fn rotate(&self, need: usize) -> Result<(), ProducerError> {
        let _order = self.lane.seal_lock.lock().await;
        if !self.seal_full(need) {
            return Ok(());
        }
        // A caller that never waits (room in every batch) would otherwise
        // keep its worker thread until the budget runs out, starving the
        // sender and connection tasks queued behind it on that thread.
        tokio::task::yield_now().await;
        let max_batch = self.shared.config.max_batch_bytes;
        let spare = self.shared.spare.lock().pop();
        let (buf, permit) = match spare {
            Some(s) => s,
            None => {
                let permit = Arc::clone(&self.shared.budget)
                    .acquire_many_owned(u32::try_from(max_batch).unwrap_or(u32::MAX))
                    .await
                    .map_err(|_| ProducerError::Closed)?;
                (BytesMut::with_capacity(max_batch), permit)
            }
        };
        self.open(buf, permit)
    }

    /// [`rotate`](Self::rotate) without waiting: [`ProducerError::Full`]
    /// when it would wait for the seal lock or the budget.
    fn try_rotate(&self, need: usize) -> Result<(), ProducerError> {
        let Ok(_order) = self.lane.seal_lock.try_lock() else {
            return Err(ProducerError::Full);
        };
        let max_batch = self.shared.config.max_batch_bytes;
        // Reserve before sealing, so a refusal leaves everything as it was.
        let spare = self.shared.spare.lock().pop();
        let (buf, permit) = match spare {
            Some(s) => s,
            None => {
                let permit = Arc::clone(&self.shared.budget)
                    .try_acquire_many_owned(u32::try_from(max_batch).unwrap_or(u32::MAX))
                    .map_err(|_| ProducerError::Full)?;
                (BytesMut::with_capacity(max_batch), permit)
            }
        };
        if !self.seal_full(need) {
            return Ok(()); // room after all: the reservation goes back
        }
        self.open(buf, permit)
    }
}
