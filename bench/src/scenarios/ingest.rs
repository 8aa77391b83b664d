//! `ingest`: this machine's ceilings (raw sequential write with fdatasync
//! every 1 s; nginx discarding 1 MiB POST bodies), chunkbus's async ingest
//! against the lower one, then a consumer reading the sealed chunks just
//! written from page cache, and the server's RssAnon during ingest.
//! Sets [`Ctx::ingest_rate`], the basis later scenarios compare with.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use super::Scenario;
use crate::client::Conn;
use crate::ctx::Ctx;
use crate::report::{mbps, row, spread, us};
use crate::servers::{Chunkbus, Nginx};
use crate::{disk, load};

/// The `ingest` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "ingest",
    about: "disk and nginx ceilings, async ingest, consume from page cache, memory",
    run: |ctx| Box::pin(run(ctx)),
};

/// Ceilings (raw disk with fdatasync every 1 s, nginx discarding bodies),
/// async ingest against the lower one, then consume and memory.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let (plan, body, work) = (&ctx.plan, ctx.body.clone(), ctx.work.clone());
    let disk = repeat(plan.reps, || {
        disk::write_with_periodic_sync(&work, &body, plan.dur, Duration::from_secs(1))
    })?;
    note!("ceiling raw write+fdatasync/1s: {}", mbps(disk[1]));
    let nginx = match Nginx::start(&work.join("nginx"))? {
        Some(n) => {
            let mut v = Vec::new();
            for _ in 0..plan.reps {
                v.push(
                    load::post_loop(n.addr, 1, "/", body.clone(), 4, plan.warmup, plan.dur)
                        .await?
                        .rate(),
                );
            }
            Some(spread(v))
        }
        None => None,
    };
    let ceiling = match nginx {
        Some(n) if n[1] < disk[1] => (n[1], "nginx discard".to_owned()),
        _ => (disk[1], "raw write+fdatasync/1s".to_owned()),
    };
    ctx.rows.push(row(
        "ceiling: raw sequential write, fdatasync every 1 s",
        disk,
        "MB/s",
        None,
        "same filesystem, same run",
    ));
    if let Some(n) = nginx {
        note!("ceiling nginx discarding bodies: {}", mbps(n[1]));
        ctx.rows.push(row(
            "ceiling: nginx discarding 1 MiB POST bodies, 4 conns",
            n,
            "MB/s",
            None,
            "",
        ));
    }

    let mut ingest = Vec::new();
    let mut hist = Histogram::<u64>::new(3)?;
    let mut rss = 0;
    let mut last = None;
    for rep in 0..plan.reps {
        let dir = work.join(format!("ingest-{rep}"));
        // Smoke runs are too short to fill a 64 MiB chunk with a debug
        // build; the consume step needs sealed chunks.
        let small: &[&str] = if plan.dur < Duration::from_secs(1) {
            &["--max-chunk-size", "4MiB"]
        } else {
            &[]
        };
        let s = Chunkbus::start(&ctx.bin, &dir, small)?;
        let r = load::post_loop(
            s.addr,
            ctx.categories,
            "/write?category=bench",
            body.clone(),
            4,
            plan.warmup,
            plan.dur,
        )
        .await?;
        if r.errors > 0 {
            bail!(
                "{} write errors during ingest, first: {:?}",
                r.errors,
                r.first_error
            );
        }
        ingest.push(r.rate());
        hist.add(&r.hist)?;
        rss = rss.max(s.rss_anon().unwrap_or(0));
        if rep + 1 == plan.reps {
            last = Some(s);
        } else {
            drop(s);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let ingest = spread(ingest);
    ctx.ingest_rate = Some(ingest[1]);
    note!("ingest async: {}", mbps(ingest[1]));
    ctx.rows.push(row(
        &format!(
            "ingest, {}-byte messages in 1 MiB bodies, 4 conns, default durability",
            ctx.message_size
        ),
        ingest,
        "MB/s",
        Some(ceiling),
        &format!(
            "{:.0} msgs/s; reply p50 {} p99 {}",
            ingest[1] / body.len() as f64 * ctx.msgs_per_body as f64,
            us(hist.value_at_quantile(0.5)),
            us(hist.value_at_quantile(0.99))
        ),
    ));
    let s = last.context("ingest server")?;
    let rate = consume(&s, plan.dur).await?;
    note!("consume: {}", mbps(rate));
    ctx.rows.push(row(
        "consume from page cache, 1 consumer, 16 MiB reads",
        [rate; 3],
        "MB/s",
        None,
        "sealed chunks just written",
    ));
    ctx.rows.push(row(
        "server RssAnon during ingest (4 conns)",
        [rss as f64 / 1_048_576.0; 3],
        "MiB",
        None,
        "mapped chunk pages not counted",
    ));
    Ok(())
}

/// Reads the sealed chunks of `bench` over and over for `dur`; bytes/s.
async fn consume(s: &Chunkbus, dur: Duration) -> Result<f64> {
    let mut c = Conn::open(s.addr).await?;
    let sealed: Vec<String> = c
        .list_chunks("bench")
        .await?
        .iter()
        .filter(|c| c["complete"].as_bool() == Some(true))
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    if sealed.is_empty() {
        bail!("no sealed chunks to consume");
    }
    let start = Instant::now();
    let deadline = start + dur;
    let mut bytes = 0u64;
    while Instant::now() < deadline {
        for name in &sealed {
            bytes += c.read_chunk("bench", name, Some(deadline)).await?;
            if Instant::now() >= deadline {
                break;
            }
        }
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64())
}

/// Runs `f` `n` times; [min, median, max] of its results.
fn repeat(n: usize, mut f: impl FnMut() -> Result<f64>) -> Result<[f64; 3]> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(f()?);
    }
    Ok(spread(v))
}
