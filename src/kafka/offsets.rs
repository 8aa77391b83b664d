//! `OffsetCommit` / `OffsetFetch`: a Kafka group's committed offsets are
//! its chunkbus consumer-group positions (`groups/`), the ones
//! `POST /ack?consumer=G` moves, `GET /consumers` shows,
//! `retention = acked` honours and peers replicate.
//!
//! Committing offset `O` (the next record to read) of partition `p`
//! stores, durably before the answer, the group's position in `O`'s
//! chunk at the byte where record `O` starts, and in every older chunk of
//! that owner at its end. Positions only move forward: a commit behind
//! the stored position is refused with `POLICY_VIOLATION` before
//! anything is stored (rewinding a group means deleting it,
//! `DELETE /consumers?category=C&consumer=G`). The committed offset read
//! back is the position in the newest chunk of that owner the group has
//! one in, as a Kafka offset (the next chunk's first record when that
//! chunk is finished); -1 when the group has none for the partition.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::error::PartitionError;
use super::offset::KafkaOffset;
use super::partition::Partition;
use super::Broker;
use crate::groups::GroupStore;
use crate::names::{Category, ChunkName, GroupName};

fn group_store(broker: &Broker) -> Result<&GroupStore, PartitionError> {
    broker.storage()?;
    broker
        .state
        .groups
        .get()
        .map(AsRef::as_ref)
        .ok_or_else(|| PartitionError::new(ResponseError::CoordinatorLoadInProgress, "recovering"))
}

fn names(topic: &str, group: &str) -> Result<(Category, GroupName), PartitionError> {
    let category = Category::parse(topic)
        .map_err(|e| PartitionError::new(ResponseError::InvalidTopicException, e.to_string()))?;
    let group = GroupName::parse(group)
        .map_err(|e| PartitionError::new(ResponseError::InvalidGroupId, e.to_string()))?;
    Ok((category, group))
}

/// Answers `OffsetCommit`.
pub async fn commit(broker: &Broker, req: &OffsetCommitRequest) -> OffsetCommitResponse {
    let member_ok = broker
        .check_coordinator(req.group_id.0.as_str())
        .and_then(|()| {
            broker.coordinator.may_commit(
                req.group_id.0.as_str(),
                req.member_id.as_str(),
                req.generation_id_or_member_epoch,
            )
        });
    let mut resp = OffsetCommitResponse::default();
    for topic in &req.topics {
        let mut t = OffsetCommitResponseTopic::default();
        t.name = topic.name.clone();
        for part in &topic.partitions {
            let mut p = OffsetCommitResponsePartition::default();
            p.partition_index = part.partition_index;
            let outcome = match member_ok {
                Err(e) => Err(PartitionError::new(
                    e,
                    "not this group's coordinator or not a member of this generation",
                )),
                Ok(()) => {
                    commit_one(
                        broker,
                        topic.name.0.as_str(),
                        req.group_id.0.as_str(),
                        part.partition_index,
                        part.committed_offset,
                    )
                    .await
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(group = req.group_id.0.as_str(), error = %e.message, "kafka offset commit refused");
                p.error_code = e.code.code();
            }
            t.partitions.push(p);
        }
        resp.topics.push(t);
    }
    resp
}

async fn commit_one(
    broker: &Broker,
    topic: &str,
    group: &str,
    partition: i32,
    offset: i64,
) -> Result<(), PartitionError> {
    let (category, group) = names(topic, group)?;
    // The record's byte position is known only where its chunks are held
    // (a coordinator without a copy, under a replication factor: "Not yet"
    // in docs/kafka.md).
    let owner = broker
        .check_read(category.as_str(), partition)
        .map_err(|e| PartitionError::new(ResponseError::UnknownTopicOrPartition, e.message))?;
    let groups = group_store(broker)?;
    let storage = broker.storage()?;
    let part = Partition::of(storage, &category, owner);
    let loc = broker.locator();
    let at = KafkaOffset::from_i64(offset).ok_or_else(|| {
        PartitionError::new(
            ResponseError::OffsetOutOfRange,
            format!("offset {offset} is negative"),
        )
    })?;
    // The positions to store: older chunks at their end, O's chunk at O.
    let mut acks: Vec<(ChunkName, u64)> = Vec::new();
    for chunk in part.chunks() {
        let index = chunk.name().index();
        if index < at.chunk {
            acks.push((chunk.name().clone(), chunk.state().end));
        } else if index == at.chunk {
            let byte = loc
                .byte_of(&category, chunk, at.ordinal)
                .await
                .map_err(|e| PartitionError::from_domain(&e))?
                .ok_or_else(|| {
                    PartitionError::new(
                        ResponseError::OffsetOutOfRange,
                        format!("offset {offset} is past the end of {}", chunk.name()),
                    )
                })?;
            acks.push((chunk.name().clone(), byte));
        }
    }
    let stored = groups.positions_of(&category, &group).unwrap_or_default();
    if let Some((chunk, off)) = acks
        .iter()
        .find(|(c, off)| stored.get(c).is_some_and(|s| s > off))
    {
        return Err(PartitionError::new(
            ResponseError::PolicyViolation,
            format!("{group} is past offset {off} of {chunk}: commits only move forward"),
        ));
    }
    for (chunk, off) in acks {
        if stored.get(&chunk).is_some_and(|s| *s >= off) {
            continue;
        }
        groups
            .ack(&category, &group, &chunk, off)
            .await
            .map_err(|e| PartitionError::from_domain(&e))?;
    }
    Ok(())
}

/// Answers `OffsetFetch` (one group, v1–v7).
pub async fn fetch(broker: &Broker, req: &OffsetFetchRequest) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    let group = req.group_id.0.as_str();
    if let Err(e) = broker.check_coordinator(group) {
        // v2+ read the top-level code; v0/v1 have none (the encoder leaves
        // it out), so every partition asked about carries it too — an empty
        // answer would read as "nothing committed" there.
        resp.error_code = e.code();
        for t in req.topics.iter().flatten() {
            let mut topic = OffsetFetchResponseTopic::default();
            topic.name = t.name.clone();
            for &p in &t.partition_indexes {
                let mut out = OffsetFetchResponsePartition::default();
                out.partition_index = p;
                out.committed_offset = -1;
                out.committed_leader_epoch = -1;
                out.error_code = e.code();
                topic.partitions.push(out);
            }
            resp.topics.push(topic);
        }
        return resp;
    }
    // Null topics (v2+): every category the group has positions in.
    let topics: Vec<(TopicName, Vec<i32>)> = match &req.topics {
        Some(t) => t
            .iter()
            .map(|t| (t.name.clone(), t.partition_indexes.clone()))
            .collect(),
        None => group_store(broker)
            .map(GroupStore::all)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, g, _)| g.as_str() == group)
            .map(|(c, _, _)| {
                (
                    TopicName(StrBytes::from_string(c.as_str().to_owned())),
                    (0..broker.topology.partitions()).collect(),
                )
            })
            .collect(),
    };
    for (name, partitions) in topics {
        let mut t = OffsetFetchResponseTopic::default();
        for p in partitions {
            let mut out = OffsetFetchResponsePartition::default();
            out.partition_index = p;
            out.committed_offset = -1;
            out.committed_leader_epoch = -1;
            out.metadata = Some(StrBytes::from_static_str(""));
            match committed(broker, name.0.as_str(), group, p).await {
                Ok(Some(o)) => out.committed_offset = o,
                Ok(None) => {}
                Err(e) => out.error_code = e.code.code(),
            }
            t.partitions.push(out);
        }
        t.name = name;
        resp.topics.push(t);
    }
    resp
}

async fn committed(
    broker: &Broker,
    topic: &str,
    group: &str,
    partition: i32,
) -> Result<Option<i64>, PartitionError> {
    let (category, group) = names(topic, group)?;
    let owner = match broker.check_read(category.as_str(), partition) {
        Ok(owner) => owner,
        // No copy here (a replication factor): no position known, the
        // client's `auto.offset.reset` applies ("Not yet", docs/kafka.md).
        Err(e) if e.code == ResponseError::NotLeaderOrFollower => return Ok(None),
        Err(e) => return Err(e),
    };
    let groups = group_store(broker)?;
    let storage = broker.storage()?;
    let positions: BTreeMap<ChunkName, u64> =
        groups.positions_of(&category, &group).unwrap_or_default();
    let part = Partition::of(storage, &category, owner);
    let chunks = part.chunks();
    let Some(i) = chunks
        .iter()
        .rposition(|c| positions.contains_key(c.name()))
    else {
        return Ok(None);
    };
    let chunk = &chunks[i];
    let pos = positions.get(chunk.name()).copied().unwrap_or(0);
    let s = chunk.state();
    let at = match chunks.get(i + 1) {
        Some(next) if pos >= s.end && (s.sealed || s.closed) => {
            KafkaOffset::start_of(next.name().index())
        }
        _ => {
            let n = broker
                .locator()
                .ordinal_at(&category, chunk, pos.min(s.end))
                .await
                .map_err(|e| PartitionError::from_domain(&e))?;
            KafkaOffset::start_of(chunk.name().index()).plus(n)
        }
    };
    Ok(at.to_i64())
}
