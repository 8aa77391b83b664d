//! `TestBroker`: runs the real `chunkbus` binary on 127.0.0.1:0 with a temp
//! data dir, waits for its `ready.json`, and offers kill -9, SIGTERM and
//! restart. Every wait has a deadline; on a failing test the broker's stderr
//! is printed.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

#[derive(Deserialize)]
struct Ready {
    addr: SocketAddr,
    pid: u32,
    #[serde(default)]
    kafka_addr: Option<SocketAddr>,
}

/// A chunkbus server process for one test.
pub struct TestBroker {
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    /// Start without `CHUNKBUS_LOG`, so the `log_level` setting (and its
    /// reload) decides what is logged.
    log_from_settings: bool,
    pub addr: SocketAddr,
    /// The Kafka listener's bound address (`--kafka-listen`), if any.
    pub kafka_addr: Option<SocketAddr>,
    pub http: reqwest::blocking::Client,
}

impl TestBroker {
    /// Starts a broker on a fresh temp dir with extra `serve` flags.
    pub fn start(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut b = Self::start_in(&data_dir, args);
        b._tmp = Some(tmp);
        b
    }

    /// Starts a broker on a fresh temp dir whose log filter comes from its
    /// `log_level` setting (`CHUNKBUS_LOG` unset).
    pub fn start_logging_by_settings(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut b = Self::unstarted(&data_dir, args);
        b.log_from_settings = true;
        b.spawn();
        b._tmp = Some(tmp);
        b
    }

    /// Starts a broker on `data_dir` (which the caller owns).
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Self {
        let mut b = Self::unstarted(data_dir, args);
        b.spawn();
        b
    }

    fn unstarted(data_dir: &Path, args: &[&str]) -> Self {
        let log = data_dir.with_extension("log");
        Self {
            log_from_settings: false,
            child: None,
            _tmp: None,
            data_dir: data_dir.to_path_buf(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka_addr: None,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(70))
                .build()
                .expect("client"),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn spawn(&mut self) {
        self.launch();
        self.wait_ready();
    }

    /// Starts a stopped broker again without waiting for it to be ready
    /// (to crash it during recovery).
    pub fn launch_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.launch();
    }

    fn launch(&mut self) {
        let ready = self.data_dir.join(".chunkbus").join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chunkbus"));
        cmd.arg("serve").arg("--data-dir").arg(&self.data_dir);
        if !self.args.iter().any(|a| a == "--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if self.log_from_settings {
            cmd.env_remove("CHUNKBUS_LOG");
        } else {
            cmd.env(
                "CHUNKBUS_LOG",
                std::env::var("TEST_CHUNKBUS_LOG").unwrap_or_else(|_| "info".into()),
            );
        }
        let child = cmd
            .args(&self.args)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn chunkbus");
        self.child = Some(child);
    }

    fn wait_ready(&mut self) {
        let ready = self.data_dir.join(".chunkbus").join("ready.json");
        let pid = self.child.as_ref().expect("launched").id();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read(&ready) {
                if let Ok(r) = serde_json::from_slice::<Ready>(&text) {
                    if r.pid == pid {
                        self.addr = r.addr;
                        self.kafka_addr = r.kafka_addr;
                        return;
                    }
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "chunkbus exited during startup with {status}:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chunkbus not ready within 30 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// CPU time (user + system) the process has used, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let pid = self.child.as_ref().expect("running").id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields overall, in clock ticks.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // SAFETY: sysconf has no preconditions.
        #[allow(unsafe_code)]
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// The server's stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (at most `limit`) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = libc::pid_t::try_from(c.id()).expect("pid");
        // SAFETY: sending a signal to our own child process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "chunkbus did not exit within {limit:?} of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to the process.
    pub fn signal(&self, sig: libc::c_int) {
        let c = self.child.as_ref().expect("running");
        let pid = libc::pid_t::try_from(c.id()).expect("pid");
        // SAFETY: sending a signal to our own child process.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// Starts the process again on the same data dir (new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts a stopped broker again.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    // ---- HTTP helpers ----

    pub fn write(&self, category: &str, body: impl Into<Vec<u8>>) -> (u16, String) {
        self.post(&format!("/write?category={category}"), body)
    }

    pub fn post(&self, path_and_query: &str, body: impl Into<Vec<u8>>) -> (u16, String) {
        let r = self
            .http
            .post(self.url(path_and_query))
            .body(body.into())
            .send()
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.text().unwrap_or_default())
    }

    pub fn get(&self, path_and_query: &str) -> (u16, Vec<u8>) {
        // A pooled connection the server has just closed (e.g. after an
        // early 413) fails on reuse; a GET is idempotent, so try once more.
        let r = self
            .http
            .get(self.url(path_and_query))
            .send()
            .or_else(|_| self.http.get(self.url(path_and_query)).send())
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
    }

    pub fn get_text(&self, path_and_query: &str) -> (u16, String) {
        let (s, b) = self.get(path_and_query);
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    /// `listChunks` as (name, complete, size).
    pub fn chunks(&self, category: &str) -> Vec<ChunkEntry> {
        let (s, body) = self.get(&format!("/listChunks?category={category}"));
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("listChunks JSON")
    }

    /// Reads every message of every chunk of `category` (no acks).
    pub fn read_all(&self, category: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for c in self.chunks(category) {
            let mut off = 0u64;
            loop {
                let (s, body) = self.get(&format!(
                    "/read?category={category}&chunk={}&off={off}&max_size=16777216",
                    c.name
                ));
                assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
                if body.is_empty() {
                    break;
                }
                off += body.len() as u64;
                out.extend_from_slice(&body);
            }
        }
        out
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ChunkEntry {
    pub name: String,
    pub complete: bool,
    pub size: u64,
}

#[derive(Debug, Deserialize)]
pub struct WriteReply {
    pub chunk: String,
    pub offset: u64,
    pub size: u64,
}

/// A free port on 127.0.0.1 for a node whose address its peers must know
/// before it starts. Taken below the kernel's ephemeral range (32768+), so
/// client connections of parallel tests cannot grab it meanwhile, from a
/// per-process sequence, and checked free by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 600) as u16 * 20;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 700;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Three (or `n`) brokers on fixed ports that list each other as peers.
pub struct TestCluster {
    pub nodes: Vec<TestBroker>,
    _tmp: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `n` nodes named n1..nN with extra `serve` flags each.
    pub fn start(n: usize, args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let peers: Vec<String> = (0..n)
                .filter(|&j| j != i)
                .map(|j| format!("n{}=http://127.0.0.1:{}", j + 1, ports[j]))
                .collect();
            let mut a: Vec<String> = vec![
                "--name".into(),
                format!("n{}", i + 1),
                "--listen".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--peers".into(),
                peers.join(","),
            ];
            a.extend(args.iter().map(|s| (*s).to_owned()));
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            let dir = tmp.path().join(format!("n{}", i + 1));
            nodes.push(TestBroker::start_in(&dir, &refs));
        }
        Self { nodes, _tmp: tmp }
    }

    /// Waits (at most `limit`) until every node lists the same chunks of
    /// `category`, all with equal sizes, and `done` holds for that listing.
    pub fn converge(
        &self,
        category: &str,
        limit: Duration,
        done: impl Fn(&[ChunkEntry]) -> bool,
    ) -> Vec<ChunkEntry> {
        let deadline = Instant::now() + limit;
        loop {
            let lists: Vec<Vec<ChunkEntry>> = self
                .nodes
                .iter()
                .filter(|n| n.child.is_some())
                .map(|n| n.chunks(category))
                .collect();
            if lists.windows(2).all(|w| w[0] == w[1]) && done(&lists[0]) {
                return lists[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no convergence within {limit:?}: {lists:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- chunkbus stderr ({}) ----\n{}",
                self.log.display(),
                self.logs()
            );
        }
    }
}

/// Raises this process's open-file limit to its hard limit (brokers it
/// starts inherit it); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

/// A tmpfs mount for the test's lifetime (needs root; `None`, with a
/// printed reason, otherwise).
pub struct Tmpfs(pub std::path::PathBuf);

impl Tmpfs {
    pub fn mount(dir: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if out.status.success() {
            Some(Self(dir.to_path_buf()))
        } else {
            eprintln!(
                "SKIP: cannot mount tmpfs ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Numbered messages `<tag>-<i>\n` for i in range.
pub fn numbered(tag: &str, range: std::ops::Range<u64>) -> String {
    range.map(|i| format!("{tag}-{i}\n")).collect()
}

/// Per producer tag: the numbers read, in order.
pub fn by_tag(data: &[u8]) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut out: std::collections::BTreeMap<String, Vec<u64>> = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(data).lines() {
        let (tag, n) = line.rsplit_once('-').expect("tag-n");
        out.entry(tag.to_owned())
            .or_default()
            .push(n.parse().expect("number"));
    }
    out
}

/// Waits up to `limit` for `child` (its stderr piped) to exit; kills it and
/// panics naming `what` if it does not. Returns its status and stderr.
pub fn wait_for_exit(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}
