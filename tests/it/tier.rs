//! Tiering tests against a real S3-compatible server (s3s-fs, in this
//! process, on 127.0.0.1 with static credentials) and the local-directory
//! store: produce → seal → tier → local file gone → read back identical,
//! across restarts; S3 down, S3 answering 500, corrupted and truncated
//! objects, a wrong key, and a crash between upload and manifest.
//!
//! - `tier/binding.rs`: objects bound to their chunk (swapped objects,
//!   planted headers, format-1 objects and their upgrade).
//! - `tier/upload.rs`: uploads verified end to end, streamed in bounded
//!   memory, and started as soon as a slot frees.

mod binding;
mod upload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::TestBroker;

const AK: &str = "AKIATESTCHUNKBUS";
const SK: &str = "test-secret-key-for-chunkbus";
const BUCKET: &str = "tier-bucket";
const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const OTHER_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// An s3s-fs server on a fixed loopback port that can be stopped,
/// restarted, and told to answer 500.
struct TestS3 {
    root: PathBuf,
    addr: SocketAddr,
    fail: Arc<AtomicBool>,
    /// Objects still to corrupt at rest: the next ones completed (a PUT,
    /// or a completed multipart upload) get their middle byte flipped on
    /// disk after the store answered 200 — a store that damages what it
    /// stored, or one that does not check payloads.
    rot: Arc<AtomicU32>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestS3 {
    fn start(root: &Path) -> Self {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let port = crate::harness::free_port();
        let mut s = Self {
            root: root.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            fail: Arc::new(AtomicBool::new(false)),
            rot: Arc::new(AtomicU32::new(0)),
            stop: None,
            thread: None,
        };
        s.up();
        s
    }

    fn up(&mut self) {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (root, addr, fail) = (self.root.clone(), self.addr, Arc::clone(&self.fail));
        let rot = Arc::clone(&self.rot);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let fs = s3s_fs::FileSystem::new(&root).unwrap();
                let mut b = s3s::service::S3ServiceBuilder::new(fs);
                b.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
                let service = b.build();
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                ready_tx.send(()).unwrap();
                loop {
                    let (sock, _) = tokio::select! {
                        a = listener.accept() => a.unwrap(),
                        _ = &mut rx => break,
                    };
                    // As a real S3 endpoint: no Nagle delay on small answers.
                    let _ = sock.set_nodelay(true);
                    let (svc, fail) = (service.clone(), Arc::clone(&fail));
                    let (rot, root) = (Arc::clone(&rot), root.clone());
                    let handler = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (svc, fail) = (svc.clone(), Arc::clone(&fail));
                            let (rot, root) = (Arc::clone(&rot), root.clone());
                            async move {
                                if fail.load(Ordering::SeqCst) {
                                    let mut r = hyper::Response::new(s3s::Body::from(
                                        "<Error><Code>InternalError</Code></Error>".to_owned(),
                                    ));
                                    *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                                    return Ok::<_, s3s::HttpError>(r);
                                }
                                let (method, uri) = (req.method().clone(), req.uri().clone());
                                let resp = hyper::service::Service::call(&svc, req).await?;
                                let query = uri.query().unwrap_or("");
                                let completes = (method == hyper::Method::PUT
                                    && !query.contains("partNumber"))
                                    || (method == hyper::Method::POST
                                        && query.contains("uploadId"));
                                if completes
                                    && resp.status().is_success()
                                    && rot
                                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                            n.checked_sub(1)
                                        })
                                        .is_ok()
                                {
                                    flip_middle_byte(
                                        &root.join(uri.path().trim_start_matches('/')),
                                    );
                                }
                                Ok(resp)
                            }
                        },
                    );
                    tokio::spawn(async move {
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(sock), handler)
                            .await;
                    });
                }
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        self.stop = Some(tx);
        self.thread = Some(thread);
    }

    fn down(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn object(&self, category: &str, chunk: &str) -> PathBuf {
        self.root
            .join(BUCKET)
            .join("pre")
            .join(category)
            .join(chunk)
    }
}

/// Flips the byte in the middle of a file (an object the store damaged).
fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(path, &bytes).unwrap();
}

/// `(VmRSS, VmHWM)` of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The pid of the broker serving `data_dir` (from its `ready.json`).
fn broker_pid(data_dir: &Path) -> u32 {
    let ready = std::fs::read(data_dir.join(".chunkbus/ready.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&ready).unwrap();
    u32::try_from(v["pid"].as_u64().unwrap()).unwrap()
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.down();
    }
}

fn s3_args(s3: &TestS3, key: &str) -> Vec<String> {
    [
        "--max-chunk-size",
        "64KiB",
        "--tier-after",
        "1ms",
        "--s3-endpoint",
        &s3.endpoint(),
        "--s3-bucket",
        BUCKET,
        "--s3-prefix",
        "pre",
        "--s3-path-style",
        "--s3-access-key-id",
        AK,
        "--s3-secret-access-key",
        SK,
        "--encryption-key",
        key,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn start(dir: &Path, args: &[String]) -> TestBroker {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    TestBroker::start_in(dir, &refs)
}

/// `GET /tier` as JSON.
fn tier_status(b: &TestBroker) -> serde_json::Value {
    let (s, body) = b.get_text("/tier");
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn states(b: &TestBroker) -> Vec<(String, String)> {
    tier_status(b)["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["chunk"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits until `n` chunks are tiered.
fn wait_tiered(b: &TestBroker, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let tiered = states(b).iter().filter(|(_, s)| s == "tiered").count();
        if tiered >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} tiered: {:?}",
            tiered,
            states(b)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn produce(b: &TestBroker, category: &str, batches: u64) -> Vec<u8> {
    let mut all = Vec::new();
    for i in 0..batches {
        let body: String = (0..500)
            .map(|j| format!("{{\"batch\":{i},\"n\":{j},\"pad\":\"tiering test\"}}\n"))
            .collect();
        let (s, msg) = b.write(category, body.clone());
        assert_eq!(s, 200, "{msg}");
        all.extend_from_slice(body.as_bytes());
    }
    all
}

#[test]
fn sealed_chunks_tier_to_s3_and_read_back_identical_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = TestS3::start(&tmp.path().join("s3"));
    let dir = tmp.path().join("data");
    let args = s3_args(&s3, KEY);
    let mut b = start(&dir, &args);
    let data = produce(&b, "t", 20); // ~ 20 chunks of 64 KiB
    let sealed: Vec<String> = b
        .chunks("t")
        .into_iter()
        .filter(|c| c.complete)
        .map(|c| c.name)
        .collect();
    assert!(sealed.len() >= 5, "{sealed:?}");
    wait_tiered(&b, sealed.len(), Duration::from_secs(30));
    for name in &sealed {
        assert!(
            !dir.join("t").join(name).exists(),
            "local copy of {name} removed"
        );
        assert!(
            s3.object("t", name).exists(),
            "object of {name} in the bucket"
        );
        let obj = std::fs::read(s3.object("t", name)).unwrap();
        assert!(
            !obj.windows(12).any(|w| w == b"tiering test"),
            "objects are encrypted"
        );
    }
    assert_eq!(b.read_all("t"), data, "reads are transparent");
    // Small reads at message boundaries and the usual errors.
    let first = &sealed[0];
    let (s, body) = b.get(&format!(
        "/read?category=t&chunk={first}&off=0&max_size=100"
    ));
    assert_eq!(s, 200);
    assert!(body.ends_with(b"\n") && !body.is_empty());
    let (s, msg) = b.get_text(&format!(
        "/read?category=t&chunk={first}&off=1&max_size=100"
    ));
    assert_eq!(s, 400, "{msg}");
    let (s, msg) = b.get_text(&format!("/read?category=t&chunk={first}&off=0&max_size=2"));
    assert_eq!(s, 400, "{msg}");
    assert!(msg.contains("too small"), "{msg}");
    let (_, metrics) = b.get_text("/metrics");
    assert!(metrics.contains("chunkbus_tiered_chunks "), "{metrics}");
    b.terminate(Duration::from_secs(10));
    let b = start(&dir, &args);
    assert_eq!(b.read_all("t"), data, "after a restart");
    // A consumer group can ack inside a tiered chunk (boundary checked
    // against the object); a non-boundary is refused.
    let (_, head) = b.get(&format!(
        "/read?category=t&chunk={first}&off=0&max_size=100"
    ));
    let off = head.len();
    let (s, msg) = b.post(
        &format!("/ack?category=t&consumer=g&chunk={first}&off={off}"),
        "",
    );
    assert_eq!(s, 200, "{msg}");
    let (s, msg) = b.post(
        &format!("/ack?category=t&consumer=g&chunk={first}&off={}", off + 1),
        "",
    );
    assert_eq!(s, 400, "{msg}");
    // A chukcha ack deletes the object too.
    let size = b.chunks("t")[0].size;
    let (s, msg) = b.get_text(&format!("/ack?category=t&chunk={first}&size={size}"));
    assert_eq!(s, 200, "{msg}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s3.object("t", first).exists() {
        assert!(
            Instant::now() < deadline,
            "object of an acked chunk deleted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn s3_down_or_failing_keeps_chunks_local_until_it_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s3 = TestS3::start(&tmp.path().join("s3"));
    s3.down();
    let dir = tmp.path().join("data");
    let b = start(&dir, &s3_args(&s3, KEY));
    let data = produce(&b, "d", 6);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = tier_status(&b);
        assert_eq!(st["tiered_chunks"], 0, "{st}");
        if st["upload_failures"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no failed upload reported: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(b.read_all("d"), data, "everything still readable locally");
    // 500s: still nothing evicted.
    s3.fail.store(true, Ordering::SeqCst);
    s3.up();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(tier_status(&b)["tiered_chunks"], 0);
    for (name, state) in states(&b) {
        assert_ne!(state, "tiered", "{name}");
    }
    // Healthy again: the retries succeed (backoff is at most a few seconds here).
    s3.fail.store(false, Ordering::SeqCst);
    let sealed = b.chunks("d").iter().filter(|c| c.complete).count();
    wait_tiered(&b, sealed, Duration::from_secs(40));
    assert_eq!(b.read_all("d"), data);
}

#[test]
fn corrupted_truncated_or_foreign_key_objects_are_errors_never_data() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = TestS3::start(&tmp.path().join("s3"));
    let dir = tmp.path().join("data");
    let mut b = start(&dir, &s3_args(&s3, KEY));
    produce(&b, "c", 12);
    wait_tiered(&b, 3, Duration::from_secs(30));
    let tiered: Vec<String> = states(&b)
        .into_iter()
        .filter(|(_, s)| s == "tiered")
        .map(|(n, _)| n)
        .collect();
    let sealed: Vec<_> = b
        .chunks("c")
        .into_iter()
        .filter(|c| tiered.contains(&c.name))
        .collect();
    b.terminate(Duration::from_secs(10));
    // Flip one byte in the middle of the first object; cut the second.
    let one = s3.object("c", &sealed[0].name);
    let mut bytes = std::fs::read(&one).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&one, &bytes).unwrap();
    let two = s3.object("c", &sealed[1].name);
    let len = std::fs::metadata(&two).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&two)
        .unwrap()
        .set_len(len - 40)
        .unwrap();
    let mut b = start(&dir, &s3_args(&s3, KEY));
    for c in &sealed[..2] {
        let (s, msg) = b.get_text(&format!(
            "/read?category=c&chunk={}&off=0&max_size=16777216",
            c.name
        ));
        assert!(s >= 500, "{} gave {s}: {msg}", c.name);
        assert!(!msg.contains("tiering test"), "{msg}");
    }
    let (s, _) = b.get(&format!(
        "/read?category=c&chunk={}&off=0&max_size=16777216",
        sealed[2].name
    ));
    assert_eq!(s, 200, "an intact object still reads");
    // A different master key: every tiered read is an error.
    b.terminate(Duration::from_secs(10));
    let b = start(&dir, &s3_args(&s3, OTHER_KEY));
    let (s, msg) = b.get_text(&format!(
        "/read?category=c&chunk={}&off=0&max_size=16777216",
        sealed[2].name
    ));
    assert!(s >= 500, "{s}: {msg}");
    assert!(msg.contains("key"), "{msg}");
    // With the old key configured for reading, it works again.
    let mut args = s3_args(&s3, OTHER_KEY);
    args.extend(["--encryption-old-keys".to_owned(), KEY.to_owned()]);
    drop(b);
    let b = start(&dir, &args);
    let (s, _) = b.get(&format!(
        "/read?category=c&chunk={}&off=0&max_size=16777216",
        sealed[2].name
    ));
    assert_eq!(s, 200);
}

#[test]
fn local_dir_store_by_default_and_crash_between_upload_and_eviction_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args: Vec<String> = [
        "--max-chunk-size",
        "64KiB",
        "--local-bytes-budget",
        "100KiB",
        "--encryption-key",
        KEY,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // A crash between an upload and its manifest line leaves an object
    // nobody recorded (here: garbage at the first chunk's key); the chunk
    // stays local, is uploaded again, and the object is replaced.
    let stale = dir.join(".chunkbus/tier/l/node1-chunk000000000");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, b"partial upload from before a crash").unwrap();
    let mut b = start(&dir, &args);
    let data = produce(&b, "l", 12);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let local: u64 = b
            .chunks("l")
            .iter()
            .filter(|c| dir.join("l").join(&c.name).exists())
            .map(|c| c.size)
            .sum();
        if local <= 100 << 10 {
            break;
        }
        assert!(Instant::now() < deadline, "local bytes {local} over budget");
        std::thread::sleep(Duration::from_millis(50));
    }
    let objects = dir.join(".chunkbus/tier/l");
    assert!(
        objects.read_dir().unwrap().count() > 0,
        "objects in the tier dir"
    );
    assert_eq!(b.read_all("l"), data);
    // Simulate a crash after the manifest line but before eviction: put a
    // local copy back next to a tiered chunk; restart must remove it and
    // keep reading the object.
    let tiered: Vec<String> = states(&b)
        .into_iter()
        .filter(|(_, s)| s == "tiered")
        .map(|(n, _)| n)
        .collect();
    let name = tiered[0].clone();
    let (s, bytes) = b.get(&format!(
        "/read?category=l&chunk={name}&off=0&max_size=16777216"
    ));
    assert_eq!(s, 200);
    b.kill9();
    // The chunk file and a sealed index sidecar, as they were before eviction.
    let mut idx = b"CBCHIDX\0".to_vec();
    idx.extend_from_slice(&1u32.to_le_bytes());
    idx.extend_from_slice(&0u32.to_le_bytes());
    idx.extend_from_slice(&0u64.to_le_bytes());
    idx.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    idx.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    idx.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    idx.extend_from_slice(&0u32.to_le_bytes());
    idx.extend_from_slice(b"SEAL");
    std::fs::write(dir.join("l").join(&name), &bytes).unwrap();
    std::fs::write(dir.join("l").join(format!("{name}.idx")), &idx).unwrap();
    let b = start(&dir, &args);
    assert!(
        !dir.join("l").join(&name).exists(),
        "stale local copy removed"
    );
    assert!(
        b.logs().contains("removed local copy of a tiered chunk"),
        "{}",
        b.logs()
    );
    assert_eq!(b.read_all("l"), data);
}

/// What the fault proxy does to the next connections.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Fault {
    /// Forward bytes unchanged.
    Pass = 0,
    /// Accept, then close at once (S3 down behind a load balancer).
    Reset = 1,
    /// Forward, but hold every server→client read back 300 ms.
    Slow = 2,
    /// Forward, flipping one byte of every server→client read after the
    /// first 400 bytes of the connection (bodies, past the headers).
    Corrupt = 3,
    /// Answer every request with `500 Internal Server Error` itself.
    Error500 = 4,
    /// Forward, flipping one byte of the client→server stream at 128 KiB,
    /// 384 KiB, 640 KiB, … of each connection: inside the body of any
    /// upload that large.
    CorruptUpload = 5,
}

/// A TCP proxy on 127.0.0.1 in front of the test S3 server that injects
/// faults between chunkbus and its object store.
struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<std::sync::atomic::AtomicU8>,
    _thread: std::thread::JoinHandle<()>,
}

impl FaultProxy {
    fn start(upstream: SocketAddr) -> Self {
        let mode = Arc::new(std::sync::atomic::AtomicU8::new(Fault::Pass as u8));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let m = Arc::clone(&mode);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(proxy_one(client, upstream, Arc::clone(&m)));
                }
            });
        });
        Self {
            addr,
            mode,
            _thread: thread,
        }
    }

    fn set(&self, f: Fault) {
        self.mode.store(f as u8, Ordering::SeqCst);
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn fault_now(mode: &std::sync::atomic::AtomicU8) -> Fault {
    match mode.load(Ordering::SeqCst) {
        1 => Fault::Reset,
        2 => Fault::Slow,
        3 => Fault::Corrupt,
        4 => Fault::Error500,
        5 => Fault::CorruptUpload,
        _ => Fault::Pass,
    }
}

/// Reads one request head (and a body announced by Content-Length) and
/// answers 500, until the client closes.
async fn answer_500(client: tokio::net::TcpStream) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::io::BufReader::new(client);
    loop {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            match stream.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line
                .to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
            {
                length = v.parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let xml = "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
        let reply = format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
            xml.len()
        );
        if stream.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One proxied connection; the fault is looked up per read, so pooled
/// connections follow mode changes too.
async fn proxy_one(
    client: tokio::net::TcpStream,
    upstream: SocketAddr,
    mode: Arc<std::sync::atomic::AtomicU8>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    match fault_now(&mode) {
        Fault::Reset => return,
        Fault::Error500 => return answer_500(client).await,
        _ => {}
    }
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up_mode = Arc::clone(&mode);
    let up = tokio::spawn(async move {
        const EVERY: usize = 256 << 10;
        let mut buf = vec![0u8; 16 << 10];
        let (mut seen, mut next_flip) = (0usize, EVERY / 2);
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            while next_flip < seen + n {
                if fault_now(&up_mode) == Fault::CorruptUpload {
                    buf[next_flip - seen] ^= 0x20;
                }
                next_flip += EVERY;
            }
            seen += n;
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    });
    let mut buf = vec![0u8; 16 << 10];
    let mut seen = 0usize;
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match fault_now(&mode) {
            Fault::Reset | Fault::Error500 => break,
            Fault::Slow => tokio::time::sleep(Duration::from_millis(300)).await,
            Fault::Corrupt if seen + n > 400 => {
                let i = 400usize.saturating_sub(seen).min(n - 1);
                buf[i] ^= 0x5a;
            }
            _ => {}
        }
        seen += n;
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    up.abort();
}

#[test]
fn s3_faults_behind_a_proxy_never_lose_or_alter_data() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = TestS3::start(&tmp.path().join("s3"));
    let proxy = FaultProxy::start(s3.addr);
    let dir = tmp.path().join("data");
    let mut args = s3_args(&s3, KEY);
    let at = args.iter().position(|a| a == "--s3-endpoint").unwrap();
    args[at + 1] = proxy.endpoint();
    // 1. S3 unreachable (connections reset): nothing is evicted, every
    //    chunk stays readable, failures are counted.
    proxy.set(Fault::Reset);
    let b = start(&dir, &args);
    let data = produce(&b, "f", 16);
    let sealed: Vec<String> = b
        .chunks("f")
        .into_iter()
        .filter(|c| c.complete)
        .map(|c| c.name)
        .collect();
    assert!(sealed.len() >= 3, "{sealed:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tier_status(&b)["upload_failures"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no upload failure counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        states(&b).iter().all(|(_, s)| s != "tiered"),
        "{:?}",
        states(&b)
    );
    for name in &sealed {
        assert!(dir.join("f").join(name).exists(), "{name} kept locally");
    }
    assert_eq!(b.read_all("f"), data);
    // 2. S3 answering 500 to everything: still nothing evicted.
    let failures = tier_status(&b)["upload_failures"].as_u64().unwrap_or(0);
    proxy.set(Fault::Error500);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tier_status(&b)["upload_failures"].as_u64().unwrap_or(0) <= failures {
        assert!(Instant::now() < deadline, "no failure counted for 500s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        states(&b).iter().all(|(_, s)| s != "tiered"),
        "{:?}",
        states(&b)
    );
    assert_eq!(b.read_all("f"), data);
    // 3. Slow S3: uploads still complete (the SDK retries), then every
    //    sealed chunk is tiered and reads stay identical.
    proxy.set(Fault::Slow);
    wait_tiered(&b, sealed.len(), Duration::from_secs(120));
    proxy.set(Fault::Pass);
    assert_eq!(b.read_all("f"), data);
    // 4. Corrupted bytes in transit: after a restart nothing is cached, so
    //    reads go to S3; every answer is either the exact data or a 5xx.
    let mut b = b;
    b.terminate(Duration::from_secs(10));
    proxy.set(Fault::Corrupt);
    let b = start(&dir, &args);
    let mut errors = 0;
    for name in &sealed {
        let (s, body) = b.get(&format!(
            "/read?category=f&chunk={name}&off=0&max_size=1048576"
        ));
        if s == 200 {
            let start_at = data
                .windows(body.len().min(64))
                .position(|w| w == &body[..body.len().min(64)]);
            assert!(
                start_at.is_some(),
                "{name}: 200 with bytes that were never written"
            );
            let i = start_at.unwrap();
            assert_eq!(&data[i..i + body.len()], &body[..], "{name}: altered data");
        } else {
            assert!(s >= 500, "{name}: {s}");
            errors += 1;
        }
    }
    assert!(errors > 0, "corruption in transit was never detected");
    // 5. Healthy again: everything reads back identical.
    proxy.set(Fault::Pass);
    assert_eq!(b.read_all("f"), data);
}
