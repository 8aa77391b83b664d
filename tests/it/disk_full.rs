//! Disk full on a real (tiny) tmpfs: 507, reads keep working, no crash, and
//! writes resume once space is freed. Needs root to mount; skips (with a
//! printed reason) otherwise.

use std::time::{Duration, Instant};

use crate::harness::TestBroker;

#[test]
fn disk_full_gives_507_and_recovers_when_space_frees() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mount) = crate::harness::Tmpfs::mount(&tmp.path().join("mnt"), "20m") else {
        return;
    };
    let data = mount.0.join("data");
    let mut b = TestBroker::start_in(&data, &["--max-chunk-size", "4MiB"]);
    let body = "z".repeat(1023) + "\n";
    let body = body.repeat(1024); // 1 MiB
    let mut ok = 0;
    let mut full = false;
    for _ in 0..40 {
        let (s, msg) = b.write("fill", body.clone());
        match s {
            200 => ok += 1,
            507 => {
                assert!(msg.contains("disk full"), "{msg}");
                full = true;
                break;
            }
            other => panic!("unexpected {other}: {msg}"),
        }
    }
    assert!(full, "never hit 507 after {ok} MiB");
    assert!(ok >= 8, "wrote {ok} MiB before full");
    assert_eq!(b.get_text("/healthz").0, 200, "still serving");
    assert_eq!(b.read_all("fill").len(), ok * (1 << 20), "reads still work");
    assert_eq!(b.write("fill", body.clone()).0, 507, "still full");

    // Free space by acking sealed chunks; writes must resume.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = 0;
    for c in b.chunks("fill").into_iter().filter(|c| c.complete) {
        assert_eq!(
            b.get_text(&format!(
                "/ack?category=fill&chunk={}&size={}",
                c.name, c.size
            ))
            .0,
            200
        );
        acked += c.size as usize;
    }
    assert!(acked > 0, "some chunks were sealed");
    loop {
        let (s, msg) = b.write("fill", body.clone());
        if s == 200 {
            break;
        }
        assert_eq!(s, 507, "{msg}");
        assert!(
            Instant::now() < deadline,
            "writes did not resume after freeing space"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let remaining = b.read_all("fill").len();
    b.restart();
    assert_eq!(
        b.read_all("fill").len(),
        remaining,
        "restart after disk full loses nothing"
    );
    drop(b);
}
