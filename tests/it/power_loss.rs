//! Power loss, for real: `chunkbus` runs on powerfs (`tests/powerfs`), a
//! FUSE file system that keeps everything not yet fsynced in memory. Under
//! concurrent load the file system "loses power" (everything unsynced is
//! dropped, sometimes with the last write torn or random unsynced pages
//! written back), the server is killed, the file system is mounted again
//! (cold caches) and the server restarted on what a disk would hold. Then:
//!
//! * every acknowledged `sync=1` (or `--fsync-every-write`, or
//!   `min_sync_replicas=1&sync=1`) write is there, at its acknowledged
//!   (chunk, offset);
//! * a default write is missing only if it was acknowledged within
//!   `flush_interval` (+ [`SLACK_MS`] for scheduling) of the crash;
//! * every readable message is whole (checksummed) and appears once;
//! * no (chunk, offset) ever holds two different messages and every chunk
//!   created after the crash has a higher index than any chunk seen before;
//! * the consumer group's stored position is never behind an acknowledged
//!   ack; a push subscription survives, skips nothing and goes back at most
//!   to the last batch it had delivered;
//! * every tiered chunk in the manifest has its object, and every listed
//!   chunk (local or tiered) is readable;
//! * the restart needs no repair (`/healthz` 200);
//! * (cluster) the last acknowledged batch of every idempotent producer,
//!   sent again to either node, is answered as a duplicate at its
//!   acknowledged position: producer tags survive power loss on the owner
//!   and on the copy.
//!
//! Prints `SKIP` and passes only when `/dev/fuse` is missing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use powerfs::{CrashOptions, Mounted, PowerFs, Tear};

use crate::harness::{free_port, TestBroker, WriteReply};
use crate::subscriptions::Receiver;

/// `--flush-interval` of every server here.
const FLUSH_MS: u64 = 200;
/// Allowance on top of `flush_interval` for a loaded 2-core machine: the
/// periodic fdatasync starts late or takes long.
const SLACK_MS: u64 = 400;
const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn fuse_available(test: &str) -> bool {
    if Path::new("/dev/fuse").exists() {
        true
    } else {
        println!("SKIP: {test}: /dev/fuse is missing, power-loss cycles not run");
        false
    }
}

/// `POWER_LOSS_SOAK=N` multiplies the cycles (for long local runs; CI
/// runs 1×).
fn soak() -> u64 {
    std::env::var("POWER_LOSS_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// `POWER_LOSS_SEED=N` changes every scenario's seed (crash options,
/// timing, message sizes).
fn seed_override() -> u64 {
    std::env::var("POWER_LOSS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Deterministic pseudo-random numbers.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound.max(1)
    }
}

/// A powerfs disk: image + mount point.
struct Disk {
    image: PathBuf,
    mnt: PathBuf,
    fs: Option<Mounted>,
}

impl Disk {
    fn new(root: &Path, name: &str) -> Self {
        let (image, mnt) = (root.join(format!("{name}.img")), root.join(name));
        std::fs::create_dir_all(&mnt).unwrap();
        let fs = Some(PowerFs::mount(&image, &mnt).unwrap());
        Self { image, mnt, fs }
    }

    fn crash(&self, opts: CrashOptions) -> powerfs::Stats {
        self.fs.as_ref().unwrap().crash(opts).unwrap()
    }

    /// Unmounts (after the crash and the kill) and mounts the image again.
    fn remount(&mut self) {
        self.fs.take().unwrap().unmount().unwrap();
        self.fs = Some(PowerFs::mount(&self.image, &self.mnt).unwrap());
    }
}

fn crash_options(cycle: u64, rng: &mut Lcg) -> CrashOptions {
    CrashOptions {
        seed: rng.below(u64::MAX),
        tear: [Tear::None, Tear::Byte, Tear::Page][(cycle % 3) as usize],
        keep_pages: [0.0, 0.3, 0.0, 0.7][(cycle % 4) as usize],
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, c| {
        (h ^ u64::from(*c)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A self-checking message: `<id> <pad> <fnv of the rest>\n`.
fn message(id: u64, pad: usize) -> String {
    let core = format!("{id} {}", "p".repeat(pad));
    let sum = fnv(core.as_bytes());
    format!("{core} {sum:016x}\n")
}

/// The id of a whole, intact message (without its newline), or `None`.
fn parse(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let (core, sum) = text.rsplit_once(' ')?;
    if u64::from_str_radix(sum, 16).ok()? != fnv(core.as_bytes()) {
        return None;
    }
    core.split(' ').next()?.parse().ok()
}

fn chunk_index(name: &str) -> (String, u64) {
    let (owner, idx) = name.rsplit_once("-chunk").unwrap();
    (owner.to_owned(), idx.parse().unwrap())
}

/// One acknowledged write.
#[derive(Debug, Clone)]
struct Ack {
    cat: String,
    ids: Vec<u64>,
    chunk: String,
    offset: u64,
    /// Promised to survive power loss (sync, fsync_every_write, replicas).
    durable: bool,
    at: Instant,
    /// An idempotent write: its (producer, seq) and body, to send again.
    tagged: Option<(u64, u64, String)>,
}

#[derive(Default)]
struct Ledger {
    acks: Vec<Ack>,
    /// Group `g` acks on category `s` that got a 200: (chunk, offset).
    group: Vec<(String, u64)>,
}

static IDS: AtomicU64 = AtomicU64::new(1);

/// Writes bodies of 1–8 messages to `url` until `stop`, recording acks.
fn writer(
    url: String,
    cat: &'static str,
    durable: bool,
    seed: u64,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) -> std::thread::JoinHandle<()> {
    tagged_writer(url, cat, durable, seed, None, stop, ledger)
}

/// [`writer`], as idempotent producer `producer` when given (its batches
/// numbered 1, 2, …).
fn tagged_writer(
    url: String,
    cat: &'static str,
    durable: bool,
    seed: u64,
    producer: Option<u64>,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut rng = Lcg(seed);
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            let n = 1 + rng.below(8);
            let ids: Vec<u64> = (0..n)
                .map(|_| IDS.fetch_add(1, Ordering::Relaxed))
                .collect();
            let body: String = ids
                .iter()
                .map(|id| message(*id, rng.below(400) as usize))
                .collect();
            let target = match producer {
                Some(p) => format!("{url}&producer={p}&seq={seq}"),
                None => url.clone(),
            };
            let Ok(r) = http.post(&target).body(body.clone()).send() else {
                return; // the server is gone
            };
            if r.status().as_u16() != 200 {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let at = Instant::now();
            let Ok(w) = r.json::<WriteReply>() else {
                return;
            };
            ledger.lock().unwrap().acks.push(Ack {
                cat: cat.to_owned(),
                ids,
                chunk: w.chunk,
                offset: w.offset,
                durable,
                at,
                tagged: producer.map(|p| (p, seq, body)),
            });
        }
    })
}

/// Sends the last acknowledged batch of every idempotent writer in `acks`
/// again, to every node: each answers it as a duplicate at its
/// acknowledged (chunk, offset) — the producer tags survived the power
/// loss on the owner and on the copy — or, when the writer's next batch
/// was stored but its answer lost in the crash, with a `409` naming that
/// later batch (the tags survived too). Returns (exact duplicates, 409s).
fn check_repeats_are_duplicates(nodes: &[TestBroker], cat: &str, acks: &[Ack]) -> (usize, usize) {
    let (mut exact, mut later) = (0, 0);
    let mut last: HashMap<u64, &Ack> = HashMap::new();
    for a in acks.iter().filter(|a| a.cat == cat) {
        if let Some((p, seq, _)) = &a.tagged {
            let newer = last
                .get(p)
                .is_none_or(|b| b.tagged.as_ref().is_some_and(|t| t.1 < *seq));
            if newer {
                last.insert(*p, a);
            }
        }
    }
    for a in last.values() {
        let Some((p, seq, body)) = &a.tagged else {
            continue;
        };
        for n in nodes {
            let (s, text) = n.post(
                &format!("/write?category={cat}&sync=1&producer={p}&seq={seq}"),
                body.clone(),
            );
            if s == 409 {
                let stored: u64 = text
                    .split("already stored batch ")
                    .nth(1)
                    .and_then(|t| t.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                assert!(stored > *seq, "repeat of producer {p} batch {seq}: {text}");
                later += 1;
                continue;
            }
            assert_eq!(s, 200, "repeat of producer {p} batch {seq}: {text}");
            exact += 1;
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["duplicate"], serde_json::Value::Bool(true), "{text}");
            assert_eq!(
                (v["chunk"].as_str(), v["offset"].as_u64()),
                (Some(a.chunk.as_str()), Some(a.offset)),
                "repeat of producer {p} batch {seq}"
            );
        }
    }
    (exact, later)
}

/// Reads category `s` from group `g`'s position onwards and acks it.
fn group_acker(
    base: String,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut cur: Option<(String, u64)> = None;
        while !stop.load(Ordering::Relaxed) {
            let Ok(r) = http.get(format!("{base}/listChunks?category=s")).send() else {
                return;
            };
            let Ok(list) = r.json::<Vec<crate::harness::ChunkEntry>>() else {
                return;
            };
            let Some(first) = list.first() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let (chunk, off) = cur.clone().unwrap_or((first.name.clone(), 0));
            let Ok(r) = http
                .get(format!(
                    "{base}/read?category=s&chunk={chunk}&off={off}&max_size=65536"
                ))
                .send()
            else {
                return;
            };
            let status = r.status().as_u16();
            let body = r.bytes().unwrap_or_default();
            let done = list
                .iter()
                .find(|c| c.name == chunk)
                .is_none_or(|c| c.complete);
            if status == 200 && !body.is_empty() {
                let end = off + body.len() as u64;
                let Ok(a) = http
                    .post(format!(
                        "{base}/ack?category=s&consumer=g&chunk={chunk}&off={end}"
                    ))
                    .send()
                else {
                    return;
                };
                if a.status().as_u16() == 200 {
                    ledger.lock().unwrap().group.push((chunk.clone(), end));
                }
                cur = Some((chunk, end));
            } else if done || status == 404 {
                let next = list
                    .iter()
                    .find(|c| chunk_index(&c.name).1 > chunk_index(&chunk).1)
                    .map(|c| (c.name.clone(), 0));
                match next {
                    Some(n) => cur = Some(n),
                    None => std::thread::sleep(Duration::from_millis(20)),
                }
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    })
}

/// Every message of `cat` on `b` with its (chunk, offset); panics on a
/// partial or corrupt message or an unreadable chunk.
fn scan(b: &TestBroker, cat: &str) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for c in b.chunks(cat) {
        let mut off = 0u64;
        loop {
            let (s, body) = b.get(&format!(
                "/read?category={cat}&chunk={}&off={off}&max_size=16777216",
                c.name
            ));
            assert_eq!(
                s,
                200,
                "{cat}/{} unreadable at {off}: {}",
                c.name,
                String::from_utf8_lossy(&body)
            );
            if body.is_empty() {
                break;
            }
            for line in body.split_inclusive(|b| *b == b'\n') {
                let id = parse(line.strip_suffix(b"\n").unwrap_or(line)).unwrap_or_else(|| {
                    panic!(
                        "partial or corrupt message readable in {cat}/{} at {off}: {:?}",
                        c.name,
                        String::from_utf8_lossy(&line[..line.len().min(120)])
                    )
                });
                out.push((c.name.clone(), off, id));
                off += line.len() as u64;
            }
        }
    }
    out
}

fn wait_healthy(b: &TestBroker) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.get("/healthz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not healthy 30 s after restart (manual repair needed?):\n{}",
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What all cycles of one scenario have seen.
#[derive(Default)]
struct World {
    /// (node, cat, chunk, offset) → message id: a place never changes hands.
    placed: HashMap<(usize, String, String, u64), u64>,
    /// Highest chunk index known per (cat, owner) before the crash.
    known: HashMap<(String, String), u64>,
    names: HashSet<(String, String)>,
    lost_default: u64,
    checked_acks: u64,
    recovery_crashes: u64,
    shutdown_crashes: u64,
}

impl World {
    fn learn_acks(&mut self, node: usize, acks: &[Ack]) {
        for a in acks {
            self.place(node, &a.cat, &a.chunk, a.offset, a.ids[0]);
            self.learn_name(&a.cat, &a.chunk);
        }
    }

    fn learn_name(&mut self, cat: &str, chunk: &str) {
        let (owner, idx) = chunk_index(chunk);
        let m = self.known.entry((cat.to_owned(), owner)).or_insert(0);
        *m = (*m).max(idx);
        self.names.insert((cat.to_owned(), chunk.to_owned()));
    }

    fn place(&mut self, node: usize, cat: &str, chunk: &str, off: u64, id: u64) {
        let key = (node, cat.to_owned(), chunk.to_owned(), off);
        if let Some(old) = self.placed.insert(key, id) {
            assert_eq!(
                old, id,
                "{cat}/{chunk} offset {off} reused: held message {old}, now {id}"
            );
        }
    }

    /// Checks one node's data after the restart against the acks.
    fn check_node(
        &mut self,
        node: usize,
        b: &TestBroker,
        cats: &[&str],
        acks: &[Ack],
        crash_at: Instant,
        owner_crashed: bool,
    ) {
        let known = self.known.clone();
        let mut found: HashMap<String, HashMap<u64, (String, u64)>> = HashMap::new();
        for cat in cats {
            let msgs = scan(b, cat);
            let by_id = found.entry((*cat).to_owned()).or_default();
            for (chunk, off, id) in msgs {
                if let Some(prev) = by_id.insert(id, (chunk.clone(), off)) {
                    panic!("message {id} readable twice in {cat}: {prev:?} and ({chunk}, {off})");
                }
                self.place(node, cat, &chunk, off, id);
                if !self.names.contains(&((*cat).to_owned(), chunk.clone())) {
                    let (owner, idx) = chunk_index(&chunk);
                    if let Some(max) = known.get(&((*cat).to_owned(), owner)) {
                        assert!(
                            idx > *max,
                            "{cat}/{chunk} is new since the crash but index {idx} <= {max} seen before"
                        );
                    }
                }
            }
        }
        for a in acks {
            let Some(by_id) = found.get(&a.cat) else {
                continue;
            };
            self.checked_acks += 1;
            match by_id.get(&a.ids[0]) {
                Some(at) => {
                    assert_eq!(
                        at,
                        &(a.chunk.clone(), a.offset),
                        "message {} not where its ack said",
                        a.ids[0]
                    );
                    for id in &a.ids {
                        assert!(by_id.contains_key(id), "body of {} split", a.ids[0]);
                    }
                }
                None => {
                    let before = crash_at.saturating_duration_since(a.at);
                    assert!(
                        !a.durable,
                        "durable write lost: {} message(s) {:?} in {}/{} at {}, acknowledged {before:?} before the power loss",
                        a.ids.len(),
                        a.ids,
                        a.cat,
                        a.chunk,
                        a.offset
                    );
                    assert!(
                        owner_crashed && before < Duration::from_millis(FLUSH_MS + SLACK_MS),
                        "default write acknowledged {before:?} before the power loss lost \
                         (flush_interval {FLUSH_MS} ms): {:?} in {}/{} at {}",
                        a.ids,
                        a.cat,
                        a.chunk,
                        a.offset
                    );
                    self.lost_default += 1;
                }
            }
        }
    }
}

/// Group `g`'s stored positions on `s` cover the last acknowledged ack.
fn check_group(b: &TestBroker, group_acks: &[(String, u64)]) {
    let Some((chunk, off)) = group_acks
        .iter()
        .max_by_key(|(c, o)| (chunk_index(c).1, *o))
        .cloned()
    else {
        return;
    };
    let (s, text) = b.get_text("/consumers?category=s");
    assert_eq!(s, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let g = v
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["consumer"] == "g")
        .unwrap_or_else(|| panic!("group g lost after power loss; acked ({chunk}, {off}): {text}"));
    let ok = g["positions"].as_array().unwrap().iter().any(|p| {
        let (pc, po) = (p["chunk"].as_str().unwrap(), p["offset"].as_u64().unwrap());
        chunk_index(pc).1 > chunk_index(&chunk).1 || (pc == chunk && po >= off)
    });
    assert!(
        ok,
        "group g behind its acknowledged ack ({chunk}, {off}) after power loss: {text}"
    );
}

/// The manifest's tiered chunks all have their object in the local store.
fn check_manifest(data: &Path) -> usize {
    let tier = data.join(".chunkbus/tier");
    let Ok(text) = std::fs::read_to_string(data.join(".chunkbus/tier-manifest.log")) else {
        return 0;
    };
    let mut live = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.get(1) {
            Some(&"+") => {
                live.insert((f[2].to_owned(), f[3].to_owned()), ());
            }
            Some(&"-") => {
                live.remove(&(f[2].to_owned(), f[3].to_owned()));
            }
            _ => break,
        }
    }
    for (cat, chunk) in live.keys() {
        assert!(
            tier.join(cat).join(chunk).exists(),
            "tier manifest points at a missing object {cat}/{chunk}"
        );
    }
    live.len()
}

/// Subscription deliveries on `s`: nothing skipped, and after each crash
/// no chunk goes back before the last batch delivered before it.
fn check_subscription(b: &TestBroker, r: &Receiver, before: &[crate::subscriptions::Got]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let chunks = b.chunks("s");
    loop {
        let got = r.accepted();
        let mut cover: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
        for g in &got {
            cover
                .entry(g.chunk.as_str())
                .or_default()
                .push((g.offset, g.next));
        }
        let complete = chunks.iter().all(|c| {
            let mut v = cover.get(c.name.as_str()).cloned().unwrap_or_default();
            v.sort_unstable();
            let mut end = 0;
            for (o, n) in v {
                if o > end {
                    return false; // a gap (maybe not delivered yet)
                }
                end = end.max(n);
            }
            end >= c.size
        });
        if complete {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "subscription skipped or stalled: chunks {chunks:?}, deliveries {:?}",
            got.iter()
                .map(|g| (&g.chunk, g.offset, g.next))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = r.accepted();
    let mut last_before: HashMap<&str, u64> = HashMap::new();
    for g in before {
        last_before.insert(g.chunk.as_str(), g.offset);
    }
    let mut first_after: HashSet<&str> = HashSet::new();
    for g in &got[before.len()..] {
        if first_after.insert(g.chunk.as_str()) {
            if let Some(last) = last_before.get(g.chunk.as_str()) {
                assert!(
                    g.offset >= *last,
                    "subscription went back in {} to {} though batch at {last} was delivered and the next one sent",
                    g.chunk,
                    g.offset
                );
            }
        }
    }
}

/// Single node: sync and default writers, a group acker, a push
/// subscription, small chunks sealing all the time, tiering to the local
/// store (objects and manifest on the same crashing disk).
fn single_node(name: &str, cycles: u64, extra: &[&str], seed: u64) {
    if !fuse_available(name) {
        return;
    }
    let (cycles, seed) = (cycles * soak(), seed ^ seed_override());
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut disk = Disk::new(tmp.path(), "data");
    let fsync_every_write = extra.contains(&"--fsync-every-write");
    let mut args = vec![
        "--max-chunk-size",
        "48KiB",
        "--flush-interval",
        "200ms",
        "--tier-after",
        "1ms",
        "--encryption-key",
        KEY,
    ];
    args.extend_from_slice(extra);
    let mut b = TestBroker::start_in(&disk.mnt, &args);
    let receiver = Receiver::start(Duration::ZERO, Duration::ZERO);
    let (s, msg) = b.post(
        "/subscriptions",
        format!(
            r#"{{"category":"s","url":"http://{}/hook","group":"sub","max_batch_bytes":8192,"headers":{{"x-receiver-token":"s3cret"}}}}"#,
            receiver.addr
        ),
    );
    assert_eq!(s, 201, "{msg}");
    let mut world = World::default();
    let mut rng = Lcg(seed);
    let mut group_acks: Vec<(String, u64)> = Vec::new();
    let mut tiered = 0;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let mut threads = Vec::new();
        for w in 0..2 {
            threads.push(writer(
                b.url("/write?category=s&sync=1"),
                "s",
                true,
                seed ^ (cycle * 16 + w),
                Arc::clone(&stop),
                Arc::clone(&ledger),
            ));
        }
        for w in 2..4 {
            threads.push(writer(
                b.url("/write?category=d"),
                "d",
                fsync_every_write,
                seed ^ (cycle * 16 + w),
                Arc::clone(&stop),
                Arc::clone(&ledger),
            ));
        }
        threads.push(group_acker(
            b.url(""),
            Arc::clone(&stop),
            Arc::clone(&ledger),
        ));
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        // The power cut: snapshot what the receiver had, drop the unsynced
        // state, kill the process, cold remount.
        let delivered_before = receiver.accepted();
        let crash_at = Instant::now();
        if cycle % 4 == 3 {
            // Power loss during a clean shutdown (sealing every open chunk,
            // removing the spare).
            b.signal(libc::SIGTERM);
            std::thread::sleep(Duration::from_millis(rng.below(100)));
            world.shutdown_crashes += 1;
        }
        let stats = disk.crash(crash_options(cycle, &mut rng));
        b.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        disk.remount();
        let mut recovery_crashes = 0;
        if cycle % 3 == 2 {
            // A second power loss while the server recovers from the first
            // (sealing torn chunks, removing empty ones, pulling back).
            b.launch_again();
            std::thread::sleep(Duration::from_millis(rng.below(150)));
            disk.crash(crash_options(cycle + 1, &mut rng));
            b.kill9();
            disk.remount();
            recovery_crashes = 1;
        }
        b.start_again();
        wait_healthy(&b);
        let ledger = std::mem::take(&mut *ledger.lock().unwrap());
        group_acks.extend(ledger.group.iter().cloned());
        world.check_node(0, &b, &["s", "d"], &ledger.acks, crash_at, true);
        world.learn_acks(0, &ledger.acks);
        for cat in ["s", "d"] {
            for c in b.chunks(cat) {
                world.learn_name(cat, &c.name);
            }
        }
        check_group(&b, &group_acks);
        tiered = tiered.max(check_manifest(&disk.mnt));
        check_subscription(&b, &receiver, &delivered_before);
        eprintln!(
            "{name} cycle {cycle}: {} acks, dropped {} unsynced bytes, {} dirs; {recovery_crashes} crash(es) during recovery",
            ledger.acks.len(),
            stats.dropped_bytes,
            stats.dropped_dirs
        );
        world.recovery_crashes += recovery_crashes;
    }
    assert!(
        world.checked_acks > cycles * 10,
        "too little load to mean anything"
    );
    assert!(tiered > 0, "nothing was ever tiered");
    eprintln!(
        "{name}: {cycles} power-loss cycles ({} of them during shutdown, +{} during recovery) in {:?}; {} acks checked, {} default writes lost within flush_interval",
        world.shutdown_crashes,
        world.recovery_crashes,
        started.elapsed(),
        world.checked_acks,
        world.lost_default
    );
    b.kill9();
    drop(b);
    if let Some(fs) = disk.fs.take() {
        fs.unmount().unwrap();
    }
}

#[test]
fn power_loss_single_node_pwrite() {
    single_node("power_loss_single_node_pwrite", 16, &[], 0x5eed_0001);
}

#[test]
fn power_loss_single_node_mmap_append() {
    single_node(
        "power_loss_single_node_mmap_append",
        12,
        &["--append-mode", "mmap"],
        0x5eed_0002,
    );
}

#[test]
fn power_loss_fsync_every_write() {
    single_node(
        "power_loss_fsync_every_write",
        8,
        &["--fsync-every-write"],
        0x5eed_0003,
    );
}

/// Two nodes, each on its own powerfs disk; writes to both with
/// `sync=1&min_sync_replicas=1` and default writes to n1; each cycle one
/// node (alternating) loses power and comes back.
#[test]
fn power_loss_two_node_cluster() {
    const NAME: &str = "power_loss_two_node_cluster";
    if !fuse_available(NAME) {
        return;
    }
    let cycles = 16 * soak();
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut disks = [Disk::new(tmp.path(), "n1"), Disk::new(tmp.path(), "n2")];
    let ports = [free_port(), free_port()];
    let mut nodes: Vec<TestBroker> = (0..2)
        .map(|i| {
            let args: Vec<String> = [
                "--name".to_owned(),
                format!("n{}", i + 1),
                "--listen".to_owned(),
                format!("127.0.0.1:{}", ports[i]),
                "--peers".to_owned(),
                format!("n{}=http://127.0.0.1:{}", 2 - i, ports[1 - i]),
                "--max-chunk-size".to_owned(),
                "48KiB".to_owned(),
                "--flush-interval".to_owned(),
                "200ms".to_owned(),
                "--replication-timeout".to_owned(),
                "2s".to_owned(),
            ]
            .into();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            TestBroker::start_in(&disks[i].mnt, &refs)
        })
        .collect();
    let mut world = World::default();
    let (mut repeats, mut repeats_later) = (0, 0);
    let mut rng = Lcg(0x5eed_0004 ^ seed_override());
    for cycle in 0..cycles {
        let victim = (cycle % 2) as usize;
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let mut threads = Vec::new();
        for (w, node) in [(0u64, 0usize), (1, 0), (2, 1)] {
            // Idempotent producers: a new id per writer and cycle.
            threads.push(tagged_writer(
                nodes[node].url("/write?category=r&sync=1&min_sync_replicas=1"),
                "r",
                true,
                cycle * 16 + w,
                Some(0x1000 + cycle * 16 + w + 1),
                Arc::clone(&stop),
                Arc::clone(&ledger),
            ));
        }
        threads.push(writer(
            nodes[0].url("/write?category=d"),
            "d",
            false,
            cycle * 16 + 3,
            Arc::clone(&stop),
            Arc::clone(&ledger),
        ));
        // Without sync=1: the copy on the peer that kept its power (page
        // cache) is what must bring these back.
        threads.push(writer(
            nodes[0].url("/write?category=m&min_sync_replicas=1"),
            "m",
            true,
            cycle * 16 + 4,
            Arc::clone(&stop),
            Arc::clone(&ledger),
        ));
        std::thread::sleep(Duration::from_millis(300 + rng.below(600)));
        let crash_at = Instant::now();
        disks[victim].crash(crash_options(cycle, &mut rng));
        nodes[victim].kill9();
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        disks[victim].remount();
        nodes[victim].start_again();
        for n in &nodes {
            wait_healthy(n);
        }
        let ledger = std::mem::take(&mut *ledger.lock().unwrap());
        // Both nodes converge on the same chunks of every category.
        for cat in ["r", "d", "m"] {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (a, b) = (nodes[0].chunks(cat), nodes[1].chunks(cat));
                if a == b {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{cat} did not converge after n{} lost power: {a:?} vs {b:?}",
                    victim + 1
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            // Default writes are n1's own: lost only if n1 lost power.
            let owner_crashed = victim == 0;
            world.check_node(
                i,
                n,
                &["r", "d", "m"],
                &ledger.acks,
                crash_at,
                owner_crashed,
            );
        }
        let (exact, later) = check_repeats_are_duplicates(&nodes, "r", &ledger.acks);
        repeats += exact;
        repeats_later += later;
        for i in 0..2 {
            world.learn_acks(i, &ledger.acks);
        }
        for cat in ["r", "d", "m"] {
            for c in nodes[0].chunks(cat) {
                world.learn_name(cat, &c.name);
            }
        }
        eprintln!(
            "{NAME} cycle {cycle}: n{} lost power, {} acks",
            victim + 1,
            ledger.acks.len()
        );
    }
    // Each repeat was checked above (a duplicate at its position, or a
    // 409 naming a later stored batch; never stored again); here only
    // that there were enough to mean something.
    assert!(
        repeats > 0 && repeats + repeats_later >= cycles as usize,
        "too few idempotent repeats: {repeats} duplicates, {repeats_later} 409s"
    );
    eprintln!(
        "{NAME}: {cycles} power-loss cycles in {:?}; {} ack checks, {} default writes lost within flush_interval, {repeats} idempotent repeats answered as duplicates, {repeats_later} as 409 (a later batch stored, its answer lost)",
        started.elapsed(),
        world.checked_acks,
        world.lost_default
    );
    for n in &mut nodes {
        n.kill9();
    }
    drop(nodes);
    for d in &mut disks {
        if let Some(fs) = d.fs.take() {
            fs.unmount().unwrap();
        }
    }
}

/// Regression cycle for the state files a fresh server creates with a plain
/// `open(O_CREAT)`: the tier manifest and the cluster tombstone log. Each
/// record is fdatasync'd, but that covers the file, not its directory
/// entry; before the fix a power loss kept the eviction (its directory was
/// fsynced) and lost the manifest that recorded where the chunk went. In the
/// server `ready.json`'s directory fsync hid this, so the cycle runs the
/// two components directly on powerfs, with nothing else syncing the
/// directory.
#[test]
fn power_loss_keeps_new_tier_manifest_and_tombstone_log() {
    use chunkbus::names::{Category, ChunkName};
    use chunkbus::storage::feed::{ChangeFeed, TOMBSTONES_FILE};
    use chunkbus::tier::manifest::{Manifest, TieredChunk};

    const NAME: &str = "power_loss_keeps_new_tier_manifest_and_tombstone_log";
    if !fuse_available(NAME) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut disk = Disk::new(tmp.path(), "state");
    let state = disk.mnt.join(".chunkbus");
    chunkbus::fsutil::create_dir_durable(&state).unwrap();
    let (cat, chunk) = (
        Category::parse("c").unwrap(),
        ChunkName::parse("node1-chunk000000007").unwrap(),
    );
    let entry = TieredChunk {
        size: 100,
        messages: 3,
        object_len: 80,
        key_id: [7; 8],
        header_digest: Some([9; 32]),
    };
    {
        let m = Manifest::open(&state).unwrap();
        m.add(&cat, &chunk, entry).unwrap();
        let feed = ChangeFeed::open(Some(&state), chunkbus::fsutil::FaultHook::default()).unwrap();
        feed.deleted(&cat, &chunk).unwrap();
    }
    disk.crash(CrashOptions::default());
    disk.remount();
    let m = Manifest::open(&state).unwrap();
    assert_eq!(
        m.get(&cat, &chunk),
        Some(entry),
        "an fdatasync'd manifest line lost with its file"
    );
    let tombstones = std::fs::read_to_string(state.join(TOMBSTONES_FILE)).unwrap_or_default();
    assert!(
        tombstones.contains("c node1-chunk000000007"),
        "an fdatasync'd tombstone lost with its file: {tombstones:?}"
    );
    drop(m);
    if let Some(fs) = disk.fs.take() {
        fs.unmount().unwrap();
    }
}
