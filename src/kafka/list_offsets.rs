//! `ListOffsets`: earliest (-2) is the first record held, latest (-1) and
//! max-timestamp (-3) the high watermark; a timestamp `t ≥ 0` gives the
//! first record of the first chunk created at or after `t` (chunkbus
//! keeps no per-message time), or -1 when there is none.

use std::time::{Duration, UNIX_EPOCH};

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::error::PartitionError;
use super::offset::KafkaOffset;
use super::partition::{timestamp_ms, Partition};
use super::Broker;
use crate::names::Category;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// Answers a `ListOffsets` request.
pub async fn handle(broker: &Broker, req: &ListOffsetsRequest) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for topic in &req.topics {
        let mut t = ListOffsetsTopicResponse::default();
        t.name = topic.name.clone();
        for part in &topic.partitions {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = part.partition_index;
            p.timestamp = -1;
            p.offset = -1;
            match lookup(
                broker,
                topic.name.0.as_str(),
                part.partition_index,
                part.timestamp,
            )
            .await
            {
                Ok((offset, timestamp)) => {
                    p.offset = offset;
                    p.timestamp = timestamp;
                }
                Err(e) => p.error_code = e.code.code(),
            }
            t.partitions.push(p);
        }
        resp.topics.push(t);
    }
    resp
}

async fn lookup(
    broker: &Broker,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<(i64, i64), PartitionError> {
    let category = Category::parse(topic)
        .map_err(|e| PartitionError::new(ResponseError::InvalidTopicException, e.to_string()))?;
    let owner = broker.check_read(category.as_str(), partition)?;
    let storage = broker.storage()?;
    let part = Partition::of(storage, &category, owner);
    let offset = |o: KafkaOffset| o.to_i64().unwrap_or(-1);
    match timestamp {
        EARLIEST => Ok((offset(part.log_start()), -1)),
        LATEST | MAX_TIMESTAMP => {
            let hw = part
                .high_watermark(&broker.locator(), &category)
                .await
                .map_err(|e| PartitionError::from_domain(&e))?;
            Ok((offset(hw), -1))
        }
        t if t >= 0 => {
            let at = UNIX_EPOCH + Duration::from_millis(t.unsigned_abs());
            Ok(part
                .chunks()
                .iter()
                .find(|c| c.created() >= at)
                .map_or((-1, -1), |c| {
                    (
                        offset(KafkaOffset::start_of(c.name().index())),
                        timestamp_ms(c),
                    )
                }))
        }
        t => Err(PartitionError::new(
            ResponseError::InvalidRequest,
            format!("timestamp {t} is neither a time nor -1/-2/-3"),
        )),
    }
}
