//! Redis and NATS servers for the comparisons (`alternatives`, `latency`):
//! found where Debian installs them, started on 127.0.0.1 with their data
//! in a temp dir, killed on drop. A missing one is reported and skipped,
//! never installed from here (`make bench-deps` does that).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A server process bound to 127.0.0.1; killed on drop.
pub struct Daemon {
    child: Child,
    /// Bound address.
    pub addr: SocketAddr,
}

impl Daemon {
    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

fn spawn(mut cmd: Command, port: u16, what: &str) -> Result<Daemon> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawn {what}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut d = Daemon { child, addr };
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = d.child.try_wait() {
            bail!("{what} exited at start with {status}");
        }
        if Instant::now() > deadline {
            bail!("{what} did not start within 15 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Give the server a moment past accepting (JetStream enables itself).
    std::thread::sleep(Duration::from_millis(200));
    Ok(d)
}

/// `redis-server` with AOF fsync every second (the closest to chunkbus's
/// default `flush_interval = 1s`), no RDB snapshots.
pub fn start_redis(dir: &Path) -> Result<Option<Daemon>> {
    let Some(bin) = find(&["/usr/bin/redis-server", "/usr/local/bin/redis-server"]) else {
        note!("redis-server not installed: Redis row skipped (apt-get install redis-server)");
        return Ok(None);
    };
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]);
    spawn(cmd, port, "redis-server").map(Some)
}

/// `nats-server` with JetStream on file storage in `dir`.
pub fn start_nats(dir: &Path) -> Result<Option<Daemon>> {
    let Some(bin) = find(&[
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]) else {
        note!("nats-server not installed: NATS row skipped (apt-get install nats-server)");
        return Ok(None);
    };
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir);
    spawn(cmd, port, "nats-server").map(Some)
}
