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
//! Stored commits reach the peers with the group events of their next
//! poll, as HTTP group acks do.
//!
//! Mapping an offset to a byte needs the chunk's messages. For a
//! partition whose chunks this server holds no copy of (under a
//! replication factor), or whose copy here does not decide it (behind the
//! owner, or lacking the chunk), the coordinator asks a holder
//! (`cluster::kafka_offsets`, `GET /peer/kafka/offsets`) and stores the
//! answer like a local one; no holder answering in time gets the
//! retriable `COORDINATOR_LOAD_IN_PROGRESS`. One request's lookups share
//! one deadline, and a partition listed twice in a request is resolved
//! once. A commit checks the member's generation again just before it
//! stores, since a lookup can take seconds and the group may have moved
//! on meanwhile.

use std::collections::{BTreeMap, HashMap};

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

use super::error::{lookup_code, PartitionError};
use super::offset::KafkaOffset;
use super::resolve::{self, CommitPlan, Copies};
use super::Broker;
use crate::cluster::kafka_offsets::{KafkaQuestion, Lookups};
use crate::cluster::{Cluster, ClusterError};
use crate::groups::{Acked, GroupStore};
use crate::names::{Category, ChunkName, GroupName, ServerName};

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

/// The committing member, checked again right before storing.
struct Member<'a> {
    group: &'a str,
    member: &'a str,
    generation: i32,
}

impl Member<'_> {
    /// Whether this server coordinates the group and the member may commit
    /// in its generation (now).
    fn may_commit(&self, broker: &Broker) -> Result<(), PartitionError> {
        broker
            .check_coordinator(self.group)
            .and_then(|()| {
                broker
                    .coordinator
                    .may_commit(self.group, self.member, self.generation)
            })
            .map_err(|e| {
                PartitionError::new(
                    e,
                    "not this group's coordinator or not a member of this generation",
                )
            })
    }
}

/// Answers `OffsetCommit`.
pub async fn commit(broker: &Broker, req: &OffsetCommitRequest) -> OffsetCommitResponse {
    let member = Member {
        group: req.group_id.0.as_str(),
        member: req.member_id.as_str(),
        generation: req.generation_id_or_member_epoch,
    };
    let member_ok = member.may_commit(broker);
    let mut lookups = Lookups::new();
    // The same partition and offset listed again is answered as the
    // first time, not redone (another offset for it is committed too).
    let mut seen: HashMap<(&str, i32, i64), i16> = HashMap::new();
    let mut resp = OffsetCommitResponse::default();
    for topic in &req.topics {
        let mut t = OffsetCommitResponseTopic::default();
        t.name = topic.name.clone();
        for part in &topic.partitions {
            let mut p = OffsetCommitResponsePartition::default();
            p.partition_index = part.partition_index;
            let key = (
                topic.name.0.as_str(),
                part.partition_index,
                part.committed_offset,
            );
            if let Some(&code) = seen.get(&key) {
                p.error_code = code;
                t.partitions.push(p);
                continue;
            }
            let outcome = match &member_ok {
                Err(e) => Err(e.clone()),
                Ok(()) => {
                    commit_one(
                        broker,
                        &member,
                        topic.name.0.as_str(),
                        part.partition_index,
                        part.committed_offset,
                        &mut lookups,
                    )
                    .await
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(group = member.group, error = %e.message, "kafka offset commit refused");
                p.error_code = e.code.code();
            }
            seen.insert(key, p.error_code);
            t.partitions.push(p);
        }
        resp.topics.push(t);
    }
    resp
}

/// Which copies this server holds of `owner`'s chunks (it holds some).
fn copies_here(broker: &Broker, owner: &ServerName) -> Copies {
    broker
        .state
        .cluster
        .get()
        .map_or(Copies::Owner, |c| Copies::of(c.me(), owner))
}

async fn commit_one(
    broker: &Broker,
    member: &Member<'_>,
    topic: &str,
    partition: i32,
    offset: i64,
    lookups: &mut Lookups,
) -> Result<(), PartitionError> {
    let (category, group) = names(topic, member.group)?;
    let owner = broker.owner_of(partition)?;
    let groups = group_store(broker)?;
    let at = KafkaOffset::from_i64(offset).ok_or_else(|| {
        PartitionError::new(
            ResponseError::OffsetOutOfRange,
            format!("offset {offset} is negative"),
        )
    })?;
    // The positions to store: older chunks at their end, O's chunk at O.
    let local = if broker.holds(category.as_str(), owner) {
        let storage = broker.storage()?;
        let copies = copies_here(broker, owner);
        resolve::commit_plan(storage, &broker.locator(), &category, owner, at, copies)
            .await
            .map_err(|e| PartitionError::from_domain(&e))?
    } else {
        CommitPlan::NotHere
    };
    let acks = match local {
        CommitPlan::Positions(p) => p,
        CommitPlan::PastEnd(chunk) => return Err(past_end(offset, &chunk.to_string())),
        // No copy here, or a copy that does not decide it.
        CommitPlan::NotHere => {
            remote_commit_plan(broker, &category, owner, offset, lookups).await?
        }
    };
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
    // The lookups above can take seconds: a rebalance meanwhile fences
    // this member's commit.
    member.may_commit(broker)?;
    let cluster = broker.state.cluster.get();
    for (chunk, off) in acks {
        if stored.get(&chunk).is_some_and(|s| *s >= off) {
            continue;
        }
        let acked = groups
            .ack(&category, &group, &chunk, off)
            .await
            .map_err(|e| PartitionError::from_domain(&e))?;
        // Peers learn it with their next poll, as an HTTP group ack.
        if let (Some(c), Acked::Moved) = (cluster, acked) {
            c.group_feed.acked(&category, &group, &chunk, off);
        }
    }
    Ok(())
}

fn past_end(offset: i64, chunk: &str) -> PartitionError {
    PartitionError::new(
        ResponseError::OffsetOutOfRange,
        format!("offset {offset} is past the end of {chunk}"),
    )
}

/// A partition's offsets could not be resolved through its holders
/// (`lookup_code`: retriable when no holder answered in time).
fn unresolved(e: &ClusterError) -> PartitionError {
    PartitionError::new(lookup_code(e), crate::error_chain(e))
}

fn cluster_of(broker: &Broker) -> Result<&Cluster, PartitionError> {
    // Only a cluster member can lack a copy of a partition.
    broker
        .state
        .cluster
        .get()
        .map(AsRef::as_ref)
        .ok_or_else(|| {
            PartitionError::new(ResponseError::UnknownServerError, "no cluster configured")
        })
}

/// The positions committing `offset` stores in `owner`'s chunks of
/// `category`, which this server holds no copy of (or none that decides
/// it): asked of their holders.
async fn remote_commit_plan(
    broker: &Broker,
    category: &Category,
    owner: &ServerName,
    offset: i64,
    lookups: &mut Lookups,
) -> Result<Vec<(ChunkName, u64)>, PartitionError> {
    let reply = cluster_of(broker)?
        .ask_kafka_offsets(category, owner, KafkaQuestion::Commit(offset), lookups)
        .await
        .map_err(|e| unresolved(&e))?;
    let Some(positions) = reply.positions else {
        return Err(past_end(offset, "its chunk on every holder asked"));
    };
    positions
        .into_iter()
        .map(|p| match ChunkName::parse(&p.chunk) {
            Ok(c) if c.owner() == owner => Ok((c, p.offset)),
            _ => Err(PartitionError::new(
                ResponseError::UnknownServerError,
                format!(
                    "a holder of {owner}'s chunks answered a position in {:?}",
                    p.chunk
                ),
            )),
        })
        .collect()
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
    let mut lookups = Lookups::new();
    // A partition listed again is answered as the first time, not redone.
    let mut seen: HashMap<(String, i32), Result<Option<i64>, PartitionError>> = HashMap::new();
    for (name, partitions) in topics {
        let mut t = OffsetFetchResponseTopic::default();
        for p in partitions {
            let mut out = OffsetFetchResponsePartition::default();
            out.partition_index = p;
            out.committed_offset = -1;
            out.committed_leader_epoch = -1;
            out.metadata = Some(StrBytes::from_static_str(""));
            let key = (name.0.as_str().to_owned(), p);
            let answer = match seen.get(&key) {
                Some(a) => a.clone(),
                None => {
                    let a = committed(broker, name.0.as_str(), group, p, &mut lookups).await;
                    seen.insert(key, a.clone());
                    a
                }
            };
            match answer {
                Ok(Some(o)) => out.committed_offset = o,
                Ok(None) => {}
                Err(e) => {
                    out.error_code = e.code.code();
                    // Retriable for the whole group (v2+ clients read the
                    // top-level code; a partition-level one is final for
                    // some of them).
                    if e.code == ResponseError::CoordinatorLoadInProgress {
                        resp.error_code = e.code.code();
                    }
                }
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
    lookups: &mut Lookups,
) -> Result<Option<i64>, PartitionError> {
    let (category, group) = names(topic, group)?;
    let owner = broker.owner_of(partition)?;
    let groups = group_store(broker)?;
    let positions: BTreeMap<ChunkName, u64> =
        groups.positions_of(&category, &group).unwrap_or_default();
    if broker.holds(category.as_str(), owner) {
        let storage = broker.storage()?;
        let copies = copies_here(broker, owner);
        let at = resolve::committed(
            storage,
            &broker.locator(),
            &category,
            owner,
            &positions,
            copies,
        )
        .await
        .map_err(|e| PartitionError::from_domain(&e))?;
        // The owner's answer is final; a replica's None may mean its copy
        // is behind: then a holder counts it.
        if at.is_some() || copies == Copies::Owner {
            return Ok(at.and_then(KafkaOffset::to_i64));
        }
    }
    // No copy here (or one that does not decide it): the newest position
    // in the owner's chunks, as an offset counted by a holder.
    let Some((chunk, pos)) = positions
        .iter()
        .filter(|(c, _)| c.owner() == owner)
        .max_by_key(|(c, _)| c.index())
    else {
        return Ok(None);
    };
    let reply = cluster_of(broker)?
        .ask_kafka_offsets(
            &category,
            owner,
            KafkaQuestion::Committed { chunk, pos: *pos },
            lookups,
        )
        .await
        .map_err(|e| unresolved(&e))?;
    Ok(reply.offset.filter(|o| *o >= 0))
}
