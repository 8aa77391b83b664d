//! Kafka records ⇄ chunkbus messages, pure.
//!
//! Produce: [`messages_of`] decodes the batches of one partition (through
//! the size-capped [`super::compression`]) and checks that each record is
//! a chunkbus message: a non-null value without `\n`, no key, no headers,
//! not transactional. Anything else is refused with `INVALID_RECORD` and
//! a message saying why, never silently dropped. Producer timestamps are
//! replaced by the log append time, as a Kafka topic with
//! `message.timestamp.type=LogAppendTime` does.
//!
//! Fetch: [`batch_of`] turns whole newline-terminated messages into one
//! uncompressed v2 RecordBatch with consecutive offsets.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use kafka_protocol::ResponseError;

use super::compression;
use super::error::PartitionError;
use super::idempotence::ProducerBatch;
use crate::storage::chunk::format::{BodyChecker, CheckedBody};

/// Size limits a produced partition must respect (from `max_message_size`
/// and `max_batch_size`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message, newline included.
    pub max_message: u64,
    /// Largest total of messages in one partition of one request.
    pub max_body: u64,
}

/// The records of one partition of a Produce request, as messages.
#[derive(Debug)]
pub struct Produced {
    /// `body` checked against the limits, with its CRC (for the append).
    pub checked: CheckedBody,
    /// Each record's value followed by `\n`, in order: the body of one
    /// append, built while decoding (one copy of each value).
    pub body: Bytes,
    /// Records (= messages) in `body`.
    pub records: u64,
    /// The idempotent producer's fields, when the batches carry them.
    pub producer: Option<ProducerBatch>,
}

fn invalid(why: impl Into<String>) -> PartitionError {
    PartitionError::new(ResponseError::InvalidRecord, why)
}

/// The records of `records` (one partition of a Produce request) as one
/// body of newline-terminated messages, and the idempotent producer's
/// fields if they carry them.
///
/// # Errors
/// `CORRUPT_MESSAGE` for undecodable batches, `MESSAGE_TOO_LARGE` /
/// `RECORD_LIST_TOO_LARGE` past the limits, `INVALID_RECORD` for records
/// chunkbus cannot store unchanged or that are not one producer's
/// consecutive sequence numbers.
pub fn messages_of(records: Bytes, limits: Limits) -> Result<Produced, PartitionError> {
    let cap = usize::try_from(limits.max_body.saturating_mul(2)).unwrap_or(usize::MAX);
    let mut buf = records;
    // Uncompressed, the body is at most the batches' size (a record's
    // framing is longer than the newline that replaces it); never more
    // than `max_body` (checked below).
    let max_body = usize::try_from(limits.max_body).unwrap_or(usize::MAX);
    let mut body = BytesMut::with_capacity(buf.len().min(max_body));
    let mut count = 0u64;
    let mut producer = Producer::default();
    let mut total = 0u64;
    while !buf.is_empty() {
        let decompress = |data: &mut Bytes, codec: Compression| -> anyhow::Result<Bytes> {
            Ok(compression::decompress(data, codec, cap)?)
        };
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress))
            .map_err(|e| {
                let too_large = e.chain().any(|c| {
                    c.downcast_ref::<compression::DecompressError>()
                        .is_some_and(|d| matches!(d, compression::DecompressError::TooLarge { .. }))
                });
                let code = if too_large {
                    ResponseError::RecordListTooLarge
                } else {
                    ResponseError::CorruptMessage
                };
                PartitionError::new(code, format!("record batch does not decode: {e:#}"))
            })?;
        for r in set.records {
            check(&r)?;
            producer.add(&r)?;
            let value = r.value.unwrap_or_default();
            let len = value.len() as u64 + 1;
            if len > limits.max_message {
                return Err(PartitionError::new(
                    ResponseError::MessageTooLarge,
                    format!(
                        "a record of {} bytes is a message of {len} bytes (newline added); max_message_size is {}",
                        value.len(),
                        limits.max_message
                    ),
                ));
            }
            total += len;
            if total > limits.max_body {
                return Err(PartitionError::new(
                    ResponseError::RecordListTooLarge,
                    format!(
                        "the records of one partition total more than max_batch_size ({} bytes)",
                        limits.max_body
                    ),
                ));
            }
            body.extend_from_slice(&value);
            body.extend_from_slice(b"\n");
            count += 1;
        }
    }
    if count == 0 {
        return Err(invalid("no records to produce"));
    }
    // The storage's check of the body (limits, CRC) also counts its
    // messages: more than records means a value held a newline.
    let mut checker = BodyChecker::new(limits.max_message, limits.max_body);
    checker
        .feed(&body)
        .map_err(|e| PartitionError::from_domain(&e))?;
    if checker.messages() != count {
        return Err(invalid(
            "a record value contains a newline: chunkbus messages end at the first newline, so the value would split",
        ));
    }
    let checked = checker
        .finish()
        .map_err(|e| PartitionError::from_domain(&e))?;
    Ok(Produced {
        checked,
        body: body.freeze(),
        records: count,
        producer: producer.batch,
    })
}

/// Collects the producer fields of a partition's records: none at all,
/// or one producer id and epoch with consecutive sequence numbers.
#[derive(Default)]
struct Producer {
    records: u64,
    batch: Option<ProducerBatch>,
}

impl Producer {
    fn add(&mut self, r: &Record) -> Result<(), PartitionError> {
        let first = self.records == 0;
        self.records += 1;
        match &mut self.batch {
            None if r.producer_id == NO_PRODUCER_ID => Ok(()),
            None if first => {
                if r.producer_id < 0 || r.producer_epoch < 0 || r.sequence < 0 {
                    return Err(invalid(format!(
                        "idempotent batch with producer id {}, epoch {}, base sequence {}: none may be negative",
                        r.producer_id, r.producer_epoch, r.sequence
                    )));
                }
                self.batch = Some(ProducerBatch {
                    id: r.producer_id,
                    epoch: r.producer_epoch,
                    first: r.sequence,
                    count: 1,
                });
                Ok(())
            }
            None => Err(mixed()),
            Some(b) => {
                // The decoder adds offset deltas with i32 wrapping; Kafka's
                // numbers wrap from i32::MAX to 0.
                let wrap = super::idempotence::SEQUENCE_WRAP;
                let seq = (i64::from(r.sequence) + wrap as i64) as u64 % wrap;
                let expected = (u64::try_from(b.first).unwrap_or(0) + b.count) % wrap;
                if r.producer_id != b.id || r.producer_epoch != b.epoch || seq != expected {
                    return Err(mixed());
                }
                b.count += 1;
                Ok(())
            }
        }
    }
}

fn mixed() -> PartitionError {
    invalid("the batches of one partition must be one producer's (or none's), with consecutive sequence numbers")
}

/// Refuses what one newline-terminated message cannot hold.
fn check(r: &Record) -> Result<(), PartitionError> {
    if r.transactional || r.control {
        return Err(invalid(
            "transactional and control records are not supported by chunkbus",
        ));
    }
    if r.key.is_some() {
        return Err(invalid(
            "record keys are not stored by chunkbus: a record is one message (its value); produce without a key",
        ));
    }
    if !r.headers.is_empty() {
        return Err(invalid(
            "record headers are not stored by chunkbus: a record is one message (its value); produce without headers",
        ));
    }
    match &r.value {
        None => Err(invalid(
            "null values (tombstones) are not supported: a record is one message",
        )),
        // A newline inside a value is found once the body is built
        // (`messages_of`): one scan of the whole body, not one per record.
        Some(_) => Ok(()),
    }
}

/// One uncompressed RecordBatch of the whole messages in `messages`
/// (each ending in `\n`), the first at offset `base`, all stamped
/// `timestamp_ms` as log append time; also the number of records.
///
/// # Errors
/// The codec's encoding error (not expected).
pub fn batch_of(
    messages: &Bytes,
    base: i64,
    timestamp_ms: i64,
) -> Result<(Bytes, usize), PartitionError> {
    let mut records = Vec::new();
    let mut start = 0usize;
    for end in memchr::memchr_iter(b'\n', messages) {
        let index = records.len();
        let offset = base + index as i64;
        records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::LogAppend,
            offset,
            // The encoder starts a new batch wherever `offset - sequence`
            // changes; numbering records from 0 keeps them in one batch
            // (consumers ignore sequences of non-idempotent batches).
            sequence: i32::try_from(index).unwrap_or(i32::MAX),
            timestamp: timestamp_ms,
            key: None,
            value: Some(messages.slice(start..end)),
            headers: IndexMap::new(),
        });
        start = end + 1;
    }
    let mut out = BytesMut::new();
    if !records.is_empty() {
        RecordBatchEncoder::encode(
            &mut out,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| {
            PartitionError::new(
                ResponseError::UnknownServerError,
                format!("encoding a record batch failed: {e:#}"),
            )
        })?;
    }
    Ok((out.freeze(), records.len()))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::records::NO_SEQUENCE;

    use super::*;

    const LIMITS: Limits = Limits {
        max_message: 100,
        max_body: 1000,
    };

    fn record(value: Option<&str>) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: NO_SEQUENCE,
            timestamp: 1,
            key: None,
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: IndexMap::new(),
        }
    }

    fn encode(records: &[Record], compression: Compression) -> Bytes {
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        out.freeze()
    }

    #[test]
    fn produced_values_become_messages_and_fetches_give_them_back() {
        let batch = encode(
            &[record(Some("a")), record(Some("")), record(Some("ccc"))],
            Compression::None,
        );
        let produced = messages_of(batch, LIMITS).unwrap();
        assert_eq!(produced.body, "a\n\nccc\n");
        assert_eq!(produced.records, 3);
        assert_eq!(produced.producer, None);
        let (encoded, n) = batch_of(&Bytes::from_static(b"a\n\nccc\n"), 7, 42).unwrap();
        assert_eq!(n, 3);
        let set = RecordBatchDecoder::decode(&mut encoded.clone()).unwrap();
        let got: Vec<_> = set
            .records
            .iter()
            .map(|r| (r.offset, r.value.clone().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (7, Bytes::from("a")),
                (8, Bytes::new()),
                (9, Bytes::from("ccc"))
            ]
        );
        assert!(set.records.iter().all(|r| r.timestamp == 42));
    }

    #[test]
    fn an_idempotent_batch_gives_its_producer_and_numbers() {
        let tagged = |seq: i32| {
            let mut r = record(Some("v"));
            r.producer_id = 7;
            r.producer_epoch = 2;
            r.sequence = seq;
            r
        };
        // Across the wrap: i32::MAX, then 0.
        let batch = encode(&[tagged(i32::MAX), tagged(0)], Compression::None);
        let p = messages_of(batch, LIMITS).unwrap().producer;
        assert_eq!(
            p,
            Some(ProducerBatch {
                id: 7,
                epoch: 2,
                first: i32::MAX,
                count: 2
            })
        );
        let mut two = BytesMut::new();
        two.extend_from_slice(&encode(&[tagged(5)], Compression::None));
        two.extend_from_slice(&encode(&[tagged(7)], Compression::None));
        let e = messages_of(two.freeze(), LIMITS).unwrap_err();
        assert_eq!(e.code, ResponseError::InvalidRecord);
        let mut mixed = BytesMut::new();
        mixed.extend_from_slice(&encode(&[record(Some("v"))], Compression::None));
        mixed.extend_from_slice(&encode(&[tagged(0)], Compression::None));
        assert!(messages_of(mixed.freeze(), LIMITS).is_err());
    }

    /// A batch whose record count claims two billion records (with a
    /// valid CRC) is refused as corrupt, not sized into an allocation
    /// that would abort the process (the `vendor/` patch).
    #[test]
    fn a_huge_record_count_is_a_decode_error() {
        const COUNT_AT: usize = 57; // v2 batch header: count after base sequence
        const CRC_AT: usize = 17; // CRC32C of everything from attributes (21) on
        let mut batch = encode(&[record(Some("v"))], Compression::None).to_vec();
        batch[COUNT_AT..COUNT_AT + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_AT + 4..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let e = messages_of(Bytes::from(batch), LIMITS).unwrap_err();
        assert_eq!(e.code, ResponseError::CorruptMessage);
        assert!(e.message.contains("exceeds"), "{}", e.message);
    }

    #[test]
    fn what_a_message_cannot_hold_is_refused_with_a_reason() {
        let mut keyed = record(Some("v"));
        keyed.key = Some(Bytes::from("k"));
        let mut headed = record(Some("v"));
        headed.headers.insert(
            kafka_protocol::protocol::StrBytes::from_string("h".to_owned()),
            None,
        );
        for (r, why) in [
            (keyed, "keys"),
            (headed, "headers"),
            (record(None), "null"),
            (record(Some("a\nb")), "newline"),
        ] {
            let e = messages_of(encode(&[r], Compression::None), LIMITS).unwrap_err();
            assert_eq!(e.code, ResponseError::InvalidRecord);
            assert!(e.message.contains(why), "{}", e.message);
        }
        // Found by counting the body's messages: anywhere in a batch,
        // including a value that ends in a newline.
        for middle in ["b\nc", "b\n"] {
            let three = [record(Some("a")), record(Some(middle)), record(Some("d"))];
            let e = messages_of(encode(&three, Compression::None), LIMITS).unwrap_err();
            assert_eq!(e.code, ResponseError::InvalidRecord);
            assert!(e.message.contains("newline"), "{}", e.message);
        }
        let big = "x".repeat(100);
        let e = messages_of(encode(&[record(Some(&big))], Compression::None), LIMITS).unwrap_err();
        assert_eq!(e.code, ResponseError::MessageTooLarge);
        let many: Vec<_> = (0..20).map(|_| record(Some(&big[..60]))).collect();
        let e = messages_of(encode(&many, Compression::None), LIMITS).unwrap_err();
        assert_eq!(e.code, ResponseError::RecordListTooLarge);
        let e =
            messages_of(Bytes::from_static(b"garbage that is not a batch"), LIMITS).unwrap_err();
        assert_eq!(e.code, ResponseError::CorruptMessage);
    }
}
