//! Many categories: a category must cost what it holds, not two
//! preallocated 64 MiB chunks; an idle category must hold no open files
//! beyond a bounded cache; the number of categories is limited; and disk
//! full with chunks allocated in steps still gives `507`, never `SIGBUS`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::TestBroker;

/// Allocated bytes (`st_blocks * 512`) of every file and directory under
/// `dir`, as `du` counts them.
fn allocated_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

/// Writes one small message to each of `names`, from `threads` threads
/// with one keep-alive connection each; panics on any status but 200.
fn write_one_each(b: &TestBroker, names: &[String], threads: usize) {
    std::thread::scope(|s| {
        for part in names.chunks(names.len().div_ceil(threads).max(1)) {
            let url = b.url("/write?category=");
            s.spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                for c in part {
                    let r = http
                        .post(format!("{url}{c}"))
                        .body(format!("m-{c}\n"))
                        .send()
                        .unwrap();
                    let status = r.status().as_u16();
                    assert_eq!(status, 200, "{c}: {}", r.text().unwrap_or_default());
                }
            });
        }
    });
}

/// 10,000 categories of one small message each stay within 1 GiB of
/// allocated disk (100 KiB each), and the server's open file descriptors
/// stay bounded by its chunk cache, not by the number of categories.
#[test]
fn many_categories_cost_disk_and_fds_by_their_data_not_their_number() {
    const CATEGORIES: usize = 10_000;
    const PER_CATEGORY: u64 = 100 << 10;
    const CACHE: usize = 64;
    let cache = CACHE.to_string();
    let b = TestBroker::start(&["--max-open-chunks", &cache]);
    let pid = b.pid();
    let baseline = allocated_bytes(b.data_dir());
    let fds_before = open_fds(pid);
    let names: Vec<String> = (0..CATEGORIES).map(|i| format!("cat{i:05}")).collect();

    // A first few categories, checked before writing the rest: a build that
    // preallocates per category would otherwise fill the machine's disk.
    let t = Instant::now();
    let (first, rest) = names.split_at(20);
    write_one_each(&b, first, 4);
    let used = allocated_bytes(b.data_dir()) - baseline;
    assert!(
        used <= first.len() as u64 * PER_CATEGORY,
        "{} categories of one message use {used} bytes of disk",
        first.len()
    );
    write_one_each(&b, rest, 8);
    let wrote = t.elapsed();

    let used = allocated_bytes(b.data_dir()) - baseline;
    let fds = open_fds(pid);
    eprintln!(
        "{CATEGORIES} categories written in {wrote:?}: {used} bytes allocated ({} per category), {fds} fds open ({fds_before} before)",
        used / CATEGORIES as u64
    );
    assert!(
        used <= CATEGORIES as u64 * PER_CATEGORY,
        "{CATEGORIES} categories of one message use {used} bytes of disk"
    );
    // Each cached open chunk holds its data and index files; the rest is
    // the listener, connections being closed, logs and state files.
    assert!(
        fds <= fds_before + 2 * CACHE + 64,
        "{fds} fds open with a cache of {CACHE} chunks ({fds_before} at start)"
    );

    // Every category is still there and readable, and writable again.
    let (s, body) = b.get_text("/listCategories");
    assert_eq!(s, 200);
    let listed: Vec<String> = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.len(), CATEGORIES);
    for c in [&names[0], &names[CATEGORIES / 2], &names[CATEGORIES - 1]] {
        assert_eq!(b.read_all(c), format!("m-{c}\n").into_bytes());
        assert_eq!(b.write(c, "again\n").0, 200);
        assert_eq!(b.read_all(c), format!("m-{c}\nagain\n").into_bytes());
    }
    assert!(open_fds(pid) <= fds_before + 2 * CACHE + 64);
}

/// A write that would create a category past `--max-categories` is a
/// `409` saying so: nothing is stored and no directory or state file is
/// created; existing categories keep working, also after a restart.
#[test]
fn writes_past_max_categories_get_409_and_create_nothing() {
    let mut b = TestBroker::start(&["--max-categories", "3"]);
    for c in ["a", "b", "c"] {
        assert_eq!(b.write(c, "x\n").0, 200, "{c}");
    }
    let refused = |b: &TestBroker| {
        let (s, msg) = b.write("d", "y\n".repeat(100_000));
        assert_eq!(s, 409, "{msg}");
        assert!(msg.contains("max_categories") && msg.contains('3'), "{msg}");
        assert!(!b.data_dir().join("d").exists(), "directory created");
        assert!(
            !b.data_dir().join(".chunkbus/next-chunk/d").exists(),
            "chunk counter created"
        );
        assert_eq!(b.chunks("d").len(), 0);
    };
    refused(&b);
    assert_eq!(
        b.write("a", "z\n").0,
        200,
        "existing categories still take writes"
    );
    assert_eq!(b.read_all("a"), b"x\nz\n");
    let (_, listed) = b.get_text("/listCategories");
    let listed: Vec<String> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed, ["a", "b", "c"]);

    b.restart();
    refused(&b);
    assert_eq!(b.write("c", "w\n").0, 200);
    assert_eq!(b.read_all("c"), b"x\nw\n");
}

/// Writes several categories from several threads, round robin, through
/// a cache of 2 open chunks: every write parks another category's chunk
/// (files closed, allocation trimmed) and reopens its own. After kill -9
/// every acknowledged write is there, in order, exactly once; in both
/// append modes.
#[test]
fn parked_chunks_reopen_in_place_and_survive_kill9() {
    for mode in ["write", "mmap"] {
        let mut b = TestBroker::start(&[
            "--max-open-chunks",
            "2",
            "--append-mode",
            mode,
            "--max-chunk-size",
            "64KiB",
        ]);
        let expected: Vec<(String, Vec<u8>)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..3)
                .map(|t| {
                    let url = b.url("/write?sync=1&category=");
                    s.spawn(move || {
                        let http = reqwest::blocking::Client::new();
                        let cats: Vec<String> =
                            (0..3).map(|k| format!("{mode}-t{t}-c{k}")).collect();
                        let mut acked = vec![Vec::new(); cats.len()];
                        for i in 0..60 {
                            let k = i % cats.len();
                            let body = format!("{}-{i}-{}\n", cats[k], "p".repeat(i * 37 % 900));
                            let r = http
                                .post(format!("{url}{}", cats[k]))
                                .body(body.clone())
                                .send()
                                .unwrap();
                            assert_eq!(
                                r.status().as_u16(),
                                200,
                                "{}",
                                r.text().unwrap_or_default()
                            );
                            acked[k].extend_from_slice(body.as_bytes());
                        }
                        cats.into_iter().zip(acked).collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        for (c, want) in &expected {
            assert_eq!(&b.read_all(c), want, "{mode}: {c} before the crash");
        }
        // Parked chunks hold exactly their bytes; only the cached ones
        // (and any still being parked) have blocks allocated ahead.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ahead: Vec<String> = expected
                .iter()
                .flat_map(|(c, _)| b.chunks(c).into_iter().map(move |ch| (c, ch)))
                .filter(|(c, ch)| {
                    let len = std::fs::metadata(b.data_dir().join(c).join(&ch.name))
                        .map_or(0, |m| m.len());
                    len > ch.size
                })
                .map(|(c, ch)| format!("{c}/{}", ch.name))
                .collect();
            if ahead.len() <= 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: open chunks with allocation ahead: {ahead:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b.restart();
        for (c, want) in &expected {
            assert_eq!(&b.read_all(c), want, "{mode}: {c} after kill -9");
            assert_eq!(b.write(c, "after\n").0, 200);
        }
    }
}

/// Chunks allocated in steps ahead of the writer on a disk that fills up:
/// concurrent writers to several categories get `200` or `507` (never
/// another error, never a `SIGBUS`), in both append modes; everything
/// acknowledged reads back, also after a restart; writes resume once acked
/// chunks free space.
#[test]
fn disk_full_with_step_allocation_is_507_never_sigbus() {
    for mode in ["mmap", "write"] {
        let tmp = tempfile::tempdir().unwrap();
        let Some(mount) = crate::harness::Tmpfs::mount(&tmp.path().join("mnt"), "24m") else {
            return;
        };
        let data = mount.0.join("data");
        let mut b =
            TestBroker::start_in(&data, &["--append-mode", mode, "--max-chunk-size", "2MiB"]);
        let cats: Vec<String> = (0..6).map(|k| format!("full{k}")).collect();
        let acked: Vec<Vec<u8>> = std::thread::scope(|s| {
            let workers: Vec<_> = cats
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let url = b.url(&format!("/write?category={c}"));
                    s.spawn(move || {
                        let http = reqwest::blocking::Client::new();
                        let mut acked = Vec::new();
                        let mut full = 0;
                        for i in 0..2_000usize {
                            // 20 KiB … 420 KiB bodies: steps are crossed mid-chunk.
                            let n = 20 + (i * 131 + k * 57) % 400;
                            let body = format!("{c}-{i}-{}\n", "f".repeat(n * 1024));
                            let r = http.post(&url).body(body.clone()).send().unwrap();
                            match r.status().as_u16() {
                                200 => acked.extend_from_slice(body.as_bytes()),
                                507 => {
                                    full += 1;
                                    if full == 5 {
                                        break;
                                    }
                                }
                                other => panic!("{c}: {other} {}", r.text().unwrap_or_default()),
                            }
                        }
                        assert_eq!(full, 5, "{c}: never full");
                        acked
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(b.get_text("/healthz").0, 200, "{mode}: still serving");
        for (c, want) in cats.iter().zip(&acked) {
            assert_eq!(&b.read_all(c), want, "{mode}: {c} reads back");
        }

        // Free space by acking sealed chunks; writes resume.
        for c in &cats {
            for ch in b.chunks(c).into_iter().filter(|ch| ch.complete) {
                let ack = format!("/ack?category={c}&chunk={}&size={}", ch.name, ch.size);
                assert_eq!(b.get_text(&ack).0, 200);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.write(&cats[0], "resumed\n").0 != 200 {
            assert!(Instant::now() < deadline, "{mode}: writes did not resume");
            std::thread::sleep(Duration::from_millis(50));
        }
        let remaining: Vec<Vec<u8>> = cats.iter().map(|c| b.read_all(c)).collect();
        b.restart();
        for (c, want) in cats.iter().zip(&remaining) {
            assert_eq!(&b.read_all(c), want, "{mode}: {c} after restart");
        }
        drop(b);
    }
}
