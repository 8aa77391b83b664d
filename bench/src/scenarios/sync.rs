//! `sync`: `sync=1` ingest with 8 writers (group commit: one fdatasync
//! answers every write it covers) next to this machine's ceilings for it:
//! a raw write+fdatasync loop of 1 MiB blocks on the same filesystem, and
//! 8 such loops at once (what 8 synchronous writers get with no broker).

use anyhow::Result;
use hdrhistogram::Histogram;

use super::Scenario;
use crate::ctx::Ctx;
use crate::report::{mbps, row, spread, us};
use crate::servers::Chunkbus;
use crate::{disk, load};

/// The `sync` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "sync",
    about: "sync=1 ingest (group commit) vs a raw write+fdatasync loop",
    run: |ctx| Box::pin(run(ctx)),
};

/// `sync=1` ingest with 8 writers (group commit) vs a raw write+fdatasync loop.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let (plan, body, work) = (&ctx.plan, ctx.body.clone(), ctx.work.clone());
    let mut rates = Vec::new();
    let mut hist = Histogram::<u64>::new(3)?;
    for rep in 0..plan.reps {
        let dir = work.join(format!("sync-{rep}"));
        let s = Chunkbus::start(&ctx.bin, &dir, &[])?;
        let r = load::post_loop(
            s.addr,
            ctx.categories,
            "/write?category=bench&sync=1",
            body.clone(),
            8,
            plan.warmup,
            plan.dur,
        )
        .await?;
        rates.push(r.rate());
        hist.add(&r.hist)?;
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut raw = Vec::new();
    let mut raw_hist = Histogram::<u64>::new(3)?;
    for _ in 0..plan.reps {
        let (r, h) = disk::write_sync_each(&work, &body, plan.dur)?;
        raw.push(r);
        raw_hist.add(&h)?;
    }
    // The fair ceiling for 8 closed-loop writers: 8 raw writers at once
    // (each its own file). With the disk saturated, each write waits for
    // the others' bytes too (Little's law), whatever the broker does.
    let mut raw8 = Vec::new();
    let mut raw8_hist = Histogram::<u64>::new(3)?;
    for _ in 0..plan.reps {
        let (r, h) = disk::write_sync_each_parallel(&work, &body, plan.dur, 8)?;
        raw8.push(r);
        raw8_hist.add(&h)?;
    }
    let raw8 = spread(raw8);
    let (rates, raw) = (spread(rates), spread(raw));
    note!(
        "ingest sync=1: {} (raw write+fdatasync loop {})",
        mbps(rates[1]),
        mbps(raw[1])
    );
    ctx.rows.push(row(
        "ceiling: raw write+fdatasync loop of 1 MiB blocks",
        raw,
        "MB/s",
        None,
        &format!(
            "p50 {} p99 {}",
            us(raw_hist.value_at_quantile(0.5)),
            us(raw_hist.value_at_quantile(0.99))
        ),
    ));
    ctx.rows.push(row(
        "ceiling: 8 raw writers at once, each write+fdatasync of 1 MiB blocks (own file)",
        raw8,
        "MB/s",
        None,
        &format!(
            "p50 {} p99 {} p99.9 {}",
            us(raw8_hist.value_at_quantile(0.5)),
            us(raw8_hist.value_at_quantile(0.99)),
            us(raw8_hist.value_at_quantile(0.999))
        ),
    ));
    let p99 = hist.value_at_quantile(0.99) as f64;
    ctx.rows.push(row(
        "ingest sync=1, 1 MiB bodies, 8 conns (group commit)",
        rates,
        "MB/s",
        Some((raw[1], "raw write+fdatasync loop".into())),
        &format!(
            "reply p50 {} p99 {} p99.9 {}; p99 {:.2}× the 8 raw writers' p99, {:.2}× the single raw loop's (goal ≤ 1.5×)",
            us(hist.value_at_quantile(0.5)),
            us(hist.value_at_quantile(0.99)),
            us(hist.value_at_quantile(0.999)),
            p99 / raw8_hist.value_at_quantile(0.99).max(1) as f64,
            p99 / raw_hist.value_at_quantile(0.99).max(1) as f64,
        ),
    ));
    Ok(())
}
