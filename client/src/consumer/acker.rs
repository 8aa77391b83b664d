//! [`Acker`]: acknowledging a [`Consumer`](crate::Consumer)'s batches —
//! the local positions, group acks (a compare-and-set on the server,
//! stopped after the first failure) and chukcha-style chunk acks.
//!
//! Never reads messages: the readers only share with it where they began
//! reading each chunk ([`ReadStarts`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::{Batch, Positions};
use crate::client::Client;
use crate::error::{ClientError, ConsumerError};
use crate::names::parse_chunk_name;
use crate::stats::in_span;

/// Acknowledges batches of a [`Consumer`](crate::Consumer); cheap to clone and to move to
/// other tasks ([`Consumer::acker`](crate::Consumer::acker)). All clones share the consumer's
/// positions, and their acks are applied one at a time.
///
/// ```no_run
/// # async fn demo(consumer: &mut chunkbus_client::Consumer) -> Result<(), chunkbus_client::ConsumerError> {
/// let acker = consumer.acker();
/// if let Some(batch) = consumer.next().await? {
///     tokio::spawn(async move { acker.ack(&batch).await });
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Acker {
    inner: Arc<AckerInner>,
}

#[derive(Debug)]
struct AckerInner {
    client: Client,
    category: Arc<str>,
    chunk_acks: bool,
    group: Option<String>,
    /// What was acknowledged; the lock is held across an ack's requests,
    /// so acks apply one at a time and in the order they lock.
    positions: tokio::sync::Mutex<Positions>,
    /// A copy for readers that cannot wait (updated under the lock above).
    snapshot: parking_lot::Mutex<Positions>,
    /// Where this consumer began reading each chunk it read (shared with
    /// the readers): the `from` of a group ack in a chunk this consumer
    /// has not acked in yet (the group's position when it was read).
    starts: ReadStarts,
    /// The first group ack that failed: later acks are refused
    /// ([`ConsumerError::GroupAckStopped`]).
    stopped: parking_lot::Mutex<Option<String>>,
}

/// Per chunk: the offset of the first batch this consumer read of it.
pub(super) type ReadStarts = Arc<parking_lot::Mutex<HashMap<Arc<str>, u64>>>;

impl Acker {
    /// An acker starting at `from`, sharing `starts` with the readers.
    pub(super) fn new(
        client: Client,
        category: Arc<str>,
        chunk_acks: bool,
        group: Option<String>,
        from: Positions,
        starts: ReadStarts,
    ) -> Self {
        Self {
            inner: Arc::new(AckerInner {
                client,
                category,
                chunk_acks,
                group,
                snapshot: parking_lot::Mutex::new(from.clone()),
                positions: tokio::sync::Mutex::new(from),
                starts,
                stopped: parking_lot::Mutex::new(None),
            }),
        }
    }

    /// Marks `batch` (and everything before it from the same owner) as
    /// processed. With a `group`, the position is stored on the server
    /// first, conditionally: only if the group is still where this
    /// consumer last left it in that chunk (`from`), so of two members
    /// that processed the same messages exactly one succeeds; with
    /// `chunk_acks`, the end of a sealed chunk deletes the chunk on the
    /// server. A batch at or behind what this consumer already acked is
    /// a no-op.
    ///
    /// ```no_run
    /// # async fn demo(acker: chunkbus_client::Acker, batch: chunkbus_client::Batch) {
    /// match acker.ack(&batch).await {
    ///     Ok(()) => { /* commit my results */ }
    ///     Err(e) if e.is_conflict() => { /* another member had it: discard my results */ }
    ///     Err(e) => { /* unknown: discard, then restart from the group's positions */ }
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// The group ack failed: a `409` ([`ConsumerError::is_conflict`]) means
    /// the group is not where this consumer left it (another member acked
    /// these messages, or the group moved past them); or the chunk ack
    /// failed (other than the chunk being already deleted). After a group
    /// ack failed or was cancelled, this consumer no longer knows where
    /// the group is, so every later ack fails with
    /// [`ConsumerError::GroupAckStopped`] (acking on could cover batches it
    /// gave up, or move the group past ones nobody processed): start a new
    /// consumer, which resumes from the group's stored positions.
    ///
    /// # Cancel safety
    /// See [`Consumer`](crate::Consumer): a cancelled ack may have been stored.
    pub async fn ack(&self, batch: &Batch) -> Result<(), ConsumerError> {
        let me = &self.inner;
        let mut positions = me.positions.lock().await;
        let acked_here = positions
            .0
            .get(&*batch.owner)
            .filter(|p| *p.chunk == *batch.chunk)
            .map(|p| p.offset);
        if acked_here.is_some_and(|at| at >= batch.end()) && !batch.ends_chunk {
            return Ok(()); // already covered by an ack of this consumer
        }
        if let Some(group) = &me.group {
            if let Some(first) = me.stopped.lock().clone() {
                return Err(ConsumerError::GroupAckStopped { first });
            }
            if !batch.data.is_empty() && acked_here.is_none_or(|at| at < batch.end()) {
                let from = acked_here
                    .or_else(|| me.starts.lock().get(&*batch.chunk).copied())
                    .unwrap_or(batch.offset);
                // Until the answer is in, local state may be wrong (an
                // ack cancelled here may still be stored).
                *me.stopped.lock() =
                    Some("a group ack was cancelled before its answer arrived".to_owned());
                in_span(
                    me.client.ack_group_from(
                        &me.category,
                        group,
                        &batch.chunk,
                        from,
                        batch.end(),
                    ),
                    || tracing::info_span!("chunkbus.ack", category = %me.category, %group, chunk = %batch.chunk, from, to = batch.end()),
                )
                .await
                .inspect_err(|e| {
                    // Local state no longer says where the group is.
                    *me.stopped.lock() = Some(e.to_string());
                })?;
                *me.stopped.lock() = None;
            }
        }
        positions
            .0
            .insert(batch.owner.to_string(), batch.position());
        me.snapshot.lock().clone_from(&positions);
        if let Some((owner, idx)) = parse_chunk_name(&batch.chunk) {
            // Older chunks of this owner are done for this consumer.
            me.starts
                .lock()
                .retain(|c, _| parse_chunk_name(c).is_none_or(|(o, i)| o != owner || i >= idx));
        }
        if me.chunk_acks && batch.ends_chunk {
            match me
                .client
                .ack_chunk(&me.category, &batch.chunk, batch.end())
                .await
            {
                // Deleted already (by another consumer, or retention).
                Ok(()) | Err(ClientError::ChunkDeleted { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// What has been acknowledged so far (a copy).
    ///
    /// ```no_run
    /// # fn demo(acker: chunkbus_client::Acker) -> Result<(), serde_json::Error> {
    /// let json = serde_json::to_string(&acker.positions())?;
    /// # let _ = json;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn positions(&self) -> Positions {
        self.inner.snapshot.lock().clone()
    }
}
