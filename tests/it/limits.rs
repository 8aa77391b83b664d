//! Resource bounds under hostile and large-scale load, and what a cluster
//! node answers while it starts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::TestCluster;

/// One answer read from a raw connection: (status, head and body text).
/// `None` when the connection closed without an answer.
fn read_answer(s: &mut TcpStream, limit: Duration) -> Option<(u16, String)> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("no answer within {limit:?}");
            }
            Err(_) => break, // reset
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    Some((status, text))
}

/// Sends one request on a new connection and reads the answer.
fn request(addr: SocketAddr, raw: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(raw.as_bytes()).ok()?;
    read_answer(&mut s, Duration::from_secs(10))
}

/// Writes with `min_sync_replicas=1` sent to a cluster node while it
/// restarts get `503` (retryable, not written) until the node is up, then
/// `200`; never the permanent-looking `400 … 0 peers`.
#[test]
fn min_sync_replicas_writes_get_503_not_400_while_a_node_starts() {
    let mut c = TestCluster::start(2, &["--replication-timeout", "3s"]);
    let addr = c.nodes[0].addr;
    let req = "POST /write?category=h&min_sync_replicas=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nm\n";
    assert_eq!(request(addr, req).unwrap().0, 200);
    // n2 stopped: n1's crash pull-back waits for it (replication_timeout),
    // which keeps n1 starting long enough to be hammered.
    c.nodes[1].signal(libc::SIGSTOP);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammers: Vec<_> = (0..2)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some((status, text)) = request(addr, req) {
                        seen.push((status, text));
                    }
                }
                seen
            })
        })
        .collect();
    c.nodes[0].restart();
    c.nodes[1].signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(20);
    while request(addr, req).map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "writes did not succeed again");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen: Vec<(u16, String)> = hammers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let starting: Vec<&(u16, String)> = seen
        .iter()
        .filter(|(_, t)| t.contains("recovering"))
        .collect();
    assert!(
        !starting.is_empty(),
        "never reached n1 while it started ({} answers)",
        seen.len()
    );
    for (status, text) in &seen {
        assert!(matches!(status, 200 | 503), "{text}");
        if *status == 503 && text.contains("recovering") {
            assert!(text.contains("chunkbus-written: false"), "{text}");
        }
    }
}
