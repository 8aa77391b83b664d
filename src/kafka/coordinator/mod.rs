//! The classic Kafka group protocol's coordinator, in memory: members,
//! generations and rebalances (JoinGroup → SyncGroup → Heartbeat,
//! LeaveGroup, session timeouts). Assignment is client-side, as in Kafka:
//! the leader's SyncGroup carries every member's assignment. Membership is
//! not durable (after a restart members rejoin, as after a Kafka
//! coordinator failover); committed offsets are, in `groups/`
//! (`offsets.rs`). Never does I/O.
//!
//! States: `Empty` → (a join) → `Preparing` (waiting until every member
//! has rejoined, or the rebalance timeout removes those that did not) →
//! `AwaitingSync` (joins answered with the new generation; the leader
//! assigns) → `Stable` (the leader's SyncGroup answered everyone). A join,
//! a leave or an expired session starts a new round; members learn of it
//! from Heartbeat (`REBALANCE_IN_PROGRESS`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Most groups coordinated at once (one with members).
const MAX_GROUPS: usize = 10_000;
/// Most members per group.
const MAX_MEMBERS: usize = 1_000;
/// Bounds on the timeouts clients ask for.
const MIN_SESSION: Duration = Duration::from_millis(1_000);
const MAX_SESSION: Duration = Duration::from_secs(300);

/// What a join asks for.
pub struct JoinRequest {
    /// Member id; empty for a new member.
    pub member_id: String,
    /// `consumer` for consumers.
    pub protocol_type: String,
    /// Assignors the member supports with its subscription, preferred first.
    pub protocols: Vec<(String, Bytes)>,
    /// Session timeout.
    pub session_timeout: Duration,
    /// How long a rebalance waits for this member to rejoin.
    pub rebalance_timeout: Duration,
    /// The client's `client.id` (request header), for DescribeGroups.
    pub client_id: String,
    /// The client's address as this server sees it, for DescribeGroups.
    pub client_host: String,
}

/// The answer to a join.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The new generation.
    pub generation: i32,
    /// Chosen assignor.
    pub protocol: String,
    /// Protocol type.
    pub protocol_type: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader: every member with its subscription.
    pub members: Vec<(String, Bytes)>,
}

struct Member {
    protocols: Vec<(String, Bytes)>,
    client_id: String,
    client_host: String,
    session: Duration,
    rebalance: Duration,
    last_seen: Instant,
    /// Rejoined in the current round; the reply waits here.
    join: Option<oneshot::Sender<Joined>>,
    rejoined: bool,
    sync: Option<oneshot::Sender<Result<Bytes, ResponseError>>>,
    assignment: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    Preparing { deadline: Instant },
    AwaitingSync,
    Stable,
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: String,
    members: BTreeMap<String, Member>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: State::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
        }
    }

    /// Starts (or keeps) a rebalance round; pending syncs learn of it.
    fn prepare(&mut self, now: Instant) {
        if matches!(self.state, State::Preparing { .. }) {
            return;
        }
        let wait = self
            .members
            .values()
            .map(|m| m.rebalance)
            .max()
            .unwrap_or_default();
        self.state = State::Preparing {
            deadline: now + wait,
        };
        for m in self.members.values_mut() {
            m.rejoined = m.join.is_some();
            if let Some(tx) = m.sync.take() {
                let _ = tx.send(Err(ResponseError::RebalanceInProgress));
            }
        }
    }

    /// Ends the round if every member has rejoined.
    fn try_complete(&mut self) {
        if !matches!(self.state, State::Preparing { .. })
            || self.members.values().any(|m| !m.rejoined)
        {
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        if self.members.is_empty() {
            self.state = State::Empty;
            return;
        }
        if !self.members.contains_key(&self.leader) {
            self.leader = self.members.keys().next().cloned().unwrap_or_default();
        }
        // The leader's most preferred assignor every member supports.
        let leader = &self.members[&self.leader];
        self.protocol = leader
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .cloned()
            .unwrap_or_default();
        let members: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == self.protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (id.clone(), meta)
            })
            .collect();
        self.state = State::AwaitingSync;
        let now = Instant::now();
        for (id, m) in &mut self.members {
            m.rejoined = false;
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(tx) = m.join.take() {
                let _ = tx.send(Joined {
                    generation: self.generation,
                    protocol: self.protocol.clone(),
                    protocol_type: self.protocol_type.clone(),
                    leader: self.leader.clone(),
                    member_id: id.clone(),
                    members: if *id == self.leader {
                        members.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    fn remove(&mut self, id: &str, now: Instant) -> bool {
        if self.members.remove(id).is_none() {
            return false;
        }
        self.prepare(now);
        self.try_complete();
        true
    }

    /// Checks that `member` of `generation` may act (heartbeat, commit,
    /// sync).
    fn check(&self, member: &str, generation: i32) -> Result<(), ResponseError> {
        if !self.members.contains_key(member) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        if matches!(self.state, State::Preparing { .. }) {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }
}

/// A group as ListGroups and DescribeGroups show it.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// Kafka's name of the group's state: `Empty`, `PreparingRebalance`,
    /// `CompletingRebalance` or `Stable`.
    pub state: &'static str,
    /// `consumer` for consumer groups.
    pub protocol_type: String,
    /// The chosen assignor (empty until a generation formed).
    pub protocol: String,
    /// The members, by member id.
    pub members: Vec<MemberView>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// Member id.
    pub id: String,
    /// The client's `client.id`.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Its subscription for the chosen assignor.
    pub metadata: Bytes,
    /// Its assignment in the current generation (empty before one).
    pub assignment: Bytes,
}

impl Group {
    fn state_name(&self) -> &'static str {
        match self.state {
            State::Empty => "Empty",
            State::Preparing { .. } => "PreparingRebalance",
            State::AwaitingSync => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }

    /// The whole view. As Kafka, the assignor, subscriptions and
    /// assignments only of a `Stable` group (else they are a previous
    /// generation's).
    fn view(&self) -> GroupView {
        let stable = self.state == State::Stable;
        GroupView {
            state: self.state_name(),
            protocol_type: self.protocol_type.clone(),
            protocol: if stable {
                self.protocol.clone()
            } else {
                String::new()
            },
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    id: id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(name, _)| stable && *name == self.protocol)
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default(),
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }
}

/// Every group coordinated by this server.
#[derive(Default)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    next_member: AtomicU64,
}

/// A join's outcome: an answer now, or one when the round completes.
pub enum JoinWait {
    /// Refused at once.
    Refused(ResponseError),
    /// Wait for the round to complete (a dropped sender: the member was
    /// removed meanwhile).
    Wait(oneshot::Receiver<Joined>),
}

/// A sync's outcome.
pub enum SyncWait {
    /// The assignment or an error, now.
    Now(Result<Bytes, ResponseError>),
    /// Wait for the leader's assignment.
    Wait(oneshot::Receiver<Result<Bytes, ResponseError>>),
}

impl Coordinator {
    /// The groups with members here: id, state name and protocol type
    /// (ListGroups; no member is copied under the lock).
    #[must_use]
    pub fn groups(&self) -> Vec<(String, &'static str, String)> {
        self.groups
            .lock()
            .iter()
            .map(|(id, g)| (id.clone(), g.state_name(), g.protocol_type.clone()))
            .collect()
    }

    /// `group` as DescribeGroups shows it; `None` when it has no members
    /// here.
    #[must_use]
    pub fn describe(&self, group: &str) -> Option<GroupView> {
        self.groups.lock().get(group).map(Group::view)
    }

    /// A member joins (or rejoins) `group`.
    pub fn join(&self, group: &str, req: JoinRequest) -> JoinWait {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        if !groups.contains_key(group) && groups.len() >= MAX_GROUPS {
            return JoinWait::Refused(ResponseError::CoordinatorNotAvailable);
        }
        let g = groups.entry(group.to_owned()).or_insert_with(Group::new);
        if g.members.is_empty() {
            g.protocol_type.clone_from(&req.protocol_type);
        } else if g.protocol_type != req.protocol_type
            || !req.protocols.iter().any(|(n, _)| {
                g.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == n))
            })
        {
            return JoinWait::Refused(ResponseError::InconsistentGroupProtocol);
        }
        let id = if req.member_id.is_empty() {
            if g.members.len() >= MAX_MEMBERS {
                return JoinWait::Refused(ResponseError::GroupMaxSizeReached);
            }
            format!(
                "chunkbus-{}",
                self.next_member.fetch_add(1, Ordering::Relaxed)
            )
        } else if g.members.contains_key(&req.member_id) {
            req.member_id
        } else {
            return JoinWait::Refused(ResponseError::UnknownMemberId);
        };
        let (tx, rx) = oneshot::channel();
        let clamp = |d: Duration| d.clamp(MIN_SESSION, MAX_SESSION);
        let m = g.members.entry(id).or_insert_with(|| Member {
            protocols: Vec::new(),
            client_id: String::new(),
            client_host: String::new(),
            session: MIN_SESSION,
            rebalance: MIN_SESSION,
            last_seen: now,
            join: None,
            rejoined: false,
            sync: None,
            assignment: Bytes::new(),
        });
        m.protocols = req.protocols;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.session = clamp(req.session_timeout);
        m.rebalance = clamp(req.rebalance_timeout);
        m.last_seen = now;
        m.join = Some(tx);
        m.rejoined = true;
        g.prepare(now);
        g.try_complete();
        JoinWait::Wait(rx)
    }

    /// A member's SyncGroup; the leader's carries every assignment.
    pub fn sync(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncWait {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return SyncWait::Now(Err(ResponseError::UnknownMemberId));
        };
        if let Err(e) = g.check(member, generation) {
            return SyncWait::Now(Err(e));
        }
        let now = Instant::now();
        if g.state == State::AwaitingSync && member == g.leader {
            for (id, a) in assignments {
                if let Some(m) = g.members.get_mut(&id) {
                    m.assignment = a;
                }
            }
            g.state = State::Stable;
            for m in g.members.values_mut() {
                if let Some(tx) = m.sync.take() {
                    let _ = tx.send(Ok(m.assignment.clone()));
                }
            }
        }
        let Some(m) = g.members.get_mut(member) else {
            return SyncWait::Now(Err(ResponseError::UnknownMemberId));
        };
        m.last_seen = now;
        if g.state == State::Stable {
            return SyncWait::Now(Ok(m.assignment.clone()));
        }
        let (tx, rx) = oneshot::channel();
        m.sync = Some(tx);
        SyncWait::Wait(rx)
    }

    /// A heartbeat: keeps the session alive, says whether to rejoin.
    pub fn heartbeat(
        &self,
        group: &str,
        member: &str,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let mut groups = self.groups.lock();
        let g = groups
            .get_mut(group)
            .ok_or(ResponseError::UnknownMemberId)?;
        if let Some(m) = g.members.get_mut(member) {
            m.last_seen = Instant::now();
        }
        g.check(member, generation)
    }

    /// Members leave; the rest rebalance.
    pub fn leave(&self, group: &str, members: &[String]) -> Vec<Result<(), ResponseError>> {
        let mut groups = self.groups.lock();
        let now = Instant::now();
        let out = members
            .iter()
            .map(|id| {
                let removed = groups.get_mut(group).is_some_and(|g| g.remove(id, now));
                if removed {
                    Ok(())
                } else {
                    Err(ResponseError::UnknownMemberId)
                }
            })
            .collect();
        drop_empty(&mut groups, group);
        out
    }

    /// Whether `member` of `generation` may commit offsets for `group`:
    /// a generation of -1 is a consumer outside the group protocol.
    ///
    /// # Errors
    /// `UNKNOWN_MEMBER_ID`, `ILLEGAL_GENERATION`, `REBALANCE_IN_PROGRESS`.
    pub fn may_commit(
        &self,
        group: &str,
        member: &str,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if generation < 0 {
            return Ok(());
        }
        let groups = self.groups.lock();
        let g = groups.get(group).ok_or(ResponseError::UnknownMemberId)?;
        // As Kafka: members of the current generation may commit while the
        // group prepares a rebalance (before they rejoin), not while it
        // waits for the leader's assignment.
        match g.check(member, generation) {
            Err(ResponseError::RebalanceInProgress) => Ok(()),
            Ok(()) if g.state == State::AwaitingSync => Err(ResponseError::RebalanceInProgress),
            other => other,
        }
    }

    /// Expires silent members and ends rebalance rounds past their
    /// deadline (removing members that did not rejoin). Called
    /// periodically.
    pub fn tick(&self) {
        self.tick_at(Instant::now());
    }

    /// [`Coordinator::tick`] as if it were `now`.
    pub fn tick_at(&self, now: Instant) {
        let mut groups = self.groups.lock();
        for g in groups.values_mut() {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| m.join.is_none() && now.duration_since(m.last_seen) > m.session)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(member = %id, "kafka group member's session expired");
                g.remove(&id, now);
            }
            if let State::Preparing { deadline } = g.state {
                if now >= deadline {
                    let late: Vec<String> = g
                        .members
                        .iter()
                        .filter(|(_, m)| !m.rejoined)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in late {
                        g.members.remove(&id);
                    }
                    g.try_complete();
                }
            }
        }
        groups.retain(|_, g| !(g.members.is_empty() && g.state == State::Empty));
    }
}

fn drop_empty(groups: &mut HashMap<String, Group>, group: &str) {
    if groups
        .get(group)
        .is_some_and(|g| g.members.is_empty() && g.state == State::Empty)
    {
        groups.remove(group);
    }
}

#[cfg(test)]
mod tests;
