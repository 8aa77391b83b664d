//! Cluster tests: three real server processes on 127.0.0.1 replicating each
//! other's chunks; faults injected with kill -9, SIGSTOP and file cuts.

use chunkbus::storage::chunk::index::{IndexFormat, Record};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::{by_tag, numbered, ChunkEntry, TestBroker, TestCluster};

const CONVERGE: Duration = Duration::from_secs(30);

/// Every chunk listed on `node` as complete has the same bytes in every
/// node's data dir.
fn assert_identical_files(c: &TestCluster, category: &str, list: &[ChunkEntry]) {
    for entry in list {
        let copies: Vec<Vec<u8>> = c
            .nodes
            .iter()
            .map(|n| {
                std::fs::read(n.data_dir().join(category).join(&entry.name)).expect("chunk file")
            })
            .collect();
        for (i, bytes) in copies.iter().enumerate() {
            assert_eq!(
                &bytes[..entry.size as usize],
                &copies[0][..entry.size as usize],
                "{} differs on node {}",
                entry.name,
                i + 1
            );
            if entry.complete {
                assert_eq!(
                    bytes.len() as u64,
                    entry.size,
                    "{} size on node {}",
                    entry.name,
                    i + 1
                );
            }
        }
    }
}

#[test]
fn every_node_serves_all_data_and_copies_are_identical() {
    let c = TestCluster::start(3, &["--max-chunk-size", "64KiB"]);
    // Produce to all three at once.
    std::thread::scope(|s| {
        for (i, node) in c.nodes.iter().enumerate() {
            s.spawn(move || {
                for batch in 0..40u64 {
                    let body = numbered(&format!("p{i}"), batch * 500..(batch + 1) * 500);
                    let (st, msg) = node.write("events", body);
                    assert_eq!(st, 200, "{msg}");
                }
            });
        }
    });
    let list = c.converge("events", CONVERGE, |l| {
        l.iter().map(|e| e.size).sum::<u64>() > 0 && l.iter().filter(|e| !e.complete).count() <= 3
    });
    // Consume everything from each node alone: exact counts, sums, order.
    for node in &c.nodes {
        let got = by_tag(&node.read_all("events"));
        assert_eq!(got.len(), 3, "all three producers' data on every node");
        for (tag, nums) in &got {
            assert_eq!(nums.len(), 20_000, "{tag}");
            assert!(nums.windows(2).all(|w| w[0] + 1 == w[1]), "{tag} in order");
            assert_eq!(nums.iter().sum::<u64>(), 20_000 * 19_999 / 2);
        }
    }
    assert_identical_files(&c, "events", &list);
    idle_nodes_use_no_cpu(&c);
    // Status and metrics show the links.
    let (st, body) = c.nodes[0].get_text("/peers");
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["peers"].as_array().unwrap().len(), 2, "{body}");
    assert!(
        v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["up"] == true),
        "{body}"
    );
    let (_, metrics) = c.nodes[1].get_text("/metrics");
    assert!(
        metrics.contains("chunkbus_replication_lag_bytes{peer=\"n1\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("chunkbus_peer_up{peer=\"n3\"} 1"),
        "{metrics}"
    );
}

#[test]
fn min_sync_replicas_waits_for_peers_and_times_out_with_503() {
    let mut c = TestCluster::start(3, &["--replication-timeout", "1s"]);
    let (s, msg) = c.nodes[0].post("/write?category=c&min_sync_replicas=3", "a\n");
    assert_eq!(s, 400, "{msg}");
    let (s, msg) = c.nodes[0].post("/write?category=c&min_sync_replicas=2&sync=1", "a\n");
    assert_eq!(s, 200, "{msg}");
    c.nodes[2].kill9();
    let (s, msg) = c.nodes[0].post("/write?category=c&min_sync_replicas=1&sync=1", "b\n");
    assert_eq!(s, 200, "one peer alive suffices for K=1: {msg}");
    let t = Instant::now();
    let (s, msg) = c.nodes[0].post("/write?category=c&min_sync_replicas=2", "c\n");
    assert_eq!(s, 503, "{msg}");
    assert!(msg.contains("1 of 2"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(5), "503 in time");
    // Writes that do not ask for replicas are not slowed by the dead peer.
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(c.nodes[0].write("c", "d\n").0, 200);
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    c.nodes[2].start_again();
    let (s, msg) = c.nodes[0].post("/write?category=c&min_sync_replicas=2&sync=1", "e\n");
    assert_eq!(s, 200, "with the peer back: {msg}");
    // The 503'd write stayed written and replicated: everyone has it.
    let list = c.converge("c", CONVERGE, |l| !l.is_empty());
    for n in &c.nodes {
        let data = String::from_utf8(n.read_all("c")).unwrap();
        assert_eq!(data, format!("a\nb\nc\n{}e\n", "d\n".repeat(20)));
    }
    assert_identical_files(&c, "c", &list);
}

#[test]
fn replica_killed_mid_copy_resumes_without_copying_again() {
    let mut c = TestCluster::start(3, &["--max-chunk-size", "4MiB"]);
    let body = numbered("m", 0..50_000); // ~390 KB per write
    c.nodes[1].signal(libc::SIGSTOP);
    for _ in 0..100 {
        assert_eq!(c.nodes[0].write("big", body.clone()).0, 200);
    }
    let total: u64 = c.nodes[0].chunks("big").iter().map(|e| e.size).sum();
    c.nodes[1].signal(libc::SIGCONT);
    // Kill n2 while it copies (~39 MB), with n1 paused so nothing moves
    // meanwhile.
    let deadline = Instant::now() + CONVERGE;
    while c.nodes[1].chunks("big").iter().map(|e| e.size).sum::<u64>() == 0 {
        assert!(Instant::now() < deadline);
    }
    c.nodes[0].signal(libc::SIGSTOP);
    c.nodes[1].kill9();
    c.nodes[1].start_again();
    let held: u64 = c.nodes[1].chunks("big").iter().map(|e| e.size).sum();
    eprintln!("n2 held {held} of {total} bytes when killed");
    c.nodes[0].signal(libc::SIGCONT);
    let list = c.converge("big", CONVERGE, |l| {
        l.iter().map(|e| e.size).sum::<u64>() == total
    });
    assert_identical_files(&c, "big", &list);
    let (_, status) = c.nodes[1].get_text("/peers");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let copied = v["peers"][0]["copied_bytes"].as_u64().unwrap();
    assert_eq!(
        copied,
        total - held,
        "copied only what it lacked (held {held} of {total}): {status}"
    );
    let data = c.nodes[1].read_all("big");
    assert_eq!(data.len() as u64, total);
}

#[test]
fn partitioned_peer_catches_up_and_writes_are_not_slowed() {
    let c = TestCluster::start(3, &["--max-chunk-size", "256KiB"]);
    c.nodes[2].signal(libc::SIGSTOP);
    let t = Instant::now();
    for i in 0..100u64 {
        let (s, msg) = c.nodes[0].write("p", numbered("x", i * 100..(i + 1) * 100));
        assert_eq!(s, 200, "{msg}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "writes slowed: {:?}",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    c.nodes[2].signal(libc::SIGCONT);
    let list = c.converge("p", CONVERGE, |l| {
        l.iter().map(|e| e.size).sum::<u64>()
            == c.nodes[0].chunks("p").iter().map(|e| e.size).sum::<u64>()
    });
    assert_identical_files(&c, "p", &list);
    let got = by_tag(&c.nodes[2].read_all("p"));
    assert_eq!(got["x"], (0..10_000).collect::<Vec<_>>());
}

/// Cuts a chunk and its index back to the first `keep` batches, as a
/// machine crash would leave a file whose tail was never fdatasync'd.
fn cut_back(data: &std::path::Path, keep: usize) -> u64 {
    let idx = {
        let mut s = data.as_os_str().to_owned();
        s.push(".idx");
        std::path::PathBuf::from(s)
    };
    let bytes = std::fs::read(&idx).unwrap();
    let f = IndexFormat::detect(&bytes).expect("an index");
    let rec = |i: usize| {
        let at = f.header_len() + f.record_len() * i;
        let r = Record::decode(f, &bytes[at..at + f.record_len()]);
        (r.offset, u64::from(r.len))
    };
    let (off, len) = rec(keep - 1);
    let end = off + len;
    std::fs::OpenOptions::new()
        .write(true)
        .open(data)
        .unwrap()
        .set_len(end)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&idx)
        .unwrap()
        .set_len((f.header_len() + f.record_len() * keep) as u64)
        .unwrap();
    end
}

#[test]
fn owner_restarting_after_a_crash_pulls_back_acknowledged_bytes() {
    let mut c = TestCluster::start(3, &["--replication-timeout", "5s"]);
    let mut acked = String::new();
    for i in 0..30u64 {
        let body = numbered("w", i * 10..(i + 1) * 10);
        let (s, msg) = c.nodes[0].post("/write?category=r&min_sync_replicas=1", body.clone());
        assert_eq!(s, 200, "{msg}");
        acked.push_str(&body);
    }
    let chunk = c.nodes[0].chunks("r")[0].name.clone();
    c.nodes[0].kill9();
    // The owner's disk lost everything after the 5th batch.
    let path = c.nodes[0].data_dir().join("r").join(&chunk);
    let cut = cut_back(&path, 5);
    assert!(cut < acked.len() as u64);
    c.nodes[0].start_again();
    assert!(
        c.nodes[0].logs().contains("pulled back own chunk bytes"),
        "{}",
        c.nodes[0].logs()
    );
    // Every acknowledged write is back on the owner, the chunk is sealed,
    // and new writes go to a new chunk.
    assert_eq!(String::from_utf8(c.nodes[0].read_all("r")).unwrap(), acked);
    let (s, reply) = c.nodes[0].write("r", "after\n");
    assert_eq!(s, 200);
    assert!(
        !reply.contains(&chunk),
        "new chunk after the crash: {reply}"
    );
    let list = c.converge("r", CONVERGE, |l| l.len() == 2 && l[0].complete);
    assert_eq!(list[0].size, acked.len() as u64);
    assert_identical_files(&c, "r", &list);
}

#[test]
fn an_ack_on_any_server_deletes_the_chunk_everywhere() {
    let mut c = TestCluster::start(3, &["--max-chunk-size", "4KiB"]);
    for i in 0..20u64 {
        assert_eq!(
            c.nodes[0]
                .write("a", numbered("z", i * 200..(i + 1) * 200))
                .0,
            200
        );
    }
    let list = c.converge("a", CONVERGE, |l| {
        l.iter().filter(|e| e.complete).count() >= 4
    });
    let gone = |n: &TestBroker, name: &str| !n.chunks("a").iter().any(|e| e.name == name);
    let wait_gone = |n: &TestBroker, name: &str| {
        let deadline = Instant::now() + CONVERGE;
        while !gone(n, name) {
            assert!(
                Instant::now() < deadline,
                "{name} still listed on {}",
                n.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // A read of a deleted chunk: 404, marked deleted (issue 20 defect 5).
    let read_marked = |n: &TestBroker, name: &str| {
        let r = n
            .http
            .get(n.url(&format!(
                "/read?category=a&chunk={name}&off=0&max_size=65536"
            )))
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.headers().contains_key("chunkbus-deleted"),
        )
    };
    // 1. Ack on a replica (n2) of n1's chunk: gone on all three.
    let first = &list[0];
    let (s, msg) = c.nodes[1].get_text(&format!(
        "/ack?category=a&chunk={}&size={}",
        first.name, first.size
    ));
    assert_eq!(s, 200, "{msg}");
    for n in &c.nodes {
        wait_gone(n, &first.name);
        assert_eq!(read_marked(n, &first.name), (404, true), "{}", n.addr);
    }
    // A chunk of n1 no server has seen yet is a plain 404 everywhere.
    for n in &c.nodes {
        assert_eq!(read_marked(n, "n1-chunk000000900"), (404, false));
    }
    // 2. n3 is down during an ack on n1: it deletes its copy once back.
    let second = &list[1];
    c.nodes[2].kill9();
    let (s, msg) = c.nodes[0].get_text(&format!(
        "/ack?category=a&chunk={}&size={}",
        second.name, second.size
    ));
    assert_eq!(s, 200, "{msg}");
    c.nodes[2].start_again();
    wait_gone(&c.nodes[2], &second.name);
    assert_eq!(read_marked(&c.nodes[2], &second.name), (404, true));
    // 3. The owner is down during an ack on n2: stored, applied on return.
    let third = &list[2];
    c.nodes[0].kill9();
    let (s, msg) = c.nodes[1].get_text(&format!(
        "/ack?category=a&chunk={}&size={}",
        third.name, third.size
    ));
    assert_eq!(s, 200, "{msg}");
    assert!(gone(&c.nodes[1], &third.name));
    c.nodes[0].start_again();
    for n in &c.nodes {
        wait_gone(n, &third.name);
    }
    // And it is not copied back to n2 from n3 or n1.
    std::thread::sleep(Duration::from_millis(500));
    assert!(gone(&c.nodes[1], &third.name));
    // An ack the owner refuses (size too small) is refused on the replica.
    let fourth = &list[3];
    let (s, msg) = c.nodes[1].get_text(&format!("/ack?category=a&chunk={}&size=1", fourth.name));
    assert_eq!(s, 400, "{msg}");
}

/// `GET /consumers` positions of `group` as (chunk, offset) pairs.
fn positions(n: &TestBroker, category: &str, group: &str) -> Vec<(String, u64)> {
    let (s, body) = n.get_text(&format!("/consumers?category={category}"));
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|g| g["consumer"] == group)
        .flat_map(|g| g["positions"].as_array().unwrap().clone())
        .map(|p| {
            (
                p["chunk"].as_str().unwrap().to_owned(),
                p["offset"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn consumer_group_positions_replicate_to_every_node() {
    let mut c = TestCluster::start(3, &[]);
    assert_eq!(c.nodes[0].write("g", "one\ntwo\n").0, 200);
    let list = c.converge("g", CONVERGE, |l| l.len() == 1);
    let chunk = list[0].name.clone();
    c.nodes[2].kill9();
    // A group acks on n2 (a replica of n1's chunk).
    let (s, msg) = c.nodes[1].post(
        &format!("/ack?category=g&consumer=G&chunk={chunk}&off=4"),
        "",
    );
    assert_eq!(s, 200, "{msg}");
    let want = vec![(chunk.clone(), 4)];
    let wait_for = |n: &TestBroker, want: &Vec<(String, u64)>| {
        let deadline = Instant::now() + CONVERGE;
        while &positions(n, "g", "G") != want {
            assert!(Instant::now() < deadline, "{:?}", positions(n, "g", "G"));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(&c.nodes[0], &want);
    // n3 was down: it gets the position once back.
    c.nodes[2].start_again();
    wait_for(&c.nodes[2], &want);
    // Positions only move forward everywhere: an ack on n3 further on wins.
    let (s, msg) = c.nodes[2].post(
        &format!("/ack?category=g&consumer=G&chunk={chunk}&off=8"),
        "",
    );
    assert_eq!(s, 200, "{msg}");
    let want = vec![(chunk.clone(), 8)];
    for n in &c.nodes {
        wait_for(n, &want);
    }
    // A deletion replicates too.
    let r = c.nodes[0]
        .http
        .delete(c.nodes[0].url("/consumers?category=g&consumer=G"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for n in &c.nodes {
        wait_for(n, &Vec::new());
    }
}

#[test]
fn peers_authenticate_with_the_cluster_token() {
    let c = TestCluster::start(3, &["--token", "cluster-token-1"]);
    let r = c.nodes[0]
        .http
        .post(c.nodes[0].url("/write?category=t"))
        .bearer_auth("cluster-token-1")
        .body("x\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Replication works with the token (every request of the harness
    // helpers would get 401, so poll /listChunks with it).
    let deadline = Instant::now() + CONVERGE;
    loop {
        let r = c.nodes[2]
            .http
            .get(c.nodes[2].url("/listChunks?category=t"))
            .bearer_auth("cluster-token-1")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        if r.text().unwrap().contains("\"size\":2") {
            break;
        }
        assert!(Instant::now() < deadline, "not replicated with a token");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Peer endpoints refuse requests without it.
    let r = c.nodes[0]
        .http
        .get(c.nodes[0].url("/peer/held?owner=n2"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

/// Caught-up nodes only hold long polls: no busy loop between peers.
fn idle_nodes_use_no_cpu(c: &TestCluster) {
    let before: Vec<Duration> = c.nodes.iter().map(TestBroker::cpu_time).collect();
    std::thread::sleep(Duration::from_secs(2));
    for (i, n) in c.nodes.iter().enumerate() {
        let used = n.cpu_time() - before[i];
        assert!(
            used < Duration::from_millis(200),
            "idle node n{} used {used:?} of CPU in 2 s",
            i + 1
        );
    }
}

#[test]
fn an_idle_cluster_with_an_empty_node_does_not_spin() {
    let c = TestCluster::start(3, &[]);
    // Only n1 has data; n2 and n3 own nothing (their change feed stays at 0).
    assert_eq!(c.nodes[0].write("i", "x\n").0, 200);
    c.converge("i", CONVERGE, |l| l.len() == 1);
    idle_nodes_use_no_cpu(&c);
}

/// Chaos: 3 nodes, writes to every running node while one node at a time
/// is killed -9 and restarted or SIGSTOPped for a round. Afterwards every
/// node holds every acknowledged message exactly once, in order per
/// producer, and all copies are byte-identical.
#[test]
fn random_kills_restarts_and_stops_converge_byte_identical() {
    let mut c = TestCluster::start(
        3,
        &["--max-chunk-size", "64KiB", "--replication-timeout", "3s"],
    );
    let mut rng = 0x00c0_ffee_u64;
    let mut next = |bound: u64| {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) % bound
    };
    let mut acked: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut stopped: Option<usize> = None;
    let mut faults = Vec::new();
    for round in 0..10u64 {
        for (i, node) in c.nodes.iter().enumerate() {
            if stopped == Some(i) {
                continue;
            }
            let tag = format!("r{round}n{i}");
            for b in 0..4u64 {
                let (st, _) = node.write("chaos", numbered(&tag, b * 200..(b + 1) * 200));
                if st == 200 {
                    acked
                        .entry(tag.clone())
                        .or_default()
                        .extend(b * 200..(b + 1) * 200);
                } else {
                    break; // keep each producer's acked numbers a prefix
                }
            }
        }
        if let Some(k) = stopped.take() {
            c.nodes[k].signal(libc::SIGCONT);
        }
        let k = next(3) as usize;
        match next(3) {
            0 => {
                c.nodes[k].restart(); // kill -9, then start on the same dir
                faults.push(format!("round {round}: kill -9 + restart n{}", k + 1));
            }
            1 => {
                c.nodes[k].signal(libc::SIGSTOP);
                stopped = Some(k);
                faults.push(format!("round {round}: SIGSTOP n{}", k + 1));
            }
            _ => {}
        }
    }
    if let Some(k) = stopped.take() {
        c.nodes[k].signal(libc::SIGCONT);
    }
    assert!(faults.len() >= 4, "enough faults injected: {faults:?}");
    let total: u64 = acked.values().map(|v| v.len() as u64).sum();
    // Identical listings on all three nodes (an owner always lists all of
    // its own bytes, so equal listings mean the copies caught up).
    let list = c.converge("chaos", Duration::from_secs(60), |l| !l.is_empty());
    for node in &c.nodes {
        let got = by_tag(&node.read_all("chaos"));
        for (tag, nums) in &acked {
            let have = got.get(tag).cloned().unwrap_or_default();
            // Acknowledged messages are all there, once, in order; a write
            // that failed mid-way (no 200) may have stored a tail after them.
            assert!(
                have.len() >= nums.len() && have[..nums.len()] == nums[..],
                "{tag} on a node after {faults:?}: {} of {} acked",
                have.len(),
                nums.len()
            );
            assert!(
                have.windows(2).all(|w| w[0] + 1 == w[1]),
                "{tag} in order, no duplicates"
            );
        }
    }
    assert!(total > 5_000, "the load ran ({total} acked)");
    assert_identical_files(&c, "chaos", &list);
}

/// An owner skips chunk indexes that never held data (here the spare it
/// discards for a body larger than `max_chunk_size`). A replica says such
/// an index is deleted for good (its owner announced a later chunk but
/// never this one), so a consumer reading through the replica alone goes
/// past it instead of waiting for a chunk that will never come; an index
/// past everything announced stays a plain 404 (it may still come).
#[test]
fn indexes_an_owner_skipped_are_marked_deleted_on_replicas() {
    let c = TestCluster::start(2, &["--max-chunk-size", "4KiB"]);
    let msg = |ch: char, n: usize| format!("{}\n", ch.to_string().repeat(n - 1));
    assert_eq!(c.nodes[0].write("g", msg('a', 3000)).0, 200);
    // Does not fit: chunk 0 is full, the category is busy, and a spare
    // (index 2) is created behind the new chunk 1.
    assert_eq!(c.nodes[0].write("g", msg('b', 3000)).0, 200);
    std::thread::sleep(Duration::from_millis(500));
    // Larger than a chunk: a chunk of its own (3); the spare is discarded.
    assert_eq!(c.nodes[0].write("g", msg('c', 6000)).0, 200);
    assert_eq!(c.nodes[0].write("g", msg('d', 100)).0, 200);
    let list = c.converge("g", CONVERGE, |l| l.len() == 4);
    let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "n1-chunk000000000",
            "n1-chunk000000001",
            "n1-chunk000000003",
            "n1-chunk000000004"
        ]
    );
    let read = |n: &TestBroker, name: &str| {
        let r = n
            .http
            .get(n.url(&format!(
                "/read?category=g&chunk={name}&off=0&max_size=65536"
            )))
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.headers().contains_key("chunkbus-deleted"),
        )
    };
    for n in &c.nodes {
        assert_eq!(read(n, "n1-chunk000000002"), (404, true), "{}", n.addr);
        assert_eq!(read(n, "n1-chunk000000005"), (404, false), "{}", n.addr);
    }
    // The Rust consumer, given only the replica, reads everything.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got = rt.block_on(async {
        let client = chunkbus_client::Client::new(&format!("http://{}", c.nodes[1].addr)).unwrap();
        let config = chunkbus_client::ConsumerConfig::default()
            .follow(false)
            .missing_chunk_wait(Duration::from_millis(300));
        let mut consumer = chunkbus_client::Consumer::start(
            client,
            "g",
            config,
            chunkbus_client::Positions::default(),
        )
        .unwrap();
        let mut got = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(20), consumer.next())
                .await
                .expect("the consumer stalled");
            match next {
                Ok(Some(batch)) => {
                    for m in batch.messages() {
                        got.push(m[0]);
                    }
                }
                Ok(None) => break,
                Err(e) => panic!("consumer error: {e}"),
            }
        }
        got
    });
    assert_eq!(got, b"abcd");
}

/// A machine crash can leave the owner's open chunk with no durable byte
/// at all while a replica holds every `min_sync_replicas` write of it. The
/// owner must not throw the empty chunk away at restart (and then call it
/// deleted for good): it pulls the bytes back like any lost tail.
#[test]
fn owner_whose_open_chunk_lost_every_byte_pulls_them_back() {
    let mut c = TestCluster::start(2, &["--replication-timeout", "5s"]);
    let mut acked = String::new();
    for i in 0..10u64 {
        let body = numbered("e", i * 10..(i + 1) * 10);
        let (s, msg) = c.nodes[0].post("/write?category=e&min_sync_replicas=1", body.clone());
        assert_eq!(s, 200, "{msg}");
        acked.push_str(&body);
    }
    let chunk = c.nodes[0].chunks("e")[0].name.clone();
    c.nodes[0].kill9();
    // Nothing of the chunk reached the owner's disk: data and index empty
    // (the index keeps its header, as a fresh chunk's does).
    let path = c.nodes[0].data_dir().join("e").join(&chunk);
    let mut idx = path.as_os_str().to_owned();
    idx.push(".idx");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(std::path::PathBuf::from(idx))
        .unwrap()
        .set_len(IndexFormat::CURRENT.header_len() as u64)
        .unwrap();
    c.nodes[0].start_again();
    assert_eq!(
        String::from_utf8(c.nodes[0].read_all("e")).unwrap(),
        acked,
        "{}",
        c.nodes[0].logs()
    );
    let list = c.converge("e", CONVERGE, |l| l.len() == 1 && l[0].complete);
    assert_eq!(list[0].name, chunk);
    assert_eq!(list[0].size, acked.len() as u64);
    assert_identical_files(&c, "e", &list);
}
