//! Uploads: a chunk stays local until its object is read back whole and
//! every frame authenticates (bytes damaged on the way to the store, or by
//! the store, never cost the local copy); a 1 GiB chunk is tiered in
//! bounded memory; many small chunks are tiered as fast as uploads finish,
//! not one batch per second.

use super::{
    broker_pid, rss_kib, s3_args, start, states, tier_status, wait_tiered, Fault, FaultProxy,
    TestS3, KEY,
};
use std::time::{Duration, Instant};

/// About `len` bytes of messages that compress about 2×: each holds 16
/// pseudo-random hex digits.
fn noisy_body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(
            format!(
                "{{\"seed\":{seed},\"v\":\"{x:016x}{:016x}\"}}\n",
                x.rotate_left(29)
            )
            .as_bytes(),
        );
    }
    out
}

fn wait_failures_above(b: &crate::harness::TestBroker, n: u64, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        let f = tier_status(b)["upload_failures"].as_u64().unwrap();
        if f > n {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "no upload failure counted past {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_object_damaged_in_transit_or_in_the_store_keeps_its_chunk_local_until_a_clean_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = TestS3::start(&tmp.path().join("s3"));
    let proxy = FaultProxy::start(s3.addr);
    let dir = tmp.path().join("data");
    let mut args = s3_args(&s3, KEY);
    let at = args.iter().position(|a| a == "--s3-endpoint").unwrap();
    args[at + 1] = proxy.endpoint();
    let at = args.iter().position(|a| a == "--max-chunk-size").unwrap();
    args[at + 1] = "4MiB".into();
    // 1. One byte flipped on the way to the store, in every upload.
    proxy.set(Fault::CorruptUpload);
    let b = start(&dir, &args);
    let mut data = Vec::new();
    for i in 0..9 {
        // ~1 MB bodies: four per chunk, objects of ~2 MB and 4 frames.
        let body = noisy_body(i + 1, 1_000_000);
        let (s, msg) = b.write("u", body.clone());
        assert_eq!(s, 200, "{msg}");
        data.extend_from_slice(&body);
    }
    let sealed: Vec<String> = b
        .chunks("u")
        .into_iter()
        .filter(|c| c.complete)
        .map(|c| c.name)
        .collect();
    assert_eq!(sealed.len(), 2, "{sealed:?}");
    let failures = wait_failures_above(&b, 0, Duration::from_secs(30));
    assert!(
        states(&b).iter().all(|(_, s)| s != "tiered"),
        "{:?}",
        states(&b)
    );
    for name in &sealed {
        assert!(dir.join("u").join(name).exists(), "{name} kept locally");
    }
    // 2. The path is clean, but the store damages the next object it
    //    stores (a middle frame: not the header, index or last frame).
    s3.rot.store(1, std::sync::atomic::Ordering::SeqCst);
    proxy.set(Fault::Pass);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s3.rot.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        assert!(Instant::now() < deadline, "no object stored again");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_failures_above(&b, failures, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.logs().contains("verification after upload") {
        assert!(
            Instant::now() < deadline,
            "the damaged object was not caught by the read-back:\n{}",
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // 3. Clean uploads: both chunks tiered, read back identical.
    wait_tiered(&b, sealed.len(), Duration::from_secs(60));
    for name in &sealed {
        assert!(!dir.join("u").join(name).exists(), "{name} evicted");
    }
    assert_eq!(b.read_all("u"), data);
}

/// One body of `len` bytes of 256-byte messages (a counter, 16 hex digits
/// that change, filler): it compresses about 10×, so the object of a
/// large chunk still needs many parts.
fn large_body(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut n = 0u64;
    while out.len() + 256 <= len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let start = out.len();
        out.extend_from_slice(format!("{n:012} {x:016x} ").as_bytes());
        out.resize(start + 255, b'.');
        out.push(b'\n');
        n += 1;
    }
    out
}

#[test]
fn tiering_a_1gib_chunk_streams_it_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = TestS3::start(&tmp.path().join("s3"));
    let dir = tmp.path().join("data");
    let mut args = s3_args(&s3, KEY);
    let at = args.iter().position(|a| a == "--max-chunk-size").unwrap();
    args[at + 1] = "1GiB".into();
    args.extend(["--tier-cache-bytes".to_owned(), "1MiB".to_owned()]);
    let b = start(&dir, &args);
    let pid = broker_pid(&dir);
    let body = large_body(4 << 20);
    let started = Instant::now();
    // 256 bodies of 4 MiB fill the chunk; the 257th seals it.
    for _ in 0..256 {
        let (s, msg) = b.write("big", body.clone());
        assert_eq!(s, 200, "{msg}");
    }
    let (_, write_peak) = rss_kib(pid);
    let (s, msg) = b.write("big", body.clone());
    assert_eq!(s, 200, "{msg}");
    let written = started.elapsed();
    let chunks = b.chunks("big");
    assert_eq!(chunks[0].size, 1 << 30, "{chunks:?}");
    let mut peak_rss = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !states(&b)
        .iter()
        .any(|(n, s)| n == &chunks[0].name && s == "tiered")
    {
        assert!(
            Instant::now() < deadline,
            "not tiered: {:?}",
            tier_status(&b)
        );
        peak_rss = peak_rss.max(rss_kib(pid).0);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, hwm) = rss_kib(pid);
    eprintln!(
        "1 GiB chunk: written in {written:?}, tiered {:?} later; VmHWM before sealing {write_peak} KiB, \
         peak VmRSS sampled while tiering {peak_rss} KiB, VmHWM after {hwm} KiB",
        started.elapsed() - written
    );
    assert!(!dir.join("big").join(&chunks[0].name).exists());
    assert!(
        hwm <= 65 << 10,
        "peak RSS {hwm} KiB > 64 MiB + the 1 MiB cache"
    );
    // Read back: the first, a middle and the last 16 MiB are identical.
    for off in [0u64, 512 << 20, (1 << 30) - (16 << 20)] {
        let (s, got) = b.get(&format!(
            "/read?category=big&chunk={}&off={off}&max_size=16777216",
            chunks[0].name
        ));
        assert_eq!(s, 200);
        assert_eq!(got.len(), 16 << 20);
        let at = usize::try_from(off).unwrap() % body.len();
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, &c)| c == body[(at + i) % body.len()]),
            "bytes at {off} differ"
        );
    }
}

#[test]
fn many_small_sealed_chunks_are_all_tiered_within_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args: Vec<String> = [
        "--max-chunk-size",
        "64KiB",
        "--tier-after",
        "1ms",
        "--encryption-key",
        KEY,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let b = start(&dir, &args);
    // 301 bodies of exactly 64 KiB: one chunk each, 300 of them sealed.
    let line: String = format!("{}\n", "x".repeat(63));
    let body = line.repeat(1024);
    let started = Instant::now();
    for _ in 0..301 {
        let (s, msg) = b.write("small", body.clone());
        assert_eq!(s, 200, "{msg}");
    }
    let written = Instant::now();
    let deadline = written + Duration::from_secs(15);
    loop {
        let n = tier_status(&b)["tiered_chunks"].as_u64().unwrap();
        if n >= 300 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of 300 small chunks tiered 15 s after the last write"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "300 sealed 64 KiB chunks written in {:?}, all tiered {:?} after the last write ({:.0} chunks/s from the first write)",
        written - started,
        written.elapsed(),
        300.0 / started.elapsed().as_secs_f64()
    );
}
