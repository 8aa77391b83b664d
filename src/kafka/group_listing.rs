//! `ListGroups` and `DescribeGroups`: the consumer groups this server
//! coordinates, for `kafka-consumer-groups`-style tools and AdminClient's
//! `list_consumer_groups` / `describe_consumer_groups`.
//!
//! A group is listed by its coordinator only (Kafka's rule: tools ask
//! every broker and merge): the groups with members here
//! ([`super::coordinator`]) and every chunkbus consumer group with stored
//! positions — also ones only HTTP consumers use — that hashes to this
//! server. A group without members is `Empty`; one known only from its
//! positions has an empty protocol type (Kafka's "simple" consumer group:
//! offsets without membership). DescribeGroups answers `NOT_COORDINATOR`
//! for a group another server coordinates, and `Dead` for one nobody
//! uses; as Kafka, the assignor and the members' subscriptions and
//! assignments only for a `Stable` group, and `authorized_operations`
//! is never provided.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Broker;
use crate::names::GroupName;

/// `authorized_operations` when the client did not ask for them (Kafka's
/// "not provided").
const NOT_PROVIDED: i32 = i32::MIN;

/// Every group this server coordinates: id → (state, protocol type).
/// Groups with members here come from the coordinator; the others have
/// stored positions only (`Empty`, no protocol type).
fn coordinated(broker: &Broker) -> Result<BTreeMap<String, (&'static str, String)>, ResponseError> {
    let store = broker
        .state
        .groups
        .get()
        .ok_or(ResponseError::CoordinatorLoadInProgress)?;
    let mut all: BTreeMap<String, (&'static str, String)> = store
        .names()
        .into_iter()
        .map(|g| (g.as_str().to_owned(), ("Empty", String::new())))
        .collect();
    all.extend(
        broker
            .coordinator
            .groups()
            .into_iter()
            .map(|(id, state, protocol_type)| (id, (state, protocol_type))),
    );
    all.retain(|id, _| broker.check_coordinator(id).is_ok());
    Ok(all)
}

/// Answers `ListGroups` (v4+: only groups in the requested states,
/// compared without case as Kafka does).
#[must_use]
pub fn list(broker: &Broker, req: &ListGroupsRequest) -> ListGroupsResponse {
    let mut resp = ListGroupsResponse::default();
    let groups = match coordinated(broker) {
        Ok(g) => g,
        Err(e) => {
            resp.error_code = e.code();
            return resp;
        }
    };
    for (id, (state, protocol_type)) in groups {
        let wanted = req.states_filter.is_empty()
            || req
                .states_filter
                .iter()
                .any(|s| s.as_str().eq_ignore_ascii_case(state));
        if !wanted {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(StrBytes::from_string(id));
        g.protocol_type = StrBytes::from_string(protocol_type);
        g.group_state = StrBytes::from_static_str(state);
        g.group_type = StrBytes::from_static_str("classic");
        resp.groups.push(g);
    }
    resp
}

/// Answers `DescribeGroups` (v0–5: a group's error is its code, with
/// state `""` as Kafka answers; the message field exists from v6 only).
#[must_use]
pub fn describe(broker: &Broker, req: &DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    // Groups with stored positions, read once for the whole request.
    let stored = broker.state.groups.get().map(|g| g.names());
    for id in &req.groups {
        resp.groups.push(describe_one(broker, stored.as_ref(), id));
    }
    resp
}

fn describe_one(
    broker: &Broker,
    stored: Option<&BTreeSet<GroupName>>,
    id: &GroupId,
) -> DescribedGroup {
    let mut out = DescribedGroup::default();
    out.group_id = id.clone();
    out.authorized_operations = NOT_PROVIDED;
    let name = id.0.as_str();
    let checked = GroupName::parse(name)
        .map_err(|_| ResponseError::InvalidGroupId)
        .and_then(|g| broker.check_coordinator(name).map(|()| g))
        .and_then(|g| {
            stored
                .map(|s| (g, s))
                .ok_or(ResponseError::CoordinatorLoadInProgress)
        });
    let (group, stored) = match checked {
        Ok(v) => v,
        Err(e) => {
            out.error_code = e.code();
            return out;
        }
    };
    let view = match broker.coordinator.describe(name) {
        Some(v) => v,
        None if stored.contains(&group) => {
            out.group_state = StrBytes::from_static_str("Empty");
            return out;
        }
        None => {
            out.group_state = StrBytes::from_static_str("Dead");
            return out;
        }
    };
    out.group_state = StrBytes::from_static_str(view.state);
    out.protocol_type = StrBytes::from_string(view.protocol_type);
    out.protocol_data = StrBytes::from_string(view.protocol);
    for m in view.members {
        let mut member = DescribedGroupMember::default();
        member.member_id = StrBytes::from_string(m.id);
        member.client_id = StrBytes::from_string(m.client_id);
        member.client_host = StrBytes::from_string(m.client_host);
        member.member_metadata = m.metadata;
        member.member_assignment = m.assignment;
        out.members.push(member);
    }
    out
}
