//! Issue 18: `--replication-factor R`. Five real servers with R = 2 on
//! 127.0.0.1: every chunk ends up on exactly its two placement holders,
//! every server lists and serves every chunk (reads of chunks held
//! elsewhere are relayed from a holder, failing over when one is killed),
//! acks stay cluster-wide, and `min_sync_replicas` is bounded by R − 1.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::{by_tag, numbered, TestBroker, TestCluster};

const CONVERGE: Duration = Duration::from_secs(40);

/// One entry of a cluster `listChunks`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
struct Listed {
    name: String,
    complete: bool,
    size: u64,
    held_here: bool,
    holders: Vec<String>,
}

fn list(node: &TestBroker, category: &str) -> Vec<Listed> {
    let (s, body) = node.get(&format!("/listChunks?category={category}"));
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("listChunks JSON")
}

/// Indexes (0-based) of the nodes whose data dir holds `chunk`.
fn on_disk(c: &TestCluster, category: &str, chunk: &str) -> Vec<usize> {
    (0..c.nodes.len())
        .filter(|&i| c.nodes[i].data_dir().join(category).join(chunk).exists())
        .collect()
}

fn node_index(name: &str) -> usize {
    name.trim_start_matches('n').parse::<usize>().expect("nN") - 1
}

/// Produces `batches` batches of 500 numbered messages through every node
/// at once (tag `p<i>` for node i).
fn produce_everywhere(c: &TestCluster, category: &str, batches: u64) {
    std::thread::scope(|s| {
        for (i, node) in c.nodes.iter().enumerate() {
            s.spawn(move || {
                for b in 0..batches {
                    let body = numbered(&format!("p{i}"), b * 500..(b + 1) * 500);
                    let (st, msg) = node.write(category, body);
                    assert_eq!(st, 200, "{msg}");
                }
            });
        }
    });
}

/// A listing entry without `held_here` (which differs between servers).
type Row = (String, bool, u64, Vec<String>);

/// Waits until every live node lists the same chunks with the same sizes
/// (the owner's), and every chunk is on exactly its holders' disks.
fn converge_placed(c: &TestCluster, category: &str, total: u64) -> Vec<Listed> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let lists: Vec<Vec<Row>> = c
            .nodes
            .iter()
            .map(|n| {
                list(n, category)
                    .into_iter()
                    .map(|e| (e.name, e.complete, e.size, e.holders))
                    .collect()
            })
            .collect();
        let same = lists.windows(2).all(|w| w[0] == w[1]);
        let sum: u64 = lists[0].iter().map(|e| e.2).sum();
        let placed = same
            && sum == total
            && lists[0].iter().all(|(name, _, _, holders)| {
                let mut want: Vec<usize> = holders.iter().map(|h| node_index(h)).collect();
                want.sort_unstable();
                on_disk(c, category, name) == want
            })
            && lists[0].iter().all(|(name, _, size, holders)| {
                // Each holder holds the chunk's bytes (its copy caught up).
                holders.iter().all(|h| {
                    list(&c.nodes[node_index(h)], category)
                        .iter()
                        .any(|e| &e.name == name && e.held_here && e.size == *size)
                })
            });
        if placed {
            return list(&c.nodes[0], category);
        }
        assert!(
            Instant::now() < deadline,
            "no convergence within {CONVERGE:?} (sum {sum} of {total}): {lists:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn check_everything_once_in_order(data: &[u8], producers: usize, per_producer: u64) {
    let got = by_tag(data);
    assert_eq!(got.len(), producers, "every producer's data");
    for (tag, nums) in &got {
        assert_eq!(nums.len() as u64, per_producer, "{tag}: count");
        assert!(
            nums.iter().enumerate().all(|(i, n)| *n == i as u64),
            "{tag}: once and in order"
        );
    }
}

#[test]
fn five_servers_with_r2_hold_each_chunk_twice_and_serve_everything_everywhere() {
    let mut c = TestCluster::start(
        5,
        &["--replication-factor", "2", "--max-chunk-size", "16KiB"],
    );
    produce_everywhere(&c, "events", 12);
    // What the owners wrote: each node's own chunks.
    let total: u64 = (0..5)
        .map(|i| {
            list(&c.nodes[i], "events")
                .iter()
                .filter(|e| e.name.starts_with(&format!("n{}-", i + 1)))
                .map(|e| e.size)
                .sum::<u64>()
        })
        .sum();
    assert!(total > 0);
    let listed = converge_placed(&c, "events", total);
    assert!(
        listed.len() >= 10,
        "several chunks per owner: {}",
        listed.len()
    );
    for e in &listed {
        assert_eq!(e.holders.len(), 2, "{e:?}");
        assert!(
            e.name.starts_with(&format!("{}-", e.holders[0])),
            "owner first: {e:?}"
        );
        assert_eq!(on_disk(&c, "events", &e.name).len(), 2, "{e:?}");
    }
    // Not every server holds everything: R = 2 of 5 stores 2/5 of the copies.
    for (i, n) in c.nodes.iter().enumerate() {
        let here = list(n, "events").iter().filter(|e| e.held_here).count();
        assert!(
            here < listed.len(),
            "n{} holds {here} of {}",
            i + 1,
            listed.len()
        );
    }
    // A chukcha consumer on any one server reads everything, once, in
    // order per producer (relayed reads included).
    for n in &c.nodes {
        check_everything_once_in_order(&n.read_all("events"), 5, 12 * 500);
    }
    // A relayed read says who served it.
    let elsewhere = listed
        .iter()
        .find(|e| !e.holders.contains(&"n1".to_owned()))
        .expect("a chunk n1 does not hold");
    let resp = reqwest::blocking::get(c.nodes[0].url(&format!(
        "/read?category=events&chunk={}&off=0&max_size=16777216",
        elsewhere.name
    )))
    .unwrap();
    assert_eq!(resp.status(), 200);
    let by = resp.headers()["chunkbus-served-by"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(elsewhere.holders.contains(&by), "{by} {elsewhere:?}");
    assert_eq!(resp.bytes().unwrap().len() as u64, elsewhere.size);
    // Bad requests are the holder's answer, passed on.
    let (s, msg) = c.nodes[0].get_text(&format!(
        "/read?category=events&chunk={}&off=1&max_size=100",
        elsewhere.name
    ));
    assert_eq!(s, 400, "{msg}");
    assert!(msg.contains("boundary"), "{msg}");
    // `min_sync_replicas` is bounded by R − 1.
    let (s, msg) = c.nodes[0].post("/write?category=events&min_sync_replicas=2", "x\n");
    assert_eq!(s, 400, "{msg}");
    assert!(
        msg.contains("replication_factor=2") && msg.contains("at most 1"),
        "{msg}"
    );
    let (s, msg) = c.nodes[0].post(
        "/write?category=events&min_sync_replicas=1&sync=1",
        "ok-0\n",
    );
    assert_eq!(s, 200, "{msg}");

    // kill -9 one server: every chunk it held is still read through any
    // other server, from the other holder.
    c.nodes[2].kill9();
    for i in [0, 1, 3, 4] {
        let data = c.nodes[i].read_all("events");
        let mut got = by_tag(&data);
        assert_eq!(got.remove("ok").map(|v| v.len()), Some(1));
        check_everything_once_in_order(&ok_free(&data), 5, 12 * 500);
    }
    // With no holder left for n3's chunks held by n3 and one other, kill
    // that one too: a read of such a chunk through a third server is a
    // clear 503 naming the holders.
    let n3_chunk = listed
        .iter()
        .find(|e| e.holders[0] == "n3")
        .expect("a chunk of n3")
        .clone();
    let other = node_index(&n3_chunk.holders[1]);
    let reader = (0..5).find(|i| *i != 2 && *i != other).unwrap();
    c.nodes[other].kill9();
    let (s, msg) = c.nodes[reader].get_text(&format!(
        "/read?category=events&chunk={}&off=0&max_size=1000",
        n3_chunk.name
    ));
    assert_eq!(s, 503, "{msg}");
    assert!(msg.contains("no holder") && msg.contains("n3"), "{msg}");
}

/// The data without the `ok-*` marker lines.
fn ok_free(data: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(data)
        .lines()
        .filter(|l| !l.starts_with("ok-"))
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

#[test]
fn acks_through_a_server_that_does_not_hold_the_chunk_apply_cluster_wide() {
    let c = TestCluster::start(
        4,
        &["--replication-factor", "2", "--max-chunk-size", "4KiB"],
    );
    for b in 0..20u64 {
        let (s, msg) = c.nodes[0].write("a", numbered("m", b * 100..(b + 1) * 100));
        assert_eq!(s, 200, "{msg}");
    }
    let deadline = Instant::now() + CONVERGE;
    let (target, non_holder) = loop {
        let l = list(&c.nodes[0], "a");
        let found = l.iter().filter(|e| e.complete).find_map(|e| {
            let nh = (1..4).find(|i| !e.holders.contains(&format!("n{}", i + 1)))?;
            let seen = list(&c.nodes[nh], "a")
                .into_iter()
                .find(|x| x.name == e.name && x.complete && x.size == e.size)?;
            Some((seen, nh))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no sealed chunk listed everywhere: {l:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!target.held_here);
    let node = &c.nodes[non_holder];
    // Group positions on chunks held elsewhere are taken and travel.
    let (s, msg) = node.post(
        &format!(
            "/ack?category=a&consumer=g&chunk={}&off={}",
            target.name, target.size
        ),
        "",
    );
    assert_eq!(s, 200, "{msg}");
    let (s, msg) = node.post(
        &format!(
            "/ack?category=a&consumer=g&chunk={}&off={}",
            target.name,
            target.size + 1
        ),
        "",
    );
    assert_eq!(s, 400, "past the final size: {msg}");
    // A chukcha ack: checked against the announced final size, forwarded.
    let (s, msg) = node.get_text(&format!("/ack?category=a&chunk={}&size=1", target.name));
    assert_eq!(s, 400, "{msg}");
    let (s, msg) = node.get_text(&format!(
        "/ack?category=a&chunk={}&size={}",
        target.name, target.size
    ));
    assert_eq!(s, 200, "{msg}");
    let deadline = Instant::now() + CONVERGE;
    loop {
        let gone_everywhere = c.nodes.iter().all(|n| {
            !list(n, "a").iter().any(|e| e.name == target.name)
                && !n.data_dir().join("a").join(&target.name).exists()
        });
        let group_everywhere = c
            .nodes
            .iter()
            .all(|n| n.get_text("/consumers?category=a").1.contains(&target.name));
        if gone_everywhere && group_everywhere {
            break;
        }
        assert!(Instant::now() < deadline, "ack not applied everywhere");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn replication_factor_is_validated_and_shown() {
    let c = TestCluster::start(3, &["--replication-factor", "2"]);
    let (s, body) = c.nodes[0].get_text("/peers");
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["replication_factor"], 2, "{body}");
    drop(c);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .args(["serve", "--replication-factor", "0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replication_factor"), "{err}");
}

fn relayed_reads(node: &TestBroker) -> u64 {
    let (_, text) = node.get_text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("chunkbus_relayed_reads_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("relayed_reads metric")
}

/// The Rust `Consumer`, connected to one server, reads every chunk
/// directly from a holder — failing over from a killed one — and so
/// never makes its server relay.
#[test]
fn the_rust_consumer_reads_from_holders_directly_and_fails_over() {
    let mut c = TestCluster::start(
        5,
        &["--replication-factor", "2", "--max-chunk-size", "16KiB"],
    );
    produce_everywhere(&c, "rc", 8);
    let total: u64 = (0..5)
        .map(|i| {
            list(&c.nodes[i], "rc")
                .iter()
                .filter(|e| e.name.starts_with(&format!("n{}-", i + 1)))
                .map(|e| e.size)
                .sum::<u64>()
        })
        .sum();
    let listed = converge_placed(&c, "rc", total);
    // n3 dies: its chunks and its copies are read from their other holder.
    c.nodes[2].kill9();
    assert!(listed.iter().any(|e| e.holders.contains(&"n3".to_owned())));
    let url = c.nodes[0].url("");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = rt.block_on(async {
        let client = chunkbus_client::Client::new(url.trim_end_matches('/')).unwrap();
        let config = chunkbus_client::ConsumerConfig::default().follow(false);
        let mut consumer = chunkbus_client::Consumer::start(
            client,
            "rc",
            config,
            chunkbus_client::Positions::default(),
        )
        .unwrap();
        // Per owner, batches arrive in order; owners interleave.
        let mut per_owner: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let deadline = Instant::now() + CONVERGE;
        while let Some(batch) = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("consumer stalled")
            .expect("consumer error")
        {
            assert!(Instant::now() < deadline);
            per_owner
                .entry(batch.owner.to_string())
                .or_default()
                .extend_from_slice(&batch.data);
        }
        per_owner
    });
    let mut all = Vec::new();
    for (owner, bytes) in &data {
        // One owner's stream holds exactly one producer's messages.
        let got = by_tag(bytes);
        assert_eq!(got.len(), 1, "{owner}");
        all.extend_from_slice(bytes);
    }
    check_everything_once_in_order(&all, 5, 8 * 500);
    assert_eq!(
        relayed_reads(&c.nodes[0]),
        0,
        "the consumer never read through n1"
    );
    // Positive control: a raw chukcha-style reader through n1 is relayed.
    check_everything_once_in_order(&c.nodes[0].read_all("rc"), 5, 8 * 500);
    assert!(relayed_reads(&c.nodes[0]) > 0);
}
