//! Who answers for what now: the brokers and partition leaders as this
//! server sees the cluster (peers' Kafka addresses and reachability from
//! `cluster`, rules in [`super::topology`]), and the checks Produce,
//! Fetch, ListOffsets and the group APIs make before serving:
//!
//! * Produce only to this server's own partition (else
//!   `NOT_LEADER_OR_FOLLOWER`: only an owner writes its chunks).
//! * Fetch and ListOffsets only of partitions whose chunks this server
//!   holds (else `NOT_LEADER_OR_FOLLOWER`; Metadata never names a server
//!   that does not hold a partition as its leader).
//! * Group APIs only for groups this server coordinates (else
//!   `NOT_COORDINATOR`, so clients look the coordinator up again); the
//!   offsets of partitions it holds no copy of are resolved through their
//!   holders (`offsets.rs`).

use kafka_protocol::ResponseError;

use super::error::PartitionError;
use super::topology::{Node, View};
use super::Broker;
use crate::names::ServerName;

impl Broker {
    /// The brokers as this server sees them now (a single node: itself).
    #[must_use]
    pub fn view(&self) -> View<'_> {
        let members = self
            .state
            .cluster
            .get()
            .map(|c| c.members())
            .unwrap_or_default();
        self.topology.view(|name| {
            members
                .iter()
                .find(|m| m.name == name)
                .and_then(|m| m.kafka.as_ref().map(|k| (k.host.clone(), k.port, m.up)))
        })
    }

    /// Node ids of the servers holding `category`'s chunks of partition
    /// `p`'s owner, in placement order (the owner first).
    #[must_use]
    pub fn holders(&self, category: &str, p: i32) -> Vec<i32> {
        let Some(owner) = self.topology.owner(p) else {
            return Vec::new();
        };
        match self.state.cluster.get() {
            None => vec![p],
            Some(c) => c
                .assignment
                .holders(category, owner.as_str())
                .iter()
                .filter_map(|h| self.topology.number_of(h))
                .collect(),
        }
    }

    /// The owner of partition `p`.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`: no such partition.
    pub fn owner_of(&self, p: i32) -> Result<&ServerName, PartitionError> {
        self.topology.owner(p).ok_or_else(|| {
            PartitionError::new(
                ResponseError::UnknownTopicOrPartition,
                format!(
                    "partition {p} does not exist (topics have {})",
                    self.topology.partitions()
                ),
            )
        })
    }

    /// Checks that a produce to partition `p` may be stored here: it must
    /// be this server's own partition.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `NOT_LEADER_OR_FOLLOWER`.
    pub fn check_produce(&self, p: i32) -> Result<(), PartitionError> {
        let owner = self.owner_of(p)?;
        if self.topology.is_own(p) {
            Ok(())
        } else {
            Err(PartitionError::new(
                ResponseError::NotLeaderOrFollower,
                format!("partition {p} is written only by its owner {owner}"),
            ))
        }
    }

    /// The owner of partition `p` when this server holds its chunks of
    /// `category` (and so may serve Fetch and ListOffsets for it).
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `NOT_LEADER_OR_FOLLOWER`.
    pub fn check_read(&self, category: &str, p: i32) -> Result<&ServerName, PartitionError> {
        let owner = self.owner_of(p)?;
        if self.holds(category, owner) {
            Ok(owner)
        } else {
            Err(PartitionError::new(
                ResponseError::NotLeaderOrFollower,
                format!("this server holds no copy of {owner}'s chunks of {category}"),
            ))
        }
    }

    /// Whether this server holds `owner`'s chunks of `category` (always
    /// without a replication factor).
    #[must_use]
    pub fn holds(&self, category: &str, owner: &ServerName) -> bool {
        self.state
            .cluster
            .get()
            .is_none_or(|c| c.assignment.holds_here(category, owner.as_str()))
    }

    /// The coordinator of `group` now (this server when alone).
    #[must_use]
    pub fn coordinator_of(&self, group: &str) -> Option<Node> {
        self.view().coordinator(group).cloned()
    }

    /// Checks that this server coordinates `group`.
    ///
    /// # Errors
    /// `NOT_COORDINATOR`: another server does.
    pub fn check_coordinator(&self, group: &str) -> Result<(), ResponseError> {
        match self.coordinator_of(group) {
            Some(n) if n.id != self.topology.node_id() => Err(ResponseError::NotCoordinator),
            _ => Ok(()),
        }
    }
}
