//! Unit tests of the group state machine.

use super::*;

fn req(member: &str) -> JoinRequest {
    JoinRequest {
        member_id: member.to_owned(),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(10),
        client_id: format!("client-{member}"),
        client_host: "127.0.0.1".into(),
    }
}

/// The only member `a` of generation 1 of group `g`, its leader, assigns
/// itself everything (`all`).
fn leader_assigns_all(c: &Coordinator, a: &Joined) {
    let SyncWait::Now(Ok(_)) = c.sync(
        "g",
        &a.member_id,
        1,
        vec![(a.member_id.clone(), Bytes::from_static(b"all"))],
    ) else {
        panic!("leader sync");
    };
}

fn joined(w: JoinWait) -> Joined {
    match w {
        JoinWait::Wait(mut rx) => rx.try_recv().expect("round complete"),
        JoinWait::Refused(e) => panic!("refused: {e:?}"),
    }
}

#[tokio::test]
async fn two_members_rebalance_on_join_and_leave() {
    let c = Coordinator::default();
    let a = joined(c.join("g", req("")));
    assert_eq!((a.generation, a.leader.as_str()), (1, a.member_id.as_str()));
    assert_eq!(a.members.len(), 1);
    leader_assigns_all(&c, &a);
    // A second member: the round waits for the first to rejoin.
    let JoinWait::Wait(mut b_rx) = c.join("g", req("")) else {
        panic!()
    };
    assert!(b_rx.try_recv().is_err());
    assert_eq!(
        c.heartbeat("g", &a.member_id, 1),
        Err(ResponseError::RebalanceInProgress)
    );
    let a2 = joined(c.join("g", req(&a.member_id)));
    let b = b_rx.try_recv().unwrap();
    assert_eq!((a2.generation, b.generation), (2, 2));
    assert_eq!(a2.members.len(), 2, "the leader sees both");
    assert!(b.members.is_empty());
    let SyncWait::Wait(mut b_sync) = c.sync("g", &b.member_id, 2, vec![]) else {
        panic!()
    };
    let assign = vec![
        (a2.member_id.clone(), Bytes::from_static(b"p0")),
        (b.member_id.clone(), Bytes::from_static(b"p1")),
    ];
    let SyncWait::Now(Ok(mine)) = c.sync("g", &a2.member_id, 2, assign) else {
        panic!()
    };
    assert_eq!(&mine[..], b"p0");
    assert_eq!(&b_sync.try_recv().unwrap().unwrap()[..], b"p1");
    assert_eq!(c.heartbeat("g", &b.member_id, 2), Ok(()));
    assert_eq!(
        c.may_commit("g", &b.member_id, 1),
        Err(ResponseError::IllegalGeneration)
    );
    // b leaves: a is told to rejoin and becomes the only member.
    assert_eq!(
        c.leave("g", std::slice::from_ref(&b.member_id)),
        vec![Ok(())]
    );
    assert_eq!(
        c.heartbeat("g", &a.member_id, 2),
        Err(ResponseError::RebalanceInProgress)
    );
    let a3 = joined(c.join("g", req(&a.member_id)));
    assert_eq!((a3.generation, a3.members.len()), (3, 1));
    assert_eq!(
        c.heartbeat("g", &b.member_id, 3),
        Err(ResponseError::UnknownMemberId)
    );
}

#[tokio::test]
async fn groups_are_described_through_their_states() {
    let c = Coordinator::default();
    assert!(c.describe("g").is_none());
    let a = joined(c.join("g", req("")));
    let v = c.describe("g").expect("described");
    assert_eq!(v.state, "CompletingRebalance");
    // Not stable yet: no assignor, subscription or assignment shown.
    assert_eq!(
        (v.protocol_type.as_str(), v.protocol.as_str()),
        ("consumer", "")
    );
    assert_eq!(v.members.len(), 1);
    assert_eq!(v.members[0].id, a.member_id);
    assert_eq!(v.members[0].client_id, "client-");
    assert!(v.members[0].metadata.is_empty());
    assert!(v.members[0].assignment.is_empty());
    leader_assigns_all(&c, &a);
    let v = c.describe("g").expect("described");
    assert_eq!(v.state, "Stable");
    assert_eq!(v.protocol, "range");
    assert_eq!(&v.members[0].metadata[..], b"sub");
    assert_eq!(&v.members[0].assignment[..], b"all");
    let JoinWait::Wait(_b) = c.join("g", req("")) else {
        panic!()
    };
    let v = c.describe("g").expect("described");
    assert_eq!(v.state, "PreparingRebalance");
    assert!(v.members.iter().all(|m| m.assignment.is_empty()));
    assert_eq!(
        c.groups(),
        vec![("g".to_owned(), "PreparingRebalance", "consumer".to_owned())]
    );
}

#[tokio::test]
async fn a_silent_member_is_expired_and_the_rest_rebalance() {
    let c = Coordinator::default();
    let a = joined(c.join("g", req("")));
    let JoinWait::Wait(mut b_rx) = c.join("g", req("")) else {
        panic!()
    };
    // a never rejoins: after the rebalance timeout it is removed.
    c.tick_at(Instant::now() + Duration::from_secs(11));
    let b = b_rx.try_recv().unwrap();
    assert_eq!(b.members.len(), 1);
    assert_eq!(b.leader, b.member_id);
    assert_eq!(
        c.heartbeat("g", &a.member_id, b.generation),
        Err(ResponseError::UnknownMemberId)
    );
}
