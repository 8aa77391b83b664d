//! `Produce`: each partition's records become one atomic append of
//! newline-terminated messages to this server's own open chunk of the
//! category. Only an owner writes its chunks, so only this server's own
//! partition takes records here: any other partition is answered
//! `NOT_LEADER_OR_FOLLOWER` and nothing is stored (`leadership.rs`). A
//! batch of an idempotent producer is stored once (`idempotence.rs`).
//! Durability by `acks`:
//!
//! * `0`: no answer (Kafka's rule); appended like `1`.
//! * `1`: answered once the append is published (survives kill -9 of
//!   the process, like an HTTP write without `sync`).
//! * `-1` (`all`): also fdatasync'd first (like `sync=1`), and confirmed
//!   by `--kafka-min-insync-replicas` − 1 replicas (`insync.rs`).

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::error::PartitionError;
use super::idempotence;
use super::offset::KafkaOffset;
use super::partition::timestamp_ms;
use super::records::{messages_of, Limits, Produced};
use super::Broker;
use crate::names::Category;

/// What a successful append answers.
struct Stored {
    base_offset: i64,
    append_time_ms: i64,
}

/// Answers a `Produce` request (`None` for `acks=0`).
pub async fn handle(broker: &Broker, req: ProduceRequest) -> Option<ProduceResponse> {
    let acks = req.acks;
    let mut resp = ProduceResponse::default();
    for topic in req.topic_data {
        let mut t = TopicProduceResponse::default();
        for part in topic.partition_data {
            let mut p = PartitionProduceResponse::default();
            p.index = part.index;
            p.base_offset = -1;
            p.log_append_time_ms = -1;
            p.log_start_offset = -1;
            let outcome = if !matches!(acks, -1..=1) {
                Err(PartitionError::new(
                    ResponseError::InvalidRequiredAcks,
                    format!("acks must be 0, 1 or -1, got {acks}"),
                ))
            } else if req.transactional_id.is_some() {
                Err(PartitionError::new(
                    ResponseError::TransactionalIdAuthorizationFailed,
                    "transactions are not supported by chunkbus",
                ))
            } else {
                store(
                    broker,
                    topic.name.0.as_str(),
                    part.index,
                    part.records,
                    (acks == -1).then_some(req.timeout_ms),
                )
                .await
            };
            match outcome {
                Ok(s) => {
                    p.base_offset = s.base_offset;
                    p.log_append_time_ms = s.append_time_ms;
                }
                Err(e) => {
                    tracing::debug!(topic = topic.name.0.as_str(), partition = part.index, error = %e.message, "kafka produce refused");
                    p.error_code = e.code.code();
                    p.error_message = Some(StrBytes::from_string(e.message));
                }
            }
            t.partition_responses.push(p);
        }
        t.name = topic.name;
        resp.responses.push(t);
    }
    (acks != 0).then_some(resp)
}

async fn store(
    broker: &Broker,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    all: Option<i32>,
) -> Result<Stored, PartitionError> {
    let category = Category::parse(topic)
        .map_err(|e| PartitionError::new(ResponseError::InvalidTopicException, e.to_string()))?;
    broker.check_produce(partition)?;
    let storage = broker.storage()?;
    let limits = &broker.state.config.startup.limits;
    let Produced {
        body,
        checked,
        records: count,
        producer,
    } = messages_of(
        records.unwrap_or_default(),
        Limits {
            max_message: limits.max_message_size,
            max_body: limits.max_batch_size,
        },
    )?;
    storage
        .admits(&category)
        .map_err(|e| PartitionError::from_domain(&e))?;
    let replicas = match all {
        Some(_) => Some(broker.replicas_before_append(&category)?),
        None => None,
    };
    let (appended, duplicate) = match producer {
        None => (
            storage
                .append(&category, vec![body], checked)
                .await
                .map_err(|e| PartitionError::from_domain(&e))?,
            false,
        ),
        // An idempotent producer's batch: stored once (`idempotence.rs`).
        Some(batch) => {
            let once =
                idempotence::append_once(storage, &category, body, checked, batch, partition)
                    .await?;
            let Some(appended) = once.appended else {
                // Stored before, in a chunk deleted since.
                return Ok(Stored {
                    base_offset: -1,
                    append_time_ms: -1,
                });
            };
            (appended, once.duplicate)
        }
    };
    if all.is_some() || storage.fsync_every_write() {
        storage
            .wait_durable(&appended)
            .await
            .map_err(|e| PartitionError::from_domain(&e))?;
    }
    if let (Some(timeout_ms), Some(replicas)) = (all, replicas) {
        broker
            .wait_for_replicas(&category, &appended, replicas, timeout_ms)
            .await?;
    }
    if !duplicate {
        broker.state.metrics.writes.inc();
        broker.state.metrics.write_bytes.inc_by(appended.size);
    }
    let chunk = &appended.chunk;
    let loc = broker.locator();
    let first = loc
        .ordinal_at(&category, chunk, appended.offset)
        .await
        .map_err(|e| PartitionError::from_domain(&e))?;
    broker.positions().note(
        &category,
        chunk.name(),
        appended.offset + appended.size,
        first + count,
    );
    let base = KafkaOffset::start_of(chunk.name().index()).plus(first);
    Ok(Stored {
        base_offset: base.to_i64().unwrap_or(-1),
        append_time_ms: timestamp_ms(chunk),
    })
}
