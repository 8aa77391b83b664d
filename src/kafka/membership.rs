//! `FindCoordinator`, `JoinGroup`, `SyncGroup`, `Heartbeat`,
//! `LeaveGroup`: the wire side of [`super::coordinator`]. Each group has
//! one coordinator, chosen alike by every server (rendezvous hashing of
//! the group id over the reachable brokers, `topology.rs`);
//! FindCoordinator names it, and the other APIs answer `NOT_COORDINATOR`
//! on any other server. Group ids are validated like HTTP consumer group
//! names.

use std::time::Duration;

use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::conn::Call;
use super::coordinator::{JoinRequest, JoinWait, SyncWait};
use super::Broker;
use crate::names::GroupName;

/// Extra time a waiting join or sync gets beyond the rebalance timeout.
const GRACE: Duration = Duration::from_secs(5);
/// Key type of a consumer group (0) in `FindCoordinator`.
const GROUP_KEY: i8 = 0;

fn ms(v: i32) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

fn valid_group(id: &str) -> Result<(), ResponseError> {
    GroupName::parse(id)
        .map(|_| ())
        .map_err(|_| ResponseError::InvalidGroupId)
}

/// `FindCoordinator`: the group's coordinator, for every valid group id.
#[must_use]
pub fn find_coordinator(
    broker: &Broker,
    req: &FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let view = broker.view();
    let answer = |key: &StrBytes| {
        let chosen = view.coordinator(key.as_str());
        let error = if req.key_type != GROUP_KEY {
            Some(ResponseError::InvalidRequest)
        } else if let Err(e) = valid_group(key.as_str()) {
            Some(e)
        } else if chosen.is_none() {
            Some(ResponseError::CoordinatorNotAvailable)
        } else {
            None
        };
        let mut c = CoordinatorEntry::default();
        c.key = key.clone();
        match error {
            Some(e) => {
                c.error_code = e.code();
                c.node_id = BrokerId(-1);
                c.port = -1;
                c.error_message = Some(StrBytes::from_string(format!("{e}")));
            }
            None => {
                if let Some(n) = chosen {
                    c.node_id = BrokerId(n.id);
                    c.host = StrBytes::from_string(n.host.clone());
                    c.port = i32::from(n.port);
                }
            }
        }
        c
    };
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = req.coordinator_keys.iter().map(answer).collect();
    } else {
        let c = answer(&req.key);
        resp.error_code = c.error_code;
        resp.error_message = c.error_message;
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
    }
    resp
}

/// `JoinGroup`: waits until the rebalance round completes.
pub async fn join(broker: &Broker, req: JoinGroupRequest, call: &Call) -> JoinGroupResponse {
    let mut resp = JoinGroupResponse::default();
    resp.generation_id = -1;
    resp.member_id = req.member_id.clone();
    let group = req.group_id.0.as_str().to_owned();
    if let Err(e) = valid_group(&group).and_then(|()| broker.check_coordinator(&group)) {
        resp.error_code = e.code();
        return resp;
    }
    let rebalance = if req.rebalance_timeout_ms > 0 {
        ms(req.rebalance_timeout_ms)
    } else {
        ms(req.session_timeout_ms)
    };
    let wait = broker.coordinator.join(
        &group,
        JoinRequest {
            member_id: req.member_id.as_str().to_owned(),
            protocol_type: req.protocol_type.as_str().to_owned(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.as_str().to_owned(), p.metadata.clone()))
                .collect(),
            session_timeout: ms(req.session_timeout_ms),
            rebalance_timeout: rebalance,
            client_id: call
                .header
                .client_id
                .as_ref()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            client_host: format!("/{}", call.peer.ip()),
        },
    );
    let rx = match wait {
        JoinWait::Refused(e) => {
            resp.error_code = e.code();
            return resp;
        }
        JoinWait::Wait(rx) => rx,
    };
    let joined = tokio::select! {
        j = tokio::time::timeout(rebalance.min(Duration::from_secs(300)) + GRACE, rx) => j,
        () = broker.state.shutdown.cancelled() => {
            resp.error_code = ResponseError::CoordinatorNotAvailable.code();
            return resp;
        }
    };
    let Ok(Ok(j)) = joined else {
        resp.error_code = ResponseError::UnknownMemberId.code();
        return resp;
    };
    resp.generation_id = j.generation;
    resp.protocol_type = Some(StrBytes::from_string(j.protocol_type));
    resp.protocol_name = Some(StrBytes::from_string(j.protocol));
    resp.leader = StrBytes::from_string(j.leader);
    resp.member_id = StrBytes::from_string(j.member_id);
    resp.members = j
        .members
        .into_iter()
        .map(|(id, meta)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = StrBytes::from_string(id);
            m.metadata = meta;
            m
        })
        .collect();
    resp
}

/// `SyncGroup`: the leader's assignment, handed to every member.
pub async fn sync(broker: &Broker, req: SyncGroupRequest) -> SyncGroupResponse {
    let mut resp = SyncGroupResponse::default();
    resp.protocol_type = req.protocol_type.clone();
    resp.protocol_name = req.protocol_name.clone();
    let group = req.group_id.0.as_str();
    if let Err(e) = valid_group(group).and_then(|()| broker.check_coordinator(group)) {
        resp.error_code = e.code();
        return resp;
    }
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.as_str().to_owned(), a.assignment))
        .collect();
    let got = match broker.coordinator.sync(
        group,
        req.member_id.as_str(),
        req.generation_id,
        assignments,
    ) {
        SyncWait::Now(r) => r,
        SyncWait::Wait(rx) => tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(300) + GRACE, rx) => match r {
                Ok(Ok(r)) => r,
                _ => Err(ResponseError::RebalanceInProgress),
            },
            () = broker.state.shutdown.cancelled() => Err(ResponseError::CoordinatorNotAvailable),
        },
    };
    match got {
        Ok(a) => resp.assignment = a,
        Err(e) => resp.error_code = e.code(),
    }
    resp
}

/// `Heartbeat`.
#[must_use]
pub fn heartbeat(broker: &Broker, req: &HeartbeatRequest) -> HeartbeatResponse {
    let mut resp = HeartbeatResponse::default();
    if let Err(e) = broker.check_coordinator(req.group_id.0.as_str()) {
        resp.error_code = e.code();
        return resp;
    }
    if let Err(e) = broker.coordinator.heartbeat(
        req.group_id.0.as_str(),
        req.member_id.as_str(),
        req.generation_id,
    ) {
        resp.error_code = e.code();
    }
    resp
}

/// `LeaveGroup` (one member up to v2, a list from v3).
#[must_use]
pub fn leave(broker: &Broker, req: &LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let mut resp = LeaveGroupResponse::default();
    if let Err(e) = broker.check_coordinator(req.group_id.0.as_str()) {
        resp.error_code = e.code();
        return resp;
    }
    let ids: Vec<String> = if version >= 3 {
        req.members
            .iter()
            .map(|m| m.member_id.as_str().to_owned())
            .collect()
    } else {
        vec![req.member_id.as_str().to_owned()]
    };
    let results = broker.coordinator.leave(req.group_id.0.as_str(), &ids);
    if version >= 3 {
        resp.members = ids
            .into_iter()
            .zip(&results)
            .map(|(id, r)| {
                let mut m = MemberResponse::default();
                m.member_id = StrBytes::from_string(id);
                m.error_code = r.err().map_or(0, |e| e.code());
                m
            })
            .collect();
    } else if let Some(Err(e)) = results.first() {
        resp.error_code = e.code();
    }
    resp
}
