//! kill -9 under write load: every acknowledged write survives, no partial
//! message is ever readable, nothing is duplicated, and no (chunk, offset)
//! is ever handed out twice.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{TestBroker, WriteReply};

/// Deterministic pseudo-random numbers (no extra dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn kill_cycles(sync: bool, cycles: u32, extra: &[&str]) {
    kill_cycles_sized(sync, cycles, extra, 90);
}

/// `pad`: longest padding per message; bodies hold up to 20 messages, so
/// a pad of 9000 makes bodies above the inline-copy limit (64 KiB).
fn kill_cycles_sized(sync: bool, cycles: u32, extra: &[&str], pad: u64) {
    let mut args = extra.to_vec();
    if !args.contains(&"--max-chunk-size") {
        args.extend(["--max-chunk-size", "256KiB"]);
    }
    let mut b = TestBroker::start(&args);
    let acked: Arc<Mutex<Vec<(String, String, u64)>>> = Arc::default(); // (message, chunk, offset)
    let mut handed_out = HashSet::new();
    let mut rng = Lcg(0x5eed);
    let mut seq = 0u64;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..4u64 {
            let (http, url, stop, acked) = (
                b.http.clone(),
                b.url(&format!("/write?category=crash&sync={}", u8::from(sync))),
                Arc::clone(&stop),
                Arc::clone(&acked),
            );
            let base = seq + w * 1_000_000;
            writers.push(std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // 1-20 messages of varied length per body.
                    let n = 1 + (i % 20);
                    let msgs: Vec<String> = (0..n)
                        .map(|k| {
                            format!(
                                "c{cycle}-w{w}-{}-{}",
                                base + i * 100 + k,
                                "p".repeat(((i * 7919 + k * 104_729) % pad) as usize)
                            )
                        })
                        .collect();
                    let body: String = msgs.iter().map(|m| format!("{m}\n")).collect();
                    i += 1;
                    let Ok(r) = http.post(&url).body(body).send() else {
                        break;
                    };
                    if r.status().as_u16() != 200 {
                        break;
                    }
                    let Ok(reply) = r
                        .bytes()
                        .map_err(|_| ())
                        .and_then(|b| serde_json::from_slice::<WriteReply>(&b).map_err(|_| ()))
                    else {
                        break;
                    };
                    let mut a = acked.lock().unwrap();
                    for m in msgs {
                        a.push((m, reply.chunk.clone(), reply.offset));
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(50 + rng.next(250)));
        b.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        seq += 10_000_000;
        b.start_again();

        // Verify: every acked message exactly once, every line well-formed.
        let data = b.read_all("crash");
        let text = String::from_utf8(data).expect("utf8");
        assert!(text.is_empty() || text.ends_with('\n'));
        let mut count: HashMap<&str, u32> = HashMap::new();
        for line in text.lines() {
            assert!(well_formed(line), "malformed (partial?) line {line:?}");
            *count.entry(line).or_default() += 1;
        }
        assert!(count.values().all(|&c| c == 1), "a message appears twice");
        let a = acked.lock().unwrap();
        for (m, chunk, off) in a.iter() {
            assert_eq!(
                count.get(m.as_str()),
                Some(&1),
                "acked message {m} lost after kill -9 (cycle {cycle})"
            );
            handed_out.insert((chunk.clone(), *off));
        }
        let chunks = b.chunks("crash");
        assert!(
            chunks.iter().all(|c| c.complete),
            "every chunk open before the crash is sealed: {chunks:?}"
        );
    }
    let a = acked.lock().unwrap();
    let distinct_bodies: HashSet<_> = a.iter().map(|(_, c, o)| (c, o)).collect();
    assert_eq!(distinct_bodies.len(), handed_out.len());
    assert!(a.len() > 100, "the load actually ran ({} acked)", a.len());
}

/// `c<digits>-w<digits>-<digits>-p*`: anything else is a torn message.
fn well_formed(line: &str) -> bool {
    let parts: Vec<&str> = line.split('-').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    parts.len() == 4
        && parts[0].strip_prefix('c').is_some_and(digits)
        && parts[1].strip_prefix('w').is_some_and(digits)
        && digits(parts[2])
        && parts[3].bytes().all(|b| b == b'p')
}

#[test]
fn kill9_with_sync_writes_loses_nothing_acknowledged() {
    kill_cycles(true, 20, &[]);
}

#[test]
fn kill9_without_sync_loses_nothing_acknowledged() {
    kill_cycles(false, 10, &[]);
}

#[test]
fn kill9_with_large_bodies_copied_in_parallel() {
    kill_cycles_sized(false, 6, &["--max-chunk-size", "1MiB"], 9000);
}

#[test]
fn kill9_with_mmap_appends() {
    kill_cycles_sized(true, 5, &["--append-mode", "mmap"], 9000);
}

#[test]
fn kill9_with_fsync_every_write() {
    kill_cycles(false, 3, &["--fsync-every-write"]);
}

#[test]
fn restart_time_is_short() {
    let mut b = TestBroker::start(&["--max-chunk-size", "4096"]);
    for _ in 0..50 {
        b.write("many", "y".repeat(4000) + "\n");
    }
    b.kill9();
    let t = Instant::now();
    b.start_again();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(b.chunks("many").len(), 50);
}
