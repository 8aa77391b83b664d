//! Resource bounds under hostile and large-scale load: bodies announced but
//! never sent, stalled bodies, connection floods, the open-file limit, and
//! what a cluster node answers while it starts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::{TestBroker, TestCluster};

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

fn write_request(category: &str, body: &str, close: bool) -> String {
    format!(
        "POST /write?category={category} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// Connections that announce a 4 MiB body and send nothing.
fn announce_bodies(addr: SocketAddr, n: usize, path: &str) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(
                s,
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n"
            )
            .unwrap();
            s
        })
        .collect()
}

/// 1,000 connections that announce a 4 MiB body (16 × the body budget of
/// 256 MiB) and then send nothing hold no memory: other writers are
/// answered at once; the silent bodies get `408` after
/// `body_idle_timeout`, marked not written, and nothing of them is stored.
#[test]
fn announced_but_unsent_bodies_do_not_stall_other_writers() {
    let limit = crate::harness::raise_fd_limit();
    let n = 1_000usize.min((limit as usize).saturating_sub(1_000) / 2);
    assert!(n >= 100, "open-file limit {limit} too low for this test");
    let b = TestBroker::start(&["--body-idle-timeout", "3s"]);
    let opened = Instant::now();
    let mut idle = announce_bodies(b.addr, n, "/write?category=idle");
    for i in 0..5 {
        let t = Instant::now();
        let (s, msg) = b.write("ok", format!("m{i}\n"));
        assert_eq!(s, 200, "{msg}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "write {i} took {:?} with {n} silent 4 MiB bodies open",
            t.elapsed()
        );
    }
    // Not timed out early: nothing has come back on the silent bodies yet.
    let last = idle.last_mut().unwrap();
    last.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(last.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "answered before body_idle_timeout ({:?} after opening)",
        opened.elapsed()
    );
    last.set_nonblocking(false).unwrap();
    // After the idle timeout every one of them is answered 408 and closed.
    for (i, s) in idle.iter_mut().enumerate() {
        let (status, text) = read_answer(s, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("silent body {i} closed without an answer"));
        assert_eq!(status, 408, "{text}");
        assert!(text.contains("chunkbus-written: false"), "{text}");
        assert!(text.contains("body_idle_timeout"), "{text}");
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0, "closed after 408");
    }
    assert!(opened.elapsed() >= Duration::from_secs(3));
    assert!(b.chunks("idle").is_empty());
    assert_eq!(b.read_all("ok").len(), 15);
}

/// A body that stops halfway, or a subscription or peer poll body that
/// never comes, is answered `408` after `body_idle_timeout`; bodies larger
/// than allowed are refused before they are read.
#[test]
fn stalled_write_subscription_and_peer_poll_bodies_get_408() {
    let b = TestBroker::start(&[
        "--body-idle-timeout",
        "1s",
        "--name",
        "n1",
        // A peer that is never started: peer endpoints are on, nothing is
        // ever sent to it but refused connections on 127.0.0.1.
        "--peers",
        &format!("n2=http://127.0.0.1:{}", crate::harness::free_port()),
    ]);
    // Half a write body, then silence.
    let mut half = TcpStream::connect(b.addr).unwrap();
    write!(
        half,
        "POST /write?category=half HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}",
        "x".repeat(50)
    )
    .unwrap();
    let silent: Vec<TcpStream> = ["/subscriptions", "/peer/changes"]
        .iter()
        .map(|path| {
            let mut s = TcpStream::connect(b.addr).unwrap();
            write!(
                s,
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
            )
            .unwrap();
            s
        })
        .collect();
    let t = Instant::now();
    for mut s in std::iter::once(half).chain(silent) {
        let (status, text) = read_answer(&mut s, Duration::from_secs(10)).expect("answer");
        assert_eq!(status, 408, "{text}");
        assert!(text.contains("body_idle_timeout"), "{text}");
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(b.chunks("half").is_empty());
    // Oversize: refused at once, from the Content-Length alone.
    for (path, len) in [("/subscriptions", 65_537), ("/peer/changes", 16 << 20 | 1)] {
        let mut s = TcpStream::connect(b.addr).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n"
        )
        .unwrap();
        let (status, text) = read_answer(&mut s, Duration::from_secs(2)).expect("answer");
        assert_eq!(status, 413, "{path}: {text}");
        assert!(text.contains("is larger than the limit"), "{text}");
    }
}

/// With `max_connections = 50` and 60 connections open doing nothing, a
/// new client gets a prompt one-line `503` (not a hang), `GET /healthz`
/// from a new connection is still answered, a client connected before the
/// flood keeps being served, and once the flood closes service resumes.
#[test]
fn connection_flood_beyond_max_connections_is_refused_cleanly() {
    let b = TestBroker::start(&["--max-connections", "50"]);
    // A client connected before the flood (keep-alive).
    let mut early = TcpStream::connect(b.addr).unwrap();
    early
        .write_all(write_request("early", "e0\n", false).as_bytes())
        .unwrap();
    assert_eq!(
        read_answer(&mut early, Duration::from_secs(5)).unwrap().0,
        200
    );
    let flood: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(b.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // all accepted
    let t = Instant::now();
    let (status, text) =
        request(b.addr, &write_request("late", "l0\n", true)).expect("an answer, not a reset");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("max_connections=50"), "{text}");
    assert!(text.contains("chunkbus-written: false"), "{text}");
    let (status, text) = request(
        b.addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("healthz answer");
    assert_eq!((status, text.ends_with("ok\n")), (200, true), "{text}");
    for i in 1..4 {
        early
            .write_all(write_request("early", &format!("e{i}\n"), false).as_bytes())
            .unwrap();
        let (status, text) = read_answer(&mut early, Duration::from_secs(5)).unwrap();
        assert_eq!(status, 200, "{text}");
    }
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = request(b.addr, &write_request("late", "l1\n", true)).unwrap();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{text}");
        assert!(Instant::now() < deadline, "service did not resume: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b.read_all("early"), b"e0\ne1\ne2\ne3\n");
    assert_eq!(b.read_all("late"), b"l1\n");
}

/// The broker raises its soft open-file limit to the hard limit at start
/// (and derives `max_connections = auto` from it), even when started with a
/// low soft limit.
#[test]
fn open_file_limit_is_raised_to_the_hard_limit_at_start() {
    let hard = {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct we pass.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        assert_eq!(rc, 0);
        lim.rlim_max
    };
    let low = (hard / 2).min(256);
    assert!(low >= 64 && low < hard, "hard limit {hard}");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = std::fs::File::create(tmp.path().join("log")).unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -Sn {low} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_chunkbus"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("CHUNKBUS_LOG", "info")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let ready = data.join(".chunkbus").join("ready.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(child.try_wait().unwrap().is_none(), "chunkbus exited");
        assert!(Instant::now() < deadline, "not ready within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums, vec![hard, hard], "{line}");
    let logs = std::fs::read_to_string(tmp.path().join("log")).unwrap();
    assert!(
        logs.contains("raised the open-file limit") && logs.contains(&format!("from={low}")),
        "{logs}"
    );
    let auto = (hard / 2).min(65_536);
    assert!(logs.contains(&format!("max_connections={auto}")), "{logs}");
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
