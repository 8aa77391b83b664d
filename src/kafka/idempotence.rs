//! Idempotent Kafka producers (`enable.idempotence=true`) on chunkbus's
//! idempotent-producer machinery (`storage::producers`, the dedup table
//! HTTP's `/write?producer=P&seq=N` uses, persisted in the index records):
//!
//! * `InitProducerId` hands out a random 63-bit producer id (unique
//!   across servers and restarts without coordination: two ids collide
//!   with probability ~n²/2⁶⁴), epoch 0; a request carrying its current
//!   id and epoch (KIP-360's epoch bump) gets the same id, epoch + 1.
//! * A produced batch carrying `(producer id, epoch)` is appended under
//!   the chunkbus producer [`key`] of `(producer id, epoch, partition)`
//!   (Kafka numbers records per partition), numbered by its records
//!   (`Sequence::Records`): a retry is answered with the original's base
//!   offset and stored once; a gap or overlap gets
//!   `OUT_OF_ORDER_SEQUENCE_NUMBER`; a batch older than the last stored
//!   one `DUPLICATE_SEQUENCE_NUMBER` (stored before: librdkafka counts it
//!   delivered, without an offset).

use bytes::Bytes;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::error::PartitionError;
use crate::names::Category;
use crate::storage::chunk::format::CheckedBody;
use crate::storage::{Appended, Sequence, Storage, StorageError, TaggedAppend};

/// Kafka's record numbers are 31-bit and wrap to 0 after `i32::MAX`.
pub const SEQUENCE_WRAP: u64 = 1 << 31;

/// The producer fields of one partition's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Kafka producer id (≥ 0).
    pub id: i64,
    /// Its epoch.
    pub epoch: i16,
    /// First record's sequence number.
    pub first: i32,
    /// Records in the batch.
    pub count: u64,
}

/// Answers `InitProducerId`. Transactional ids are refused (chunkbus
/// has no transactions).
#[must_use]
pub fn init_producer_id(req: &InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if req.transactional_id.is_some() {
        resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return resp;
    }
    let bump = req.producer_id.0 >= 0 && (0..i16::MAX - 1).contains(&req.producer_epoch);
    if bump {
        resp.producer_id = req.producer_id;
        resp.producer_epoch = req.producer_epoch + 1;
        return resp;
    }
    match random_id() {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "no randomness for a producer id");
            resp.error_code = ResponseError::UnknownServerError.code();
        }
    }
    resp
}

/// A random producer id in `1..2⁶³`.
fn random_id() -> Result<i64, getrandom::Error> {
    let mut b = [0u8; 8];
    loop {
        getrandom::fill(&mut b)?;
        let id = i64::from_be_bytes(b) & i64::MAX;
        if id != 0 {
            return Ok(id);
        }
    }
}

/// The chunkbus producer key of Kafka producer `id` at `epoch` writing
/// partition `partition`: a fixed 64-bit mix (never 0), stored in index
/// records, so it must never change. Each epoch and partition is its own
/// chunkbus producer with its own sequence numbers.
#[must_use]
pub fn key(id: i64, epoch: i16, partition: i32) -> u64 {
    // splitmix64's finalizer, applied twice over the packed fields.
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let low = (u64::from(epoch as u16) << 32) | u64::from(partition as u32);
    let k = mix(mix(id as u64 ^ 0x6b61_666b_6170_6964) ^ low);
    if k == 0 {
        1
    } else {
        k
    }
}

/// What an idempotent append answers.
pub struct Once {
    /// Where the batch is (now or first); `None` when it was stored before
    /// and its chunk has been deleted since.
    pub appended: Option<Appended>,
    /// Whether it was stored before.
    pub duplicate: bool,
}

/// Appends `body` (the records of `batch`, written to `partition`) once.
///
/// # Errors
/// `OUT_OF_ORDER_SEQUENCE_NUMBER` for a gap, an overlap or a reused
/// number with other records; `DUPLICATE_SEQUENCE_NUMBER` for a batch
/// older than the last stored one; storage errors as for any append.
pub async fn append_once(
    storage: &Storage,
    category: &Category,
    body: Bytes,
    checked: CheckedBody,
    batch: ProducerBatch,
    partition: i32,
) -> Result<Once, PartitionError> {
    let seq = Sequence::Records {
        producer: key(batch.id, batch.epoch, partition),
        first: u64::try_from(batch.first).unwrap_or(0),
        count: batch.count,
        wrap: SEQUENCE_WRAP,
    };
    let outcome = storage
        .append_sequenced(category, vec![body], checked, seq)
        .await
        .map_err(|e| refusal(&e))?;
    Ok(match outcome {
        TaggedAppend::Stored(a) => Once {
            appended: Some(a),
            duplicate: false,
        },
        TaggedAppend::Duplicate(d) => Once {
            appended: d.chunk.map(|chunk| Appended {
                chunk,
                offset: d.position.offset,
                size: d.position.size,
            }),
            duplicate: true,
        },
    })
}

/// The Kafka error for a refused idempotent append.
fn refusal(e: &StorageError) -> PartitionError {
    let code = match e {
        StorageError::StaleSequence { .. } => ResponseError::DuplicateSequenceNumber,
        StorageError::OutOfOrderSequence { .. } | StorageError::TagReused { .. } => {
            ResponseError::OutOfOrderSequenceNumber
        }
        _ => return PartitionError::from_domain(e),
    };
    PartitionError::new(code, crate::error_chain(e))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::TransactionalId;
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    const PINNED: [u64; 2] = [13_433_076_234_405_862_036, 509_921_147_404_844_399];

    #[test]
    fn keys_differ_by_id_epoch_and_partition_and_never_change() {
        let k = key(42, 0, 0);
        assert_ne!(k, key(42, 1, 0));
        assert_ne!(k, key(42, 0, 1));
        assert_ne!(k, key(43, 0, 0));
        assert_ne!(key(0, 0, 0), 0);
        // Persisted in index records: these values must never change.
        assert_eq!(key(1, 0, 0), PINNED[0]);
        assert_eq!(key(i64::MAX, i16::MAX, 2), PINNED[1]);
    }

    /// A non-transactional request (the codec's default names id "").
    fn plain() -> InitProducerIdRequest {
        let mut r = InitProducerIdRequest::default();
        r.transactional_id = None;
        r
    }

    #[test]
    fn ids_are_random_positive_and_epochs_bump() {
        let a = init_producer_id(&plain());
        let b = init_producer_id(&plain());
        assert_eq!(a.error_code, 0);
        assert!(a.producer_id.0 > 0 && b.producer_id.0 > 0);
        assert_ne!(a.producer_id, b.producer_id);
        assert_eq!(a.producer_epoch, 0);
        let mut again = plain();
        again.producer_id = a.producer_id;
        again.producer_epoch = 0;
        let c = init_producer_id(&again);
        assert_eq!((c.producer_id, c.producer_epoch), (a.producer_id, 1));
        let mut tx = plain();
        tx.transactional_id = Some(TransactionalId(StrBytes::from_static_str("t")));
        assert_eq!(
            init_producer_id(&tx).error_code,
            ResponseError::TransactionalIdAuthorizationFailed.code()
        );
    }
}
