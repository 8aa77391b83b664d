//! Issue 18, membership changes under a replication factor: a sixth
//! server joins a five-server cluster with R = 2 (peer lists edited in the
//! config files, hot reload) and later leaves, both under write load. Every
//! sealed chunk's copies are counted on disk all along: never fewer than
//! R; then each chunk converges to exactly its placement holders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::harness::{free_port, TestBroker};

const R: usize = 2;
const CONVERGE: Duration = Duration::from_secs(60);

/// The category written: one where the sixth server is the second holder
/// of at least two of the five owners' pairs, so that its joining and
/// leaving moves data (placement is a pure function of the names).
fn category() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let six: Vec<String> = (1..=6).map(|i| format!("n{i}")).collect();
        (0..1000)
            .map(|k| format!("load{k}"))
            .find(|c| {
                six[..5]
                    .iter()
                    .filter(|o| {
                        chunkbus::cluster::placement::holders(c, o, &six, R).contains(&"n6")
                    })
                    .count()
                    >= 2
            })
            .expect("a category")
    })
}

fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Listed {
    name: String,
    complete: bool,
    size: u64,
    holders: Vec<String>,
}

fn list(node: &TestBroker, category: &str) -> Vec<Listed> {
    let (s, body) = node.get(&format!("/listChunks?category={category}"));
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("listChunks JSON")
}

struct Cluster {
    nodes: Vec<Option<TestBroker>>,
    ports: Vec<u16>,
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    fn new(n: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ports = (0..n).map(|_| free_port()).collect();
        let dirs = (0..n)
            .map(|i| tmp.path().join(format!("n{}", i + 1)))
            .collect();
        let files = (0..n)
            .map(|i| tmp.path().join(format!("n{}.toml", i + 1)))
            .collect();
        Self {
            nodes: (0..n).map(|_| None).collect(),
            ports,
            dirs,
            files,
            _tmp: tmp,
        }
    }

    /// Writes node `i`'s config: the `members` other than itself as peers.
    fn configure(&self, i: usize, members: &[usize]) {
        let peers: Vec<String> = members
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| format!("n{}=http://127.0.0.1:{}", j + 1, self.ports[j]))
            .collect();
        write_config(
            &self.files[i],
            &format!(
                "peers = \"{}\"\nreplication_factor = {R}\n",
                peers.join(",")
            ),
        );
    }

    fn start(&mut self, i: usize) {
        let (file, listen, name) = (
            self.files[i].display().to_string(),
            format!("127.0.0.1:{}", self.ports[i]),
            format!("n{}", i + 1),
        );
        self.nodes[i] = Some(TestBroker::start_in(
            &self.dirs[i],
            &[
                "--config",
                &file,
                "--name",
                &name,
                "--listen",
                &listen,
                "--max-chunk-size",
                "8KiB",
                "--rebalance-rate",
                "4MiB",
                "--chunk-rotate-interval",
                "1s",
            ],
        ));
    }

    fn node(&self, i: usize) -> &TestBroker {
        self.nodes[i].as_ref().expect("running")
    }

    /// Nodes whose data dir holds all `size` bytes of `chunk`.
    fn copies(&self, category: &str, chunk: &str, size: u64, order: &[usize]) -> Vec<usize> {
        order
            .iter()
            .copied()
            .filter(|&i| {
                std::fs::metadata(self.dirs[i].join(category).join(chunk))
                    .is_ok_and(|m| m.len() >= size)
            })
            .collect()
    }
}

/// Stops the load and watcher threads when dropped — also when the test
/// fails inside a thread scope, which would otherwise wait for them forever.
struct StopOnDrop<'a>(Vec<&'a AtomicBool>);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        for f in &self.0 {
            f.store(true, Ordering::Relaxed);
        }
    }
}

fn index(name: &str) -> usize {
    name.trim_start_matches('n').parse::<usize>().unwrap() - 1
}

/// Records, until `stop`, the fewest full copies on disk of every sealed
/// chunk listed by `observer`, from the moment it first had R. Servers that may drop a copy are looked
/// at before the final holders (who never drop it), so a copy moving
/// during one look is never missed.
fn watch_copies(
    c: &Cluster,
    observer: usize,
    all: &[usize],
    stop: &AtomicBool,
    worst: &Mutex<BTreeMap<String, usize>>,
) {
    while !stop.load(Ordering::Relaxed) {
        for e in list(c.node(observer), category())
            .iter()
            .filter(|e| e.complete)
        {
            let holders: Vec<usize> = e.holders.iter().map(|h| index(h)).collect();
            let mut order: Vec<usize> = all
                .iter()
                .copied()
                .filter(|i| !holders.contains(i))
                .collect();
            order.extend(&holders);
            let n = c.copies(category(), &e.name, e.size, &order).len();
            let mut w = worst.lock().unwrap();
            // Counted from the first time it had R copies: a chunk sealed
            // a moment ago may still be on its way to its replica.
            match w.get_mut(&e.name) {
                Some(slot) => *slot = (*slot).min(n),
                None if n >= R => {
                    w.insert(e.name.clone(), n);
                }
                None => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `observer` lists at least `min_sealed` sealed chunks, each
/// fully on exactly its placement holders among `members` (computed here
/// from the names) and listed with those holders by every member.
fn converge(c: &Cluster, observer: usize, members: &[usize], min_sealed: usize) -> usize {
    let names: Vec<String> = members.iter().map(|i| format!("n{}", i + 1)).collect();
    let deadline = Instant::now() + CONVERGE;
    loop {
        let l = list(c.node(observer), category());
        let sealed: Vec<&Listed> = l.iter().filter(|e| e.complete).collect();
        let misplaced: Vec<(String, Vec<String>, Vec<usize>)> = sealed
            .iter()
            .filter_map(|e| {
                let owner = e.name.split('-').next().unwrap_or_default();
                let want_names: Vec<String> =
                    chunkbus::cluster::placement::holders(category(), owner, &names, R)
                        .into_iter()
                        .map(str::to_owned)
                        .collect();
                let mut want: Vec<usize> = want_names.iter().map(|h| index(h)).collect();
                want.sort_unstable();
                let have = c.copies(category(), &e.name, e.size, members);
                (have != want || e.holders != want_names)
                    .then(|| (e.name.clone(), e.holders.clone(), have))
            })
            .collect();
        let differ: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| {
                let other = list(c.node(i), category());
                !sealed.iter().all(|e| {
                    other
                        .iter()
                        .any(|o| o.name == e.name && o.holders == e.holders)
                })
            })
            .collect();
        if misplaced.is_empty() && differ.is_empty() && sealed.len() >= min_sealed {
            return sealed.len();
        }
        assert!(
            Instant::now() < deadline,
            "no convergence seen from n{} ({} sealed, want {min_sealed}): misplaced (chunk, holders, on disk) {misplaced:?}; listings differ on {differ:?}",
            observer + 1,
            sealed.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_sixth_server_joins_and_leaves_under_load_without_fewer_than_r_copies() {
    let mut c = Cluster::new(6);
    let five = [0, 1, 2, 3, 4];
    let six = [0, 1, 2, 3, 4, 5];
    for i in five {
        c.configure(i, &five);
    }
    for i in five {
        c.start(i);
    }
    let stop_load = AtomicBool::new(false);
    let stop_watch = AtomicBool::new(false);
    let worst = Mutex::new(BTreeMap::new());
    let written = Mutex::new(vec![0u64; 6]);
    let sealed_before_join = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(vec![&stop_load, &stop_watch]);
        let c = &c;
        // Load: numbered messages through n1..n5 all along.
        for i in five {
            let (stop, written) = (&stop_load, &written);
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body: String = (n..n + 50).map(|k| format!("p{i}-{k}\n")).collect();
                    let (st, msg) = c.node(i).write(category(), body);
                    assert_eq!(st, 200, "{msg}");
                    n += 50;
                    written.lock().unwrap()[i] = n;
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        sealed_before_join.store(converge(c, 0, &five, 10), Ordering::Relaxed);
        s.spawn(|| watch_copies(c, 0, &five, &stop_watch, &worst));
        std::thread::sleep(Duration::from_millis(300));
        stop_watch.store(true, Ordering::Relaxed);
        stop_load.store(true, Ordering::Relaxed);
    });
    let worst_before_join = std::mem::take(&mut *worst.lock().unwrap());
    assert!(
        worst_before_join.values().all(|&n| n >= R),
        "{worst_before_join:?}"
    );

    // The sixth server joins: it lists the five, then they list it.
    c.configure(5, &six);
    c.start(5);
    let stop_load = AtomicBool::new(false);
    let stop_n6_load = AtomicBool::new(false);
    let stop_watch = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(vec![&stop_load, &stop_n6_load, &stop_watch]);
        let c = &c;
        for i in six {
            // n6 takes writes too, so it owns chunks when it leaves.
            let stop = if i == 5 { &stop_n6_load } else { &stop_load };
            let written = &written;
            s.spawn(move || {
                let mut n = written.lock().unwrap()[i];
                while !stop.load(Ordering::Relaxed) {
                    let body: String = (n..n + 50).map(|k| format!("p{i}-{k}\n")).collect();
                    let (st, msg) = c.node(i).write(category(), body);
                    assert_eq!(st, 200, "{msg}");
                    n += 50;
                    written.lock().unwrap()[i] = n;
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        s.spawn(|| watch_copies(c, 5, &six, &stop_watch, &worst));
        for i in five {
            c.configure(i, &six);
        }
        let before = sealed_before_join.load(Ordering::Relaxed);
        converge(c, 5, &six, before);
        // n6 took its share: it holds copies now.
        let held_by_n6 = list(c.node(5), category())
            .iter()
            .filter(|e| e.complete && e.holders.contains(&"n6".to_owned()))
            .count();
        assert!(held_by_n6 > 0, "n6 holds nothing");
        // The old holders dropped the copies n6 took over (exactly the
        // holders have each chunk: checked by `converge`), and say so.
        let dropped: u64 = five
            .iter()
            .map(|&i| {
                let (_, peers) = c.node(i).get_text("/peers");
                let v: serde_json::Value = serde_json::from_str(&peers).unwrap();
                assert_eq!(v["rebalance"]["rate_bytes_per_sec"], 4 << 20, "{peers}");
                assert_eq!(v["rebalance"]["excess_copies"], 0, "{peers}");
                v["rebalance"]["dropped_copies"].as_u64().unwrap()
            })
            .sum();
        assert!(dropped > 0, "no copy was dropped");

        // Then n6 leaves: producers move off it, its chunks seal
        // (chunk_rotate_interval), and once its replicas have them sealed
        // the five drop it from their lists. Its pairs get new holders
        // among the five, which copy its chunks from the holders left.
        stop_n6_load.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + CONVERGE;
        while !list(c.node(0), category())
            .iter()
            .filter(|e| e.name.starts_with("n6-"))
            .all(|e| e.complete)
        {
            assert!(Instant::now() < deadline, "n6's chunks not sealed");
            std::thread::sleep(Duration::from_millis(100));
        }
        let sealed = converge(c, 5, &six, before);
        for i in five {
            c.configure(i, &five);
        }
        converge(c, 0, &five, sealed);
        stop_watch.store(true, Ordering::Relaxed);
        stop_load.store(true, Ordering::Relaxed);
    });
    let worst = worst.into_inner().unwrap();
    assert!(worst.len() > 10, "chunks watched: {}", worst.len());
    assert!(
        worst.keys().any(|k| k.starts_with("n6-")),
        "n6 owned sealed chunks: {worst:?}"
    );
    let below: Vec<_> = worst.iter().filter(|(_, &n)| n < R).collect();
    assert!(below.is_empty(), "fewer than {R} copies seen: {below:?}");
    c.nodes[5].take();
    // Everything written is still there, once and in order, through any
    // of the five.
    let total: u64 = written.lock().unwrap().iter().sum();
    for i in [0, 3] {
        let data = c.node(i).read_all(category());
        let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for line in String::from_utf8_lossy(&data).lines() {
            let (tag, n) = line.rsplit_once('-').unwrap();
            per.entry(tag.to_owned())
                .or_default()
                .push(n.parse().unwrap());
        }
        let count: u64 = per.values().map(|v| v.len() as u64).sum();
        assert_eq!(count, total);
        for (tag, nums) in per {
            assert!(
                nums.iter().enumerate().all(|(k, n)| *n == k as u64),
                "{tag}"
            );
        }
    }
}
