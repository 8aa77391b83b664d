//! The processes a bench run needs: chunkbus (release build) and nginx as
//! the HTTP ceiling. All bind 127.0.0.1 and live in temp dirs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A chunkbus server process.
pub struct Chunkbus {
    child: Option<Child>,
    bin: PathBuf,
    data: PathBuf,
    args: Vec<String>,
    /// Bound address.
    pub addr: SocketAddr,
}

impl Chunkbus {
    /// Starts `bin serve` on `data` with extra flags; waits for `ready.json`.
    pub fn start(bin: &Path, data: &Path, args: &[&str]) -> Result<Self> {
        let mut s = Self {
            child: None,
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        s.spawn()?;
        Ok(s)
    }

    /// Spawns and waits until ready; returns the time to ready.
    pub fn spawn(&mut self) -> Result<Duration> {
        let ready = self.data.join(".chunkbus/ready.json");
        let _ = std::fs::remove_file(&ready);
        let t = Instant::now();
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .args(if self.args.iter().any(|a| a == "--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .args(&self.args)
            .env("CHUNKBUS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        let pid = child.id();
        self.child = Some(child);
        let deadline = t + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read(&ready) {
                let v: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
                if v["pid"].as_u64() == Some(u64::from(pid)) {
                    self.addr = v["addr"].as_str().unwrap_or_default().parse()?;
                    return Ok(t.elapsed());
                }
            }
            if Instant::now() > deadline {
                bail!("chunkbus not ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `RssAnon` of the process in bytes.
    pub fn rss_anon(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Drop for Chunkbus {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// nginx answering 200 to every request after discarding the body.
pub struct Nginx {
    child: Child,
    /// Bound address.
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx if it is installed; `None` (with a reason) otherwise.
    pub fn start(dir: &Path) -> Result<Option<Self>> {
        let Some(bin) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
        else {
            note!("nginx not installed: HTTP ceiling skipped (apt-get install nginx-light)");
            return Ok(None);
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        std::fs::create_dir_all(dir.join("body"))?;
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off; worker_processes 2; pid {d}/nginx.pid; error_log {d}/error.log;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{ access_log off; client_body_temp_path {d}/body; client_max_body_size 64m;\n\
                   client_body_buffer_size 4m; keepalive_requests 1000000;\n\
                   server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\"; }} }} }}\n",
                d = dir.display()
            ),
        )?;
        let child = Command::new(bin)
            .args(["-e", &format!("{}/error.log", dir.display()), "-p"])
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not start");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Some(Self { child, addr }))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// `n` chunkbus processes named n1..nN on fixed loopback ports, peers of
/// each other, data in `work/<tag>-n<i>`, with `extra` flags each.
///
/// # Errors
/// A port cannot be taken or a server does not start.
pub fn start_cluster(
    bin: &Path,
    work: &Path,
    tag: &str,
    n: usize,
    extra: &[&str],
) -> Result<Vec<Chunkbus>> {
    let ports: Vec<u16> = (0..n)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
        })
        .collect::<std::io::Result<_>>()?;
    let mut nodes = Vec::new();
    for i in 0..n {
        let peers: Vec<String> = (0..n)
            .filter(|&j| j != i)
            .map(|j| format!("n{}=http://127.0.0.1:{}", j + 1, ports[j]))
            .collect();
        let mut args = vec![
            "--name".to_owned(),
            format!("n{}", i + 1),
            "--listen".to_owned(),
            format!("127.0.0.1:{}", ports[i]),
            "--peers".to_owned(),
            peers.join(","),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let dir = work.join(format!("{tag}-n{}", i + 1));
        nodes.push(Chunkbus::start(bin, &dir, &refs)?);
    }
    Ok(nodes)
}
