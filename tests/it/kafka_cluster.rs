//! Issue #19 points 3 and 5: Kafka clients against real 3-server
//! clusters. Every server is a broker leading its own partition (the
//! chunks it owns); produce to another server's partition is refused;
//! `acks=all` waits for `--kafka-min-insync-replicas`; a consumer group
//! has one coordinator whichever server its members bootstrap from; under
//! a replication factor Metadata names the holders, and a group's
//! coordinator commits and reads back offsets of partitions it holds no
//! copy of through their holders. Real kcat and
//! confluent-kafka, plus raw requests (`kafka_wire.rs`) where a test must
//! address one broker directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kafka_protocol::messages::MetadataResponse;

use crate::harness::{TestBroker, TestCluster};
use crate::kafka::{kafka, kcat, lines, py, values, KAFKA};
use crate::kafka_wire::{
    commit_error, describe_groups, find_coordinator, join_error, list_offsets_error, metadata,
    offset_fetch, produce,
};

const OFFSET_OUT_OF_RANGE: i16 = 1;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const POLICY_VIOLATION: i16 = 44;
const NOT_COORDINATOR: i16 = 16;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;

fn addr(n: &TestBroker) -> SocketAddr {
    n.kafka_addr.expect("kafka listener")
}

/// Waits (at most 20 s) until `at`'s Metadata of `topic` satisfies `done`.
fn wait_metadata(
    at: SocketAddr,
    topic: &str,
    done: impl Fn(&MetadataResponse) -> bool,
) -> MetadataResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metadata(at, topic);
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "metadata never settled: {m:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (leader, replicas, isr) of each partition.
fn partitions(m: &MetadataResponse) -> Vec<(i32, Vec<i32>, Vec<i32>)> {
    m.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.leader_id.0,
                p.replica_nodes.iter().map(|r| r.0).collect(),
                p.isr_nodes.iter().map(|r| r.0).collect(),
            )
        })
        .collect()
}

fn all_brokers(m: &MetadataResponse, n: usize) -> bool {
    m.brokers.len() == n && partitions(m).iter().all(|(_, _, isr)| isr.len() == n)
}

/// Bytes per owner in `n`'s listing of `category`.
fn sizes(n: &TestBroker, category: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in n.chunks(category) {
        let owner = c.name.split("-chunk").next().unwrap_or_default().to_owned();
        *out.entry(owner).or_default() += c.size;
    }
    out
}

fn expect_sizes(n: &TestBroker, category: &str, want: &[(&str, u64)]) {
    let want: BTreeMap<String, u64> = want.iter().map(|(o, s)| ((*o).to_owned(), *s)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = sizes(n, category);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{got:?} != {want:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_server_leads_its_own_partition_and_produce_elsewhere_is_refused() {
    let mut c = TestCluster::start(3, KAFKA);
    let a: Vec<SocketAddr> = c.nodes.iter().map(addr).collect();
    for at in &a {
        wait_metadata(*at, "owned", |m| all_brokers(m, 3));
    }
    let meta = kcat(&["-b", &kafka(&c.nodes[1]), "-L", "-t", "owned"], "");
    assert!(meta.stdout.contains(" 3 brokers:"), "{}", meta.stdout);
    for (p, at) in a.iter().enumerate() {
        assert!(
            meta.stdout.contains(&format!("broker {p} at {at}")),
            "{}",
            meta.stdout
        );
        assert!(
            meta.stdout
                .contains(&format!("partition {p}, leader {p}, replicas: ")),
            "{}",
            meta.stdout
        );
    }
    // kcat bootstrapping from n1 sends each partition to its owner.
    for p in 0..3 {
        let r = kcat(
            &[
                "-b",
                &kafka(&c.nodes[0]),
                "-P",
                "-t",
                "owned",
                "-p",
                &p.to_string(),
            ],
            &format!("to-p{p}\n"),
        );
        assert!(r.ok, "{}", r.stderr);
    }
    let each = "to-p0\n".len() as u64;
    expect_sizes(
        &c.nodes[0],
        "owned",
        &[("n1", each), ("n2", each), ("n3", each)],
    );
    // n1 is not partition 1's owner: refused, nothing stored anywhere.
    assert_eq!(
        produce(a[0], "owned", 1, &["stray"], 1, 5000),
        (NOT_LEADER_OR_FOLLOWER, -1)
    );
    assert_eq!(
        produce(a[0], "owned", 2, &["stray"], -1, 5000).0,
        NOT_LEADER_OR_FOLLOWER
    );
    let (err, base) = produce(a[0], "owned", 0, &["raw"], 1, 5000);
    assert_eq!(err, 0);
    assert!(base >= 0);
    std::thread::sleep(Duration::from_millis(300));
    for n in &c.nodes {
        expect_sizes(n, "owned", &[("n1", each + 4), ("n2", each), ("n3", each)]);
    }

    // One coordinator per group, named alike by every server; the others
    // answer the group APIs NOT_COORDINATOR.
    let mut coordinators = std::collections::BTreeSet::new();
    let mut of_n3 = None;
    for g in 0..12 {
        let group = format!("g{g}");
        let (err, node) = find_coordinator(a[0], &group);
        assert_eq!(err, 0);
        for at in &a[1..] {
            assert_eq!(find_coordinator(*at, &group), (0, node), "{group}");
        }
        for (i, at) in a.iter().enumerate() {
            if i32::try_from(i).unwrap() != node {
                assert_eq!(
                    join_error(*at, &group),
                    NOT_COORDINATOR,
                    "{group} on n{}",
                    i + 1
                );
                // DescribeGroups too, as an error code on a connection
                // that stays open.
                let (described, _) = describe_groups(*at, &[&group]);
                assert_eq!(described, vec![(NOT_COORDINATOR, String::new())]);
            }
        }
        coordinators.insert(node);
        if node == 2 {
            of_n3 = Some(group);
        }
    }
    assert_eq!(coordinators.len(), 3, "groups spread: {coordinators:?}");

    // n3 down: its partition is led by a live holder, which serves its
    // records and refuses produce; its groups move to a live server.
    c.nodes[2].kill9();
    let m = wait_metadata(a[0], "owned", |m| m.brokers.len() == 2);
    let (leader, replicas, isr) = partitions(&m)[2].clone();
    assert!(leader == 0 || leader == 1, "{m:#?}");
    assert_eq!((replicas.len(), isr.len()), (3, 2), "{m:#?}");
    let r = kcat(
        &[
            "-b",
            &kafka(&c.nodes[0]),
            "-C",
            "-t",
            "owned",
            "-p",
            "2",
            "-e",
            "-f",
            "%s\\n",
        ],
        "",
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(lines(&r.stdout), vec!["to-p2"]);
    let live = a[usize::try_from(leader).unwrap()];
    assert_eq!(
        produce(live, "owned", 2, &["x"], 1, 5000).0,
        NOT_LEADER_OR_FOLLOWER
    );
    let group = of_n3.expect("a group of n3");
    let moved = find_coordinator(a[0], &group);
    assert_eq!(moved.0, 0);
    assert!(moved.1 == 0 || moved.1 == 1);
    assert_eq!(find_coordinator(a[1], &group), moved);
    // Back (on a new Kafka port): it leads its partition again.
    c.nodes[2].start_again();
    let back = addr(&c.nodes[2]);
    let m = wait_metadata(a[0], "owned", |m| all_brokers(m, 3));
    assert_eq!(partitions(&m)[2].0, 2);
    assert!(m.brokers.iter().any(|b| b.port == i32::from(back.port())));
    let r = kcat(
        &["-b", &kafka(&c.nodes[0]), "-P", "-t", "owned", "-p", "2"],
        "again\n",
    );
    assert!(r.ok, "{}", r.stderr);
    expect_sizes(
        &c.nodes[2],
        "owned",
        &[("n1", each + 4), ("n2", each), ("n3", each + 6)],
    );
}

#[test]
fn acks_all_needs_min_insync_replicas() {
    let c = TestCluster::start(
        3,
        &[
            "--kafka-listen",
            "127.0.0.1:0",
            "--kafka-min-insync-replicas",
            "2",
            "--replication-timeout",
            "3s",
        ],
    );
    let at = addr(&c.nodes[0]);
    wait_metadata(at, "safe", |m| all_brokers(m, 3));
    assert_eq!(produce(at, "safe", 0, &["one"], -1, 5000).0, 0);
    expect_sizes(&c.nodes[0], "safe", &[("n1", 4)]);
    // Replicas reachable but frozen: stored, not confirmed in time.
    for n in &c.nodes[1..] {
        n.signal(libc::SIGSTOP);
    }
    let (err, _) = produce(at, "safe", 0, &["two"], -1, 1500);
    for n in &c.nodes[1..] {
        n.signal(libc::SIGCONT);
    }
    assert_eq!(err, NOT_ENOUGH_REPLICAS_AFTER_APPEND);
    expect_sizes(&c.nodes[0], "safe", &[("n1", 8)]);
    // Confirmed again once they run.
    assert_eq!(produce(at, "safe", 0, &["three"], -1, 5000).0, 0);
    // Replicas gone: refused before anything is stored; acks=1 still
    // takes records.
    let mut c = c;
    c.nodes[1].kill9();
    c.nodes[2].kill9();
    wait_metadata(at, "safe", |m| partitions(m)[0].2 == vec![0]);
    assert_eq!(
        produce(at, "safe", 0, &["four"], -1, 5000).0,
        NOT_ENOUGH_REPLICAS
    );
    std::thread::sleep(Duration::from_millis(300));
    expect_sizes(&c.nodes[0], "safe", &[("n1", 14)]);
    assert_eq!(produce(at, "safe", 0, &["five"], 1, 5000).0, 0);
    expect_sizes(&c.nodes[0], "safe", &[("n1", 19)]);
}

#[test]
fn a_group_bootstrapping_from_two_servers_has_one_coordinator() {
    let c = TestCluster::start(3, KAFKA);
    let mut all = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        let body: Vec<String> = (0..8).map(|j| format!("n{}-{j}", i + 1)).collect();
        assert_eq!(n.write("work", body.join("\n") + "\n").0, 200);
        all.extend(body);
    }
    for n in &c.nodes {
        wait_metadata(addr(n), "work", |m| all_brokers(m, 3));
    }
    // Member a bootstraps from n1, member b from n3: they only share
    // partitions (disjoint, non-empty) if one coordinator has both.
    let r = py(
        &[
            "group2",
            &kafka(&c.nodes[0]),
            "work",
            "--group",
            "shared",
            "--count",
            "24",
            "--bootstrap2",
            &kafka(&c.nodes[2]),
        ],
        "",
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let out: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let mut read: Vec<String> = ["first", "second"]
        .iter()
        .flat_map(|k| out[*k].as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    read.sort();
    all.sort();
    assert_eq!(read, all, "every record once: {out}");
}

#[test]
fn under_a_replication_factor_metadata_names_the_holders() {
    let c = TestCluster::start(
        3,
        &["--kafka-listen", "127.0.0.1:0", "--replication-factor", "2"],
    );
    let mut want = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        let body: String = (0..5).map(|j| format!("n{}-{j}\n", i + 1)).collect();
        assert_eq!(n.write("placed", body).0, 200);
        want.extend((0..5).map(|j| format!("n{}-{j}", i + 1)));
    }
    want.sort();
    c.converge("placed", Duration::from_secs(30), |l| l.len() == 3);
    let (s, listing) = c.nodes[0].get_text("/listChunks?category=placed");
    assert_eq!(s, 200);
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let holders = holders_of(&c.nodes[0], "placed");
    assert_eq!(holders.len(), 3, "{listing}");
    // Kafka offset of record `j` of partition `p` (each owner wrote one
    // chunk).
    let chunk_index: BTreeMap<i32, i64> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap();
            let owner = name[1..name.find('-').unwrap()].parse::<i32>().unwrap() - 1;
            (owner, name.rsplit("chunk").next().unwrap().parse().unwrap())
        })
        .collect();
    let offset_of = |p: i32, j: i64| (chunk_index[&p] << 32) | j;
    for n in &c.nodes {
        let m = wait_metadata(addr(n), "placed", |m| {
            m.brokers.len() == 3 && partitions(m).iter().all(|(_, r, i)| r == i)
        });
        for (p, (leader, replicas, _)) in partitions(&m).into_iter().enumerate() {
            let p = i32::try_from(p).unwrap();
            assert_eq!(leader, p);
            assert_eq!(replicas, holders[&p], "partition {p}");
            assert_eq!(replicas.len(), 2);
        }
        let r = kcat(
            &["-b", &kafka(n), "-C", "-t", "placed", "-e", "-f", "%s\\n"],
            "",
        );
        assert!(r.ok, "{}", r.stderr);
        let mut got = lines(&r.stdout);
        got.sort();
        assert_eq!(got, want);
    }
    // A server holding no copy of a partition does not serve it; its
    // holders do.
    let a: Vec<SocketAddr> = c.nodes.iter().map(addr).collect();
    let mut refused = 0;
    for p in 0..3 {
        for (i, at) in a.iter().enumerate() {
            let held = holders[&p].contains(&i32::try_from(i).unwrap());
            let err = list_offsets_error(*at, "placed", p);
            assert_eq!(err == 0, held, "partition {p} on n{}: {err}", i + 1);
            if held {
                continue;
            }
            refused += 1;
            assert_eq!(err, NOT_LEADER_OR_FOLLOWER);
            // A group this server coordinates still commits there (the
            // position is resolved through a holder).
            let group = (0..100)
                .map(|g| format!("rf-{g}"))
                .find(|g| find_coordinator(*at, g).1 == i32::try_from(i).unwrap())
                .unwrap();
            // It is stored: OffsetFetch reads it back.
            assert_eq!(commit_error(*at, &group, "placed", p, offset_of(p, 3)), 0);
            assert_eq!(
                offset_fetch(*at, &group, "placed", p),
                (0, 0, offset_of(p, 3)),
                "partition {p} through n{}",
                i + 1
            );
            let owner_at = a[usize::try_from(p).unwrap()];
            let owners_group = (0..100)
                .map(|g| format!("rf-{g}"))
                .find(|g| find_coordinator(owner_at, g).1 == p)
                .unwrap();
            assert_eq!(
                commit_error(owner_at, &owners_group, "placed", p, offset_of(p, 3)),
                0
            );
            assert_eq!(
                offset_fetch(owner_at, &owners_group, "placed", p),
                (0, 0, offset_of(p, 3))
            );
            // Past the partition's end: refused, nothing stored.
            assert_eq!(
                commit_error(*at, &group, "placed", p, offset_of(p, 9)),
                OFFSET_OUT_OF_RANGE
            );
            assert_eq!(
                offset_fetch(*at, &group, "placed", p),
                (0, 0, offset_of(p, 3))
            );
        }
    }
    assert_eq!(refused, 3, "each partition has one server without a copy");
}

/// (owner node id → holder node ids, owner first) of `category` as
/// `listChunks` on `n` shows them (node id of server nK is K-1).
fn holders_of(n: &TestBroker, category: &str) -> BTreeMap<i32, Vec<i32>> {
    let (s, listing) = n.get_text(&format!("/listChunks?category={category}"));
    assert_eq!(s, 200);
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let ids: Vec<i32> = e["holders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap()[1..].parse::<i32>().unwrap() - 1)
                .collect();
            (ids[0], ids)
        })
        .collect()
}

/// `group`'s position in `chunk` as `GET /consumers` on `n` shows it.
fn position(n: &TestBroker, category: &str, group: &str, chunk: &str) -> Option<u64> {
    let (s, body) = n.get_text(&format!("/consumers?category={category}"));
    assert_eq!(s, 200, "{body}");
    let groups: serde_json::Value = serde_json::from_str(&body).unwrap();
    groups
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["consumer"] == group)
        .flat_map(|g| g["positions"].as_array().unwrap().iter())
        .find(|p| p["chunk"] == chunk)
        .map(|p| p["offset"].as_u64().unwrap())
}

/// Polls (at most 30 s) until OffsetFetch on `at()` answers `want`
/// (top-level error, partition error, offset).
fn wait_fetch(
    at: impl Fn() -> SocketAddr,
    group: &str,
    topic: &str,
    p: i32,
    want: (i16, i16, i64),
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = offset_fetch(at(), group, topic, p);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "OffsetFetch answers {got:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A group (`<prefix>-<n>`) whose coordinator, as `at` names it, holds
/// no copy of some partition: (group, coordinator node id, partition).
fn group_without_copy(
    at: SocketAddr,
    holders: &BTreeMap<i32, Vec<i32>>,
    prefix: &str,
) -> (String, i32, i32) {
    (0..200)
        .map(|g| format!("{prefix}-{g}"))
        .find_map(|g| {
            let node = find_coordinator(at, &g).1;
            let p = (0..3).find(|p| !holders[p].contains(&node))?;
            Some((g, node, p))
        })
        .expect("a group coordinated by a server without a copy of a partition")
}

/// A 3-server cluster with replication factor 2 and Kafka listeners, all
/// brokers known everywhere; a restarted server waits at most 2 s for
/// dead peers to pull back its own open chunk's bytes.
fn factor_two_cluster(category: &str) -> TestCluster {
    let c = TestCluster::start(
        3,
        &[
            "--kafka-listen",
            "127.0.0.1:0",
            "--replication-factor",
            "2",
            "--replication-timeout",
            "2s",
        ],
    );
    for n in &c.nodes {
        wait_metadata(addr(n), category, |m| {
            m.brokers.len() == 3 && partitions(m).iter().all(|(_, r, i)| r == i)
        });
    }
    c
}

#[test]
fn a_coordinator_without_a_copy_commits_and_fetches_offsets_through_a_holder() {
    let mut c = factor_two_cluster("offs");
    // Records of different lengths, so a byte position is not a multiple
    // of a record count by chance.
    let record = |k: usize, j: usize| format!("n{k}-{}\n", "x".repeat(j));
    for (i, n) in c.nodes.iter().enumerate() {
        let body: String = (0..10).map(|j| record(i + 1, j)).collect();
        assert_eq!(n.write("offs", body).0, 200);
    }
    let chunks = c.converge("offs", Duration::from_secs(30), |l| l.len() == 3);
    let holders = holders_of(&c.nodes[0], "offs");
    assert_eq!(holders.len(), 3);
    let (group, coord, p) = group_without_copy(addr(&c.nodes[0]), &holders, "offs");
    let ci = usize::try_from(coord).unwrap();
    let chunk = &chunks
        .iter()
        .find(|e| e.name.starts_with(&format!("n{}-", p + 1)))
        .unwrap()
        .name;
    let index: i64 = chunk.rsplit("chunk").next().unwrap().parse().unwrap();
    let offset_of = |n: i64| (index << 32) | n;
    let owner = usize::try_from(p).unwrap();
    let byte_of = |n: usize| {
        (0..n)
            .map(|j| record(owner + 1, j).len() as u64)
            .sum::<u64>()
    };
    let at = addr(&c.nodes[ci]);
    assert_eq!(
        list_offsets_error(at, "offs", p),
        NOT_LEADER_OR_FOLLOWER,
        "no copy there"
    );

    // Commit the middle of the partition on its coordinator; it reads back.
    assert_eq!(commit_error(at, &group, "offs", p, offset_of(4)), 0);
    assert_eq!(offset_fetch(at, &group, "offs", p), (0, 0, offset_of(4)));
    // The position is the byte where record 4 starts, and reaches every
    // server (the holders included) with the group events.
    for n in &c.nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        while position(n, "offs", &group, chunk) != Some(byte_of(4)) {
            assert!(
                Instant::now() < deadline,
                "{:?}",
                position(n, "offs", &group, chunk)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The peer endpoint behind it, asked directly: bounded input.
    let owner_name = format!("n{}", owner + 1);
    let ask = |n: &TestBroker, rest: &str| {
        n.get_text(&format!(
            "/peer/kafka/offsets?category=offs&owner={owner_name}&{rest}"
        ))
    };
    let (s, body) = ask(
        &c.nodes[owner],
        &format!("from=n{}&offset={}", coord + 1, offset_of(4)),
    );
    assert_eq!(s, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({"positions": [{"chunk": chunk, "offset": byte_of(4)}]})
    );
    let (s, body) = ask(
        &c.nodes[owner],
        &format!("from=n{}&chunk={chunk}&pos={}", coord + 1, byte_of(4)),
    );
    assert_eq!(
        (s, body.trim()),
        (200, format!("{{\"offset\":{}}}", offset_of(4)).as_str())
    );
    let from = format!("from=n{}", coord + 1);
    for bad in [
        from.clone(),
        format!("{from}&offset=9223372036854775808"),
        format!("{from}&offset=-1"),
        format!("{from}&offset=1&chunk={chunk}&pos=0"),
        format!("{from}&chunk={chunk}"),
        format!("{from}&chunk=zz-chunk000000000&pos=0"),
        "offset=1".to_owned(),
    ] {
        assert_eq!(ask(&c.nodes[owner], &bad).0, 400, "{bad}");
    }
    assert_eq!(ask(&c.nodes[owner], "from=stranger&offset=1").0, 403);
    assert_eq!(
        ask(&c.nodes[ci], &format!("from={owner_name}&offset=1")).0,
        404,
        "no copy there"
    );
    let (s, _) = c.nodes[owner].get_text(&format!(
        "/peer/kafka/offsets?category=../x&owner={owner_name}&{from}&offset=1"
    ));
    assert_eq!(s, 400);

    // Forward only; past the end of the chunk is out of range.
    assert_eq!(
        commit_error(at, &group, "offs", p, offset_of(3)),
        POLICY_VIOLATION
    );
    assert_eq!(
        commit_error(at, &group, "offs", p, offset_of(11)),
        OFFSET_OUT_OF_RANGE
    );
    assert_eq!(offset_fetch(at, &group, "offs", p), (0, 0, offset_of(4)));

    // kill -9 and restart of the coordinator: still committed.
    c.nodes[ci].restart();
    wait_fetch(
        || addr(&c.nodes[ci]),
        &group,
        "offs",
        p,
        (0, 0, offset_of(4)),
    );

    // Owner down: the other holder answers, for commits too.
    c.nodes[owner].kill9();
    let at = addr(&c.nodes[ci]);
    wait_fetch(|| at, &group, "offs", p, (0, 0, offset_of(4)));
    assert_eq!(commit_error(at, &group, "offs", p, offset_of(6)), 0);
    assert_eq!(offset_fetch(at, &group, "offs", p), (0, 0, offset_of(6)));
    // No holder left: retriable, nothing lost.
    let other = usize::try_from(holders[&p][1]).unwrap();
    c.nodes[other].kill9();
    assert_eq!(
        commit_error(at, &group, "offs", p, offset_of(7)),
        COORDINATOR_LOAD_IN_PROGRESS
    );
    let (top, part, _) = offset_fetch(at, &group, "offs", p);
    assert_eq!(
        (top, part),
        (COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_LOAD_IN_PROGRESS)
    );
    c.nodes[other].start_again();
    wait_fetch(|| at, &group, "offs", p, (0, 0, offset_of(6)));
    assert_eq!(
        position(&c.nodes[ci], "offs", &group, chunk),
        Some(byte_of(6))
    );
}

#[test]
fn a_librdkafka_group_resumes_a_partition_its_coordinator_holds_no_copy_of() {
    let mut c = factor_two_cluster("resume");
    for (i, n) in c.nodes.iter().enumerate() {
        let body: String = (0..5).map(|j| format!("n{}-{j}\n", i + 1)).collect();
        assert_eq!(n.write("resume", body).0, 200);
    }
    c.converge("resume", Duration::from_secs(30), |l| l.len() == 3);
    let holders = holders_of(&c.nodes[0], "resume");
    let (group, coord, p) = group_without_copy(addr(&c.nodes[0]), &holders, "resume");
    let ci = usize::try_from(coord).unwrap();
    // Read everything, committing each record (synchronously: a refused
    // commit fails the run).
    let r = py(
        &[
            "consume",
            &kafka(&c.nodes[ci]),
            "resume",
            "--group",
            &group,
            "--commit",
            "--count",
            "15",
        ],
        "",
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    // The coordinator restarts; a new record in partition p is the first
    // thing the group reads (not p's first record: auto.offset.reset
    // would apply if p's offset were not committed).
    c.nodes[ci].restart();
    let owner = usize::try_from(p).unwrap();
    assert_eq!(c.nodes[owner].write("resume", "late\n").0, 200);
    let other = (ci + 1) % 3;
    let r = py(
        &[
            "consume",
            &kafka(&c.nodes[other]),
            "resume",
            "--group",
            &group,
            "--count",
            "1",
            "--timeout",
            "40",
        ],
        "",
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let got: Vec<String> = values(&r.stdout).into_iter().map(|(_, v)| v).collect();
    assert_eq!(got, vec!["late"], "partition {p}");
}
