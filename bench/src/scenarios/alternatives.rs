//! `alternatives`: what a user would pick instead, measured in the same run
//! with the same message size: Redis Streams (`XADD`, AOF `appendfsync
//! everysec`) and NATS JetStream (file storage), both on 127.0.0.1 in temp
//! dirs, driven by their maintained Rust clients (`redis`, `async-nats`)
//! with pipelining / async publish windows so the client is not the
//! bottleneck. A peer that is not installed is skipped (no row), never
//! installed from here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;

use super::Scenario;
use crate::ctx::Ctx;
use crate::report::{mbps, row, spread};

/// The `alternatives` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "alternatives",
    about: "Redis Streams XADD and NATS JetStream publish, as ratios to chunkbus ingest",
    run: |ctx| Box::pin(run(ctx)),
};

/// Redis Streams and NATS JetStream ingesting the same message size, as
/// ratios to chunkbus's async ingest.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let (plan, work, m) = (&ctx.plan, ctx.work.clone(), ctx.message_size);
    let vs = ctx.ingest_rate.map(|r| (r, "chunkbus ingest".to_owned()));
    let mut redis = Vec::new();
    for rep in 0..plan.reps {
        let dir = work.join(format!("redis-{rep}"));
        let Some(d) = start_redis(&dir)? else {
            break;
        };
        redis.push(redis_xadd(d.addr, m, 4, plan.warmup, plan.dur).await?);
        drop(d);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !redis.is_empty() {
        let r = spread(redis);
        note!("redis XADD: {}", mbps(r[1]));
        ctx.rows.push(row(
            &format!(
                "Redis Streams XADD, {m}-byte messages, 4 conns × 512 pipelined, AOF everysec"
            ),
            r,
            "MB/s",
            vs.clone(),
            &format!("{:.0} msgs/s", r[1] / m as f64),
        ));
    }
    let mut nats = Vec::new();
    for rep in 0..plan.reps {
        let dir = work.join(format!("nats-{rep}"));
        let Some(d) = start_nats(&dir)? else {
            break;
        };
        nats.push(nats_publish(d.addr, m, 4, plan.warmup, plan.dur).await?);
        drop(d);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !nats.is_empty() {
        let r = spread(nats);
        note!("NATS JetStream publish: {}", mbps(r[1]));
        ctx.rows.push(row(
            &format!("NATS JetStream publish, {m}-byte messages, file storage, 4 tasks × 1024 acks in flight"),
            r,
            "MB/s",
            vs,
            &format!(
                "{:.0} msgs/s; JetStream's default fsync interval is 2 min",
                r[1] / m as f64
            ),
        ));
    }
    Ok(())
}

/// A server process bound to 127.0.0.1; killed on drop.
struct Daemon {
    child: Child,
    /// Bound address.
    addr: SocketAddr,
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
fn start_redis(dir: &Path) -> Result<Option<Daemon>> {
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
fn start_nats(dir: &Path) -> Result<Option<Daemon>> {
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

/// `XADD bench * m <payload>` from `conns` connections, each pipelining
/// `pipeline` commands per round trip. Returns payload bytes per second
/// (counting `message_size` per message, like chunkbus's newline).
async fn redis_xadd(
    addr: SocketAddr,
    message_size: usize,
    conns: usize,
    warmup: Duration,
    dur: Duration,
) -> Result<f64> {
    const PIPELINE: usize = 512;
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let payload = vec![b'r'; message_size.saturating_sub(1).max(1)];
    let mut pipe = redis::pipe();
    for _ in 0..PIPELINE {
        pipe.cmd("XADD")
            .arg("bench")
            .arg("*")
            .arg("m")
            .arg(&payload)
            .ignore();
    }
    let start = Instant::now() + warmup;
    let end = start + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut con = client.get_multiplexed_async_connection().await?;
        let pipe = pipe.clone();
        tasks.push(tokio::spawn(async move {
            let mut msgs = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                pipe.query_async::<()>(&mut con).await?;
                if t >= start {
                    msgs += PIPELINE as u64;
                }
            }
            anyhow::Ok(msgs)
        }));
    }
    let mut msgs = 0;
    for t in tasks {
        msgs += t.await??;
    }
    Ok((msgs * message_size as u64) as f64 / dur.as_secs_f64())
}

/// JetStream publishes to a file-storage stream from `tasks` tasks, each
/// keeping up to `WINDOW` acks outstanding. Returns payload bytes per
/// second (counting `message_size` per message).
async fn nats_publish(
    addr: SocketAddr,
    message_size: usize,
    tasks: usize,
    warmup: Duration,
    dur: Duration,
) -> Result<f64> {
    const WINDOW: usize = 1024;
    let client = async_nats::connect(addr.to_string()).await?;
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "bench".into(),
        subjects: vec!["bench".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("create JetStream stream: {e}"))?;
    let payload = Bytes::from(vec![b'n'; message_size.saturating_sub(1).max(1)]);
    let start = Instant::now() + warmup;
    let end = start + dur;
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (js, payload) = (js.clone(), payload.clone());
        handles.push(tokio::spawn(async move {
            let mut window = VecDeque::with_capacity(WINDOW);
            let mut msgs = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let ack = js
                    .publish("bench", payload.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
                window.push_back((t >= start, ack));
                if window.len() >= WINDOW {
                    if let Some((counted, ack)) = window.pop_front() {
                        ack.await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                        msgs += u64::from(counted);
                    }
                }
            }
            while let Some((counted, ack)) = window.pop_front() {
                ack.await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                msgs += u64::from(counted);
            }
            anyhow::Ok(msgs)
        }));
    }
    let mut msgs = 0;
    for h in handles {
        msgs += h.await??;
    }
    let secs = (Instant::now().max(end) - start).as_secs_f64();
    Ok((msgs * message_size as u64) as f64 / secs)
}
