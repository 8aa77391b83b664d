//! Batch acknowledgements for the application: each [`AckReceiver`] has
//! its own bounded queue. Delivering an ack never waits: when a receiver
//! falls `capacity` acks behind, its oldest acks are dropped and it is told
//! how many ([`AckRecvError::Lagged`]) — an application that reads acks late
//! can lose acks, never stall the producer, and always knows it lost some.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The server's acknowledgement of one batch of a
/// [`Producer`](crate::Producer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAck {
    /// Category written to.
    pub category: Arc<str>,
    /// Sequence number (per category, from 0) of the batch's first message.
    pub first_seq: u64,
    /// Number of messages in the batch.
    pub count: u64,
    /// Chunk the batch was stored in.
    pub chunk: String,
    /// Offset of the batch's first byte in that chunk.
    pub offset: u64,
    /// Batch length in bytes.
    pub size: u64,
}

/// Why [`AckReceiver::recv`] / [`AckReceiver::try_recv`] returned no ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckRecvError {
    /// No ack is waiting (only from `try_recv`).
    #[error("no acknowledgement waiting")]
    Empty,
    /// This receiver fell behind: this many acks were dropped before the
    /// next one it will get.
    #[error("{0} acknowledgements were dropped because they were not received in time")]
    Lagged(u64),
    /// The producer is gone and every ack was received.
    #[error("the producer is closed")]
    Closed,
}

#[derive(Debug)]
struct Queue {
    acks: VecDeque<BatchAck>,
    capacity: usize,
    lagged: u64,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
}

/// Receives the acknowledgements of a [`Producer`](crate::Producer)'s
/// batches, in order per category (from
/// [`Producer::subscribe_acks`](crate::Producer::subscribe_acks)).
#[derive(Debug)]
pub struct AckReceiver {
    shared: Arc<Shared>,
}

impl AckReceiver {
    /// The next ack, waiting for one.
    ///
    /// ```no_run
    /// # async fn demo(producer: chunkbus_client::Producer) {
    /// use chunkbus_client::AckRecvError;
    /// let mut acks = producer.subscribe_acks(1024);
    /// loop {
    ///     match acks.recv().await {
    ///         Ok(ack) => println!("{} messages in {}", ack.count, ack.chunk),
    ///         Err(AckRecvError::Lagged(n)) => eprintln!("missed {n} acks"),
    ///         Err(_) => break, // closed
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`AckRecvError::Lagged`] once after acks were dropped (the next call
    /// returns the oldest ack still held), [`AckRecvError::Closed`] when the
    /// producer is gone and nothing is left.
    ///
    /// # Cancel safety
    /// Cancel safe: an ack is removed only when this future returns it.
    pub async fn recv(&mut self) -> Result<BatchAck, AckRecvError> {
        let shared = Arc::clone(&self.shared);
        loop {
            let ready = shared.ready.notified();
            match self.try_recv() {
                Err(AckRecvError::Empty) => ready.await,
                other => return other,
            }
        }
    }

    /// The next ack if one is waiting.
    ///
    /// ```no_run
    /// # fn demo(mut acks: chunkbus_client::AckReceiver) {
    /// while let Ok(ack) = acks.try_recv() {
    ///     println!("#{}..#{}", ack.first_seq, ack.first_seq + ack.count);
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`AckRecvError::Empty`] when none is waiting; otherwise as
    /// [`AckReceiver::recv`].
    pub fn try_recv(&mut self) -> Result<BatchAck, AckRecvError> {
        let mut q = self.shared.queue.lock();
        if q.lagged > 0 {
            return Err(AckRecvError::Lagged(std::mem::take(&mut q.lagged)));
        }
        match q.acks.pop_front() {
            Some(ack) => Ok(ack),
            None if q.closed => Err(AckRecvError::Closed),
            None => Err(AckRecvError::Empty),
        }
    }
}

/// The producer's side: every live receiver's queue.
#[derive(Debug, Default)]
pub(crate) struct AckSubscribers {
    receivers: Mutex<Vec<Weak<Shared>>>,
}

impl AckSubscribers {
    /// A new receiver holding up to `capacity` acks.
    pub(crate) fn subscribe(&self, capacity: usize) -> AckReceiver {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                acks: VecDeque::new(),
                capacity: capacity.max(1),
                lagged: 0,
                closed: false,
            }),
            ready: Notify::new(),
        });
        self.receivers.lock().push(Arc::downgrade(&shared));
        AckReceiver { shared }
    }

    /// Hands `ack` to every receiver without waiting; forgets dropped ones.
    pub(crate) fn deliver(&self, ack: &BatchAck) {
        let mut receivers = self.receivers.lock();
        if receivers.is_empty() {
            return;
        }
        receivers.retain(|weak| {
            let Some(r) = weak.upgrade() else {
                return false;
            };
            {
                let mut q = r.queue.lock();
                if q.acks.len() >= q.capacity {
                    q.acks.pop_front();
                    q.lagged += 1;
                }
                q.acks.push_back(ack.clone());
            }
            r.ready.notify_one();
            true
        });
    }

    /// Tells every receiver that no more acks will come.
    pub(crate) fn close(&self) {
        for r in self.receivers.lock().drain(..).filter_map(|w| w.upgrade()) {
            r.queue.lock().closed = true;
            r.ready.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(n: u64) -> BatchAck {
        BatchAck {
            category: "c".into(),
            first_seq: n,
            count: 1,
            chunk: "n1-chunk000000000".into(),
            offset: n,
            size: 1,
        }
    }

    #[test]
    fn delivery_never_waits_and_lag_is_reported() {
        let subs = AckSubscribers::default();
        let mut a = subs.subscribe(2);
        let mut b = subs.subscribe(10);
        for n in 0..5 {
            subs.deliver(&ack(n));
        }
        assert_eq!(a.try_recv(), Err(AckRecvError::Lagged(3)));
        assert_eq!(a.try_recv().map(|x| x.first_seq), Ok(3));
        assert_eq!(a.try_recv().map(|x| x.first_seq), Ok(4));
        assert_eq!(a.try_recv(), Err(AckRecvError::Empty));
        for n in 0..5 {
            assert_eq!(
                b.try_recv().map(|x| x.first_seq),
                Ok(n),
                "each receiver gets all"
            );
        }
        drop(a);
        subs.deliver(&ack(5));
        assert_eq!(
            subs.receivers.lock().len(),
            1,
            "dropped receivers are forgotten"
        );
        subs.close();
        assert_eq!(b.try_recv().map(|x| x.first_seq), Ok(5));
        assert_eq!(b.try_recv(), Err(AckRecvError::Closed));
    }
}
