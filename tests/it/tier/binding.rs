//! A tiered object is bound to its chunk: an object copied over another
//! chunk's (in another category or the same one) is a `502`, never the
//! other chunk's bytes; a planted header claiming huge lengths is a `502`
//! without a large allocation, at start (index prefetch) or on a read;
//! objects written by format 1 stay readable and are upgraded to format 2.

use super::{broker_pid, rss_kib, s3_args, start, states, tier_status, wait_tiered, TestS3, KEY};
use std::path::Path;
use std::time::{Duration, Instant};

/// A body of 400 fixed-width messages: every chunk of every category
/// written with these has the same size and message count.
fn fixed_body(category: &str, batch: u32) -> String {
    (0..400)
        .map(|j| format!("{{\"cat\":\"{category}\",\"batch\":{batch:04},\"n\":{j:04}}}\n"))
        .collect()
}

/// The whole of one (small) chunk.
fn read_chunk(b: &crate::harness::TestBroker, category: &str, chunk: &str) -> (u16, Vec<u8>) {
    b.get(&format!(
        "/read?category={category}&chunk={chunk}&off=0&max_size=16777216"
    ))
}

#[test]
fn an_object_copied_over_another_chunks_object_is_refused_never_served_as_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = TestS3::start(&tmp.path().join("s3"));
    let dir = tmp.path().join("data");
    let args = s3_args(&s3, KEY);
    let mut b = start(&dir, &args);
    // 13 bodies of 13,600 bytes per category: three sealed 64 KiB chunks
    // each, all of identical size and message count.
    for batch in 0..13 {
        for cat in ["ca", "cb"] {
            let (s, msg) = b.write(cat, fixed_body(cat, batch));
            assert_eq!(s, 200, "{msg}");
        }
    }
    wait_tiered(&b, 6, Duration::from_secs(30));
    let names: Vec<String> = b.chunks("cb").into_iter().map(|c| c.name).collect();
    let (c0, c1, c2) = (&names[0], &names[1], &names[2]);
    let mut before = std::collections::HashMap::new();
    for (cat, chunk) in [("ca", c0), ("cb", c0), ("cb", c1), ("cb", c2)] {
        let (s, bytes) = read_chunk(&b, cat, chunk);
        assert_eq!(s, 200);
        before.insert((cat, chunk.clone()), bytes);
    }
    assert_eq!(
        before[&("ca", c0.clone())].len(),
        before[&("cb", c0.clone())].len(),
        "same sizes: only the binding can tell them apart"
    );
    b.terminate(Duration::from_secs(10));
    // Someone with write access to the bucket copies objects over others:
    // across categories (ca/c0 → cb/c0), and within one (cb/c2 → cb/c1).
    std::fs::copy(s3.object("ca", c0), s3.object("cb", c0)).unwrap();
    std::fs::copy(s3.object("cb", c2), s3.object("cb", c1)).unwrap();
    let b = start(&dir, &args);
    for (chunk, other) in [(c0, ("ca", c0)), (c1, ("cb", c2))] {
        let (s, body) = read_chunk(&b, "cb", chunk);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(s, 502, "cb/{chunk} answered {s}: {text}");
        assert_ne!(body, before[&(other.0, other.1.clone())]);
        assert!(!text.contains("\"cat\""), "cb/{chunk}: {text}");
    }
    // The objects that were not touched still read back identical.
    for (cat, chunk) in [("ca", c0), ("cb", c2)] {
        let (s, bytes) = read_chunk(&b, cat, chunk);
        assert_eq!(s, 200, "{cat}/{chunk}");
        assert_eq!(bytes, before[&(cat, chunk.clone())], "{cat}/{chunk}");
    }
    assert!(tier_status(&b)["read_errors"].as_u64().unwrap() >= 2);
}

/// An object header (format `version`) that claims a 16 TiB chunk of
/// 2^32 − 1 frames: a 64 GiB frame index (format 1) or a 4 GiB records
/// section (format 2), followed by 1 KiB of nothing.
fn planted_header(version: u32, key_id: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 80];
    h[0..8].copy_from_slice(b"CBTIER\0\x01");
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[16..24].copy_from_slice(key_id);
    h[24..40].copy_from_slice(&[0x5a; 16]);
    h[40..48].copy_from_slice(&(4096 * u64::from(u32::MAX)).to_le_bytes());
    h[48..52].copy_from_slice(&4096u32.to_le_bytes());
    h[52..56].copy_from_slice(&u32::MAX.to_le_bytes());
    if version == 1 {
        // records at 80, none; the index right after them, 64 GiB long.
        h[56..64].copy_from_slice(&80u64.to_le_bytes());
        h[72..80].copy_from_slice(&112u64.to_le_bytes());
    } else {
        h[56..60].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    h.extend_from_slice(&[0u8; 1024]);
    h
}

#[test]
fn a_planted_object_header_claiming_huge_lengths_is_a_502_without_a_large_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args: Vec<String> = [
        "--max-chunk-size",
        "64KiB",
        "--tier-after",
        "1ms",
        "--tier-cache-bytes",
        "1MiB",
        "--encryption-key",
        KEY,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut b = start(&dir, &args);
    super::produce(&b, "p", 12);
    wait_tiered(&b, 3, Duration::from_secs(30));
    let tiered: Vec<String> = states(&b)
        .into_iter()
        .filter(|(_, s)| s == "tiered")
        .map(|(n, _)| n)
        .collect();
    let (s, intact) = read_chunk(&b, "p", &tiered[2]);
    assert_eq!(s, 200);
    b.terminate(Duration::from_secs(10));
    let object = |chunk: &str| dir.join(".chunkbus/tier/p").join(chunk);
    let key_id = std::fs::read(object(&tiered[0])).unwrap()[16..24].to_vec();
    std::fs::write(object(&tiered[0]), planted_header(1, &key_id)).unwrap();
    std::fs::write(object(&tiered[1]), planted_header(2, &key_id)).unwrap();
    // At start the broker prefetches the newest objects' headers and
    // indexes: the planted ones must neither crash it nor make it allocate.
    let b = start(&dir, &args);
    let pid = broker_pid(&dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.logs().contains("could not prefetch") {
        assert!(
            Instant::now() < deadline,
            "no prefetch failure logged:\n{}",
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for chunk in &tiered[..2] {
        let (s, body) = read_chunk(&b, "p", chunk);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(s, 502, "{chunk}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
    }
    let (s, bytes) = read_chunk(&b, "p", &tiered[2]);
    assert_eq!(s, 200);
    assert_eq!(bytes, intact);
    let (rss, hwm) = rss_kib(pid);
    eprintln!("broker after planted headers: VmRSS {rss} KiB, VmHWM {hwm} KiB");
    assert!(
        hwm <= 65 << 10,
        "peak RSS {hwm} KiB > 64 MiB + the 1 MiB cache: a planted header made the broker allocate"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The format version in an object's header.
fn object_version(path: &Path) -> u32 {
    let b = std::fs::read(path).unwrap();
    u32::from_le_bytes(b[8..12].try_into().unwrap())
}

#[test]
fn objects_of_format_1_stay_readable_and_are_upgraded_to_bound_format_2_objects() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tier-v1");
    let expected = std::fs::read(fixture.join("expected.txt")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(&fixture.join("data"), &dir);
    let objects = dir.join(".chunkbus/tier/legacy");
    let chunks: Vec<String> = (0..4).map(|i| format!("node1-chunk00000000{i}")).collect();
    for c in &chunks[..3] {
        assert_eq!(object_version(&objects.join(c)), 1, "fixture {c}");
    }
    let args: Vec<String> = [
        "--max-chunk-size",
        "16KiB",
        "--tier-after",
        "1ms",
        "--encryption-key",
        KEY,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut b = start(&dir, &args);
    assert_eq!(b.read_all("legacy"), expected, "format-1 objects read");
    // Every object ends up in format 2, the local chunk included.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !chunks
        .iter()
        .all(|c| objects.join(c).exists() && object_version(&objects.join(c)) == 2)
    {
        assert!(
            Instant::now() < deadline,
            "not upgraded: {:?}\n{}",
            chunks
                .iter()
                .map(|c| objects
                    .join(c)
                    .exists()
                    .then(|| object_version(&objects.join(c))))
                .collect::<Vec<_>>(),
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_tiered(&b, 4, Duration::from_secs(10));
    assert_eq!(b.read_all("legacy"), expected, "after the upgrade");
    b.terminate(Duration::from_secs(10));
    // Once upgraded, the objects are bound: a copy of one over another is
    // refused, and the rest read back identical after a restart.
    std::fs::copy(objects.join(&chunks[0]), objects.join(&chunks[1])).unwrap();
    let b = start(&dir, &args);
    let (s, body) = read_chunk(&b, "legacy", &chunks[1]);
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&body));
    for (i, c) in [0, 2, 3].into_iter().map(|i| (i, &chunks[i])) {
        let (s, body) = read_chunk(&b, "legacy", c);
        assert_eq!(s, 200);
        assert_eq!(body, expected[i * 15300..(i + 1) * 15300], "{c}");
    }
}
