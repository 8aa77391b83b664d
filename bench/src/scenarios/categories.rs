//! `categories`: what many categories cost. Ingest of the run's bodies
//! spread round robin over 1,000 categories against the same load into one
//! category (same build, same run, alternated); then disk (allocated
//! blocks, as `du` counts), RssAnon, open file descriptors and creation
//! rate of 10,000 categories holding one small message each.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use hyper::Method;

use super::Scenario;
use crate::client::Conn;
use crate::ctx::Ctx;
use crate::report::{mbps, row, spread};
use crate::servers::Chunkbus;

/// The `categories` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "categories",
    about: "ingest spread over 1,000 categories vs one; disk, RSS and fds of 10,000 one-message categories",
    run: |ctx| Box::pin(run(ctx)),
};

/// Categories the spread ingest goes round robin over.
const SPREAD: usize = 1000;

/// Connections of both ingest runs (as the `ingest` scenario).
const CONNS: usize = 4;

async fn run(ctx: &mut Ctx) -> Result<()> {
    let smoke = ctx.plan.dur < Duration::from_secs(1);
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for rep in 0..ctx.plan.reps {
        one.push(ingest(ctx, &format!("one-{rep}"), 1).await?);
        many.push(ingest(ctx, &format!("many-{rep}"), SPREAD).await?);
    }
    let (one, many) = (spread(one), spread(many));
    note!(
        "ingest into 1 category {}, over {SPREAD} categories {} ({:.2}×)",
        mbps(one[1]),
        mbps(many[1]),
        many[1] / one[1]
    );
    let what = format!("{} B bodies, {CONNS} conns", ctx.body.len());
    ctx.rows.push(row(
        &format!("ingest into 1 category, {what}"),
        one,
        "MB/s",
        None,
        "basis of the next row (same run)",
    ));
    ctx.rows.push(row(
        &format!("ingest round robin over {SPREAD} categories, {what}"),
        many,
        "MB/s",
        Some((one[1], "1 category".into())),
        &format!(
            "{:.2}× one category; categories created before the timed window",
            many[1] / one[1]
        ),
    ));

    let n = if smoke { 500 } else { 10_000 };
    let m = one_message_each(&ctx.bin, &ctx.work.join("tiny"), n).await?;
    note!(
        "{n} one-message categories: {:.0} MiB on disk, RssAnon {:.0} MiB, {} fds, created at {:.0}/s",
        m.disk as f64 / 1_048_576.0,
        m.rss as f64 / 1_048_576.0,
        m.fds,
        m.rate
    );
    ctx.rows.push(row(
        &format!("disk used by {n} categories of one 12-byte message"),
        [m.disk as f64 / 1_048_576.0; 3],
        "MiB",
        None,
        &format!(
            "allocated blocks of the data dir (du), {:.1} KiB per category",
            m.disk as f64 / 1024.0 / n as f64
        ),
    ));
    ctx.rows.push(row(
        &format!("server RssAnon with {n} one-message categories"),
        [m.rss as f64 / 1_048_576.0; 3],
        "MiB",
        None,
        &format!("{} open fds (default max_open_chunks 1024)", m.fds),
    ));
    ctx.rows.push(row(
        &format!("categories created per second ({n}, 16 conns)"),
        [m.rate; 3],
        "1/s",
        None,
        "first write: directory, chunk counter and chunk files, each fsynced",
    ));
    Ok(())
}

/// Ingest of the run's body on [`CONNS`] connections for the run's window,
/// request `k` of a connection going to category `k`-th in turn of
/// `categories` (each created first with one message); bytes/s.
async fn ingest(ctx: &Ctx, dir: &str, categories: usize) -> Result<f64> {
    let dir = ctx.work.join(dir);
    let s = Chunkbus::start(&ctx.bin, &dir, &[])?;
    let mut c = Conn::open(s.addr).await?;
    for k in 0..categories {
        c.post_ok(
            &format!("/write?category=spread{k}"),
            Bytes::from("created\n"),
        )
        .await?;
    }
    drop(c);
    let (warmup, dur) = (ctx.plan.warmup, ctx.plan.dur);
    let start = Instant::now() + warmup;
    let end = start + dur;
    let mut tasks = Vec::new();
    for i in 0..CONNS {
        let (addr, body) = (s.addr, ctx.body.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await?;
            let (mut bytes, mut k) = (0u64, i);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let path = format!("/write?category=spread{}", k % categories);
                k += CONNS;
                let (status, reply) = c.fetch(Method::POST, &path, body.clone()).await?;
                if status != 200 {
                    bail!("{status}: {}", String::from_utf8_lossy(&reply));
                }
                if t >= start {
                    bytes += body.len() as u64;
                }
            }
            anyhow::Ok(bytes)
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(bytes as f64 / dur.as_secs_f64())
}

/// What `n` one-message categories cost.
struct Tiny {
    /// Allocated bytes of the data dir.
    disk: u64,
    rss: u64,
    fds: usize,
    /// Categories created per second.
    rate: f64,
}

async fn one_message_each(bin: &Path, dir: &Path, n: usize) -> Result<Tiny> {
    let s = Chunkbus::start(bin, dir, &[])?;
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (addr, next): (SocketAddr, _) = (s.addr, Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await?;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return anyhow::Ok(());
                }
                c.post_ok(
                    &format!("/write?category=tiny{k:05}"),
                    Bytes::from(format!("msg-{k:07}\n")),
                )
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    // Let evictions past the open-chunk cache finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = Tiny {
        disk: allocated(dir),
        rss: s.rss_anon().unwrap_or(0),
        fds: std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
            .map(Iterator::count)
            .unwrap_or(0),
        rate,
    };
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
    Ok(m)
}

/// Allocated bytes (`st_blocks * 512`) under `dir`.
fn allocated(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if let Ok(m) = e.path().symlink_metadata() {
                total += m.blocks() * 512;
                if m.is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    total
}
