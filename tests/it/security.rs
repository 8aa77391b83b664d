//! Hostile names and parameters: clear 4xx, nothing touched outside the
//! data dir.

use crate::harness::TestBroker;

fn snapshot(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn traversal_and_bad_names_are_400_and_touch_nothing() {
    let b = TestBroker::start(&[]);
    let parent = b.data_dir().parent().unwrap().to_path_buf();
    let outside_before: Vec<_> = snapshot(&parent)
        .into_iter()
        .filter(|p| !p.starts_with("data"))
        .collect();
    let long = "x".repeat(129);
    let bad_categories = [
        "..",
        ".",
        "..%2F..%2Fetc",
        "%2Fetc",
        "a%2Fb",
        "a%5Cb",
        "a%00b",
        "%C3%A9",
        "a%20b",
        "a.b",
        "",
        long.as_str(),
        "..%2Fx",
    ];
    for c in bad_categories {
        for (method, q) in [
            ("POST", format!("/write?category={c}")),
            ("GET", format!("/listChunks?category={c}")),
            (
                "GET",
                format!("/read?category={c}&chunk=node1-chunk000000000&off=0&max_size=1"),
            ),
            (
                "GET",
                format!("/ack?category={c}&chunk=node1-chunk000000000&size=0"),
            ),
        ] {
            let (s, msg) = if method == "POST" {
                b.post(&q, "x\n")
            } else {
                b.get_text(&q)
            };
            assert_eq!(s, 400, "{method} {q}: {msg}");
            assert!(msg.contains("category"), "{q}: {msg}");
        }
    }
    for chunk in [
        "..%2F..%2Fetc%2Fpasswd",
        "node1-chunk000000000%2F..",
        "%2Fetc%2Fpasswd",
        "node1-chunk00000000",
        "a%2Fb-chunk000000000",
    ] {
        let (s, msg) = b.get_text(&format!("/read?category=ok&chunk={chunk}&off=0&max_size=1"));
        assert_eq!(s, 400, "{chunk}: {msg}");
    }
    let outside_after: Vec<_> = snapshot(&parent)
        .into_iter()
        .filter(|p| !p.starts_with("data"))
        .collect();
    assert_eq!(
        outside_before, outside_after,
        "files outside the data dir changed"
    );
    assert!(
        snapshot(b.data_dir())
            .iter()
            .all(|p| p.starts_with(".chunkbus")),
        "no category was created"
    );
}

#[test]
fn garbage_requests_do_not_kill_the_server() {
    use std::io::{Read, Write};
    let b = TestBroker::start(&[]);
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /read?category=%ff%fe&chunk=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /write?category=c HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /write?category=c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /read?category=c&chunk=node1-chunk000000000&off=0&max_size=1&off=5 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(b.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        s.write_all(raw).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let head = String::from_utf8_lossy(&buf);
        assert!(buf.is_empty() || head.starts_with("HTTP/1.1 4"), "{:?} -> {head}", String::from_utf8_lossy(raw));
    }
    assert_eq!(b.get_text("/healthz").0, 200, "still serving");
}

#[test]
fn bearer_token_guards_every_endpoint_but_healthz() {
    let token = "s3cr3t-T0ken_for-tests";
    let b = crate::harness::TestBroker::start(&["--token", token]);
    let url = |p: &str| b.url(p);
    let send = |req: reqwest::blocking::RequestBuilder| {
        let r = req.send().unwrap();
        let auth = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status().as_u16(), auth, r.text().unwrap_or_default())
    };
    assert_eq!(send(b.http.get(url("/healthz"))).0, 200, "healthz is open");
    for path in [
        "/listCategories",
        "/metrics",
        "/peers",
        "/tier",
        "/listChunks?category=c",
    ] {
        let (s, auth, msg) = send(b.http.get(url(path)));
        assert_eq!(s, 401, "{path}: {msg}");
        assert_eq!(auth.as_deref(), Some("Bearer realm=\"chunkbus\""));
        let (s, _, _) = send(b.http.get(url(path)).bearer_auth("wrong-token"));
        assert_eq!(s, 401, "{path} with a wrong token");
        let (s, _, _) = send(b.http.get(url(path)).bearer_auth(&token[..token.len() - 1]));
        assert_eq!(s, 401, "{path} with a prefix of the token");
    }
    let (s, _, msg) = send(b.http.post(url("/write?category=c")).body("a\n"));
    assert_eq!(s, 401, "{msg}");
    let (s, _, msg) = send(
        b.http
            .post(url("/write?category=c"))
            .bearer_auth(token)
            .body("a\n"),
    );
    assert_eq!(s, 200, "{msg}");
    // The CLI sends the token from --token / CHUNKBUS_TOKEN.
    let server = format!("http://{}", b.addr);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .args(["consume", "--category", "c", "--server", &server])
        .env("CHUNKBUS_TOKEN", token)
        .env("CHUNKBUS_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"a\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .args(["consume", "--category", "c", "--server", &server])
        .env("CHUNKBUS_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "without the token the CLI fails");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn idle_connections_and_slowloris_do_not_starve_other_clients() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let limit = crate::harness::raise_fd_limit();
    // 10,000 idle connections where the limit allows (others share it).
    let idle_target = 10_000usize.min((limit as usize).saturating_sub(2_000) / 2);
    let b = TestBroker::start(&[]);
    let mut idle = Vec::with_capacity(idle_target);
    for _ in 0..idle_target {
        idle.push(std::net::TcpStream::connect(b.addr).unwrap());
    }
    // Slowloris: headers dribbled a byte at a time, never finished.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> = (0..50)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(b.addr).unwrap();
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let head = b"POST /write?category=slow HTTP/1.1\r\nHost: x\r\nX-Pad: ";
                let _ = s.write_all(head);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if s.write_all(b"a").is_err() {
                        return true; // the server closed it
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                false
            })
        })
        .collect();
    // Meanwhile, a normal client is served promptly, many times.
    for i in 0..50 {
        let t = Instant::now();
        let (s, msg) = b.write("ok", format!("m{i}\n"));
        assert_eq!(s, 200, "{msg}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "write {i} took {:?} with {idle_target} idle and 50 slow connections",
            t.elapsed()
        );
    }
    assert_eq!(b.read_all("ok").iter().filter(|&&c| c == b'\n').count(), 50);
    // The header read timeout (30 s) closes the slow headers.
    std::thread::sleep(Duration::from_secs(34));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let closed = slow
        .into_iter()
        .filter_map(|h| h.join().ok())
        .filter(|&c| c)
        .count();
    assert!(
        closed >= 45,
        "only {closed} of 50 slowloris connections closed"
    );
    drop(idle);
    assert_eq!(b.get_text("/healthz").0, 200);
}
