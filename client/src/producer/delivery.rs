//! Per-message outcomes: a [`Delivery`] is the future of one queued
//! message, resolving to [`Stored`] (where the server put it) or to the
//! error of its batch. One shared [`BatchSlot`] per batch holds the outcome,
//! so queueing a message allocates nothing: its `Delivery` is a reference
//! count on the batch's slot plus the message's place in the batch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use crate::error::ProducerError;

/// Where the server stored one message.
///
/// Marked `#[non_exhaustive]` so later producers (idempotent sends) can
/// say more, e.g. whether it was a duplicate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stored {
    /// Category written to.
    pub category: Arc<str>,
    /// The message's sequence number in its category (per producer, from 0).
    pub seq: u64,
    /// Chunk the message is in.
    pub chunk: Arc<str>,
    /// Offset of the message's first byte in that chunk: a consumer
    /// position there reads it next.
    pub offset: u64,
    /// Length of the message, newline included.
    pub len: u64,
}

/// Where a whole batch went, filled in once by the sender.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub(crate) chunk: Arc<str>,
    pub(crate) offset: u64,
}

#[derive(Debug, Default)]
struct SlotState {
    outcome: Option<Result<Placed, ProducerError>>,
    wakers: Vec<Waker>,
}

/// The outcome of one batch, shared by its messages' [`Delivery`]s.
#[derive(Debug)]
pub(crate) struct BatchSlot {
    category: Arc<str>,
    state: Mutex<SlotState>,
}

impl BatchSlot {
    pub(crate) fn new(category: Arc<str>) -> Self {
        Self {
            category,
            state: Mutex::new(SlotState::default()),
        }
    }

    /// Sets the outcome (the first one wins) and wakes every waiter.
    pub(crate) fn resolve(&self, outcome: Result<Placed, ProducerError>) {
        let wakers = {
            let mut st = self.state.lock();
            if st.outcome.is_some() {
                return;
            }
            st.outcome = Some(outcome);
            std::mem::take(&mut st.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// Resolves its slot with [`ProducerError::Closed`] when the batch is
/// dropped without an outcome (producer shut down, runtime gone), so no
/// [`Delivery`] ever waits forever.
#[derive(Debug)]
pub(crate) struct SlotGuard(pub(crate) Arc<BatchSlot>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.resolve(Err(ProducerError::Closed));
    }
}

/// The future of one queued message: resolves to where it was [`Stored`],
/// or to the error of its batch ([`ProducerError::BatchFailed`], also for
/// messages dropped behind a failed batch; [`ProducerError::Closed`] when
/// the producer stopped first).
///
/// Dropping it changes nothing: the message is sent anyway. Awaiting it is
/// cancel safe. Cheap: no allocation per message.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use chunkbus_client::{Client, Producer, ProducerConfig};
/// let producer = Producer::new(Client::new("http://127.0.0.1:8080")?, ProducerConfig::default());
/// let events = producer.category("events")?;
/// let pending = events.enqueue("first").await?; // queued, not stored yet
/// println!("sequence number {}", pending.seq());
/// let stored = pending.await?; // stored now
/// println!("in {} at {}", stored.chunk, stored.offset);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Delivery {
    pub(crate) slot: Arc<BatchSlot>,
    pub(crate) seq: u64,
    /// Offset of the message in its batch.
    pub(crate) at: u64,
    pub(crate) len: u64,
}

impl Delivery {
    /// The message's sequence number in its category (from 0 per producer;
    /// [`BatchAck`](crate::BatchAck) ranges use the same numbers).
    ///
    /// ```no_run
    /// # async fn demo(events: chunkbus_client::CategoryProducer) -> Result<(), chunkbus_client::ProducerError> {
    /// let d = events.enqueue("hello").await?;
    /// assert_eq!(d.seq(), 0); // the first message of this category
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The outcome if it is known already, without waiting.
    ///
    /// ```no_run
    /// # async fn demo(events: chunkbus_client::CategoryProducer) -> Result<(), chunkbus_client::ProducerError> {
    /// let d = events.enqueue("hello").await?;
    /// if d.try_result().is_none() {
    ///     // not answered yet
    /// }
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn try_result(&self) -> Option<Result<Stored, ProducerError>> {
        let st = self.slot.state.lock();
        st.outcome.as_ref().map(|o| self.outcome(o))
    }

    fn outcome(&self, o: &Result<Placed, ProducerError>) -> Result<Stored, ProducerError> {
        match o {
            Ok(p) => Ok(Stored {
                category: Arc::clone(&self.slot.category),
                seq: self.seq,
                chunk: Arc::clone(&p.chunk),
                offset: p.offset + self.at,
                len: self.len,
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Future for Delivery {
    type Output = Result<Stored, ProducerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut st = this.slot.state.lock();
        match &st.outcome {
            Some(o) => Poll::Ready(this.outcome(o)),
            None => {
                // A future polled again (select loops) registers once.
                if !st
                    .wakers
                    .iter()
                    .rev()
                    .take(4)
                    .any(|w| w.will_wake(cx.waker()))
                {
                    st.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn delivery(slot: &Arc<BatchSlot>, seq: u64, at: u64) -> Delivery {
        Delivery {
            slot: Arc::clone(slot),
            seq,
            at,
            len: 3,
        }
    }

    #[tokio::test]
    async fn deliveries_resolve_to_their_own_offset_or_closed_when_dropped() {
        let slot = Arc::new(BatchSlot::new("c".into()));
        let (a, b) = (delivery(&slot, 7, 0), delivery(&slot, 8, 3));
        assert!(a.try_result().is_none());
        let waiter = tokio::spawn(b);
        slot.resolve(Ok(Placed {
            chunk: "n1-chunk000000002".into(),
            offset: 100,
        }));
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(
            (got.seq, &*got.chunk, got.offset, got.len),
            (8, "n1-chunk000000002", 103, 3)
        );
        assert_eq!(a.await.unwrap().offset, 100);

        // A batch dropped unanswered: its deliveries end with Closed.
        let slot = Arc::new(BatchSlot::new("c".into()));
        let d = delivery(&slot, 0, 0);
        drop(SlotGuard(slot));
        assert!(matches!(d.await, Err(ProducerError::Closed)));
    }
}
