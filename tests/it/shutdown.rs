//! SIGTERM: long polls return 200 empty at once, in-flight work finishes,
//! open chunks are sealed and trimmed, the process exits 0.

use std::time::{Duration, Instant};

use crate::harness::TestBroker;

#[test]
fn sigterm_releases_long_polls_seals_and_exits_zero() {
    let mut b = TestBroker::start(&[]);
    b.write("s", "one\n");
    let url = b.url("/read?category=s&chunk=node1-chunk000000000&off=4&max_size=100&wait_ms=60000");
    let client = b.http.clone();
    let poll = std::thread::spawn(move || {
        let r = client.get(url).send().unwrap();
        (r.status().as_u16(), r.bytes().unwrap().len())
    });
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let status = b.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}: {}", b.logs());
    assert_eq!(
        poll.join().unwrap(),
        (200, 0),
        "long poll released with an empty 200"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "long poll did not hold shutdown: {:?}",
        t.elapsed()
    );

    let chunk = b.data_dir().join("s").join("node1-chunk000000000");
    assert_eq!(
        std::fs::metadata(&chunk).unwrap().len(),
        4,
        "sealed chunk trimmed to its messages"
    );
    let leftovers: Vec<_> = std::fs::read_dir(b.data_dir().join("s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("node1-chunk000000000"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "pre-created spare chunk removed: {leftovers:?}"
    );
    assert!(!b.data_dir().join(".chunkbus/ready.json").exists());

    b.start_again();
    let chunks = b.chunks("s");
    assert_eq!(chunks.len(), 1);
    assert!(chunks[0].complete);
    assert!(
        b.logs()
            .matches("sealed chunk left open by a crash")
            .count()
            == 0,
        "clean shutdown needs no recovery"
    );
}
