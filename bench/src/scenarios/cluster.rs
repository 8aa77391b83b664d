//! `cluster`: a three-node cluster on this machine: ingest with replication running,
//! `min_sync_replicas=1` ingest, replication lag (produce on one node,
//! consume on another) at 50% of the single-node maximum, and the catch-up
//! rate of a replica that was down.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;

use super::Scenario;
use crate::client::Conn;
use crate::ctx::{make_body, Ctx, LATENCY_BODY};
use crate::latency::targets::ChunkbusHttp;
use crate::latency::Schedule;
use crate::report::{mbps, row, spread, us};
use crate::servers::Chunkbus;
use crate::{latency, load};

/// The `cluster` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "cluster",
    about: "3 nodes: ingest with replication, min_sync_replicas=1, replication lag, catch-up",
    run: |ctx| Box::pin(run(ctx)),
};

/// Three chunkbus processes on fixed loopback ports, peers of each other.
struct Three {
    nodes: Vec<Chunkbus>,
}

impl Three {
    fn start(ctx: &Ctx, tag: &str) -> Result<Self> {
        let nodes = crate::servers::start_cluster(&ctx.bin, &ctx.work, tag, 3, &[])?;
        Ok(Self { nodes })
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }
}

/// Bytes of `category` listed on the server at `addr`.
async fn listed_bytes(addr: SocketAddr, category: &str) -> Result<u64> {
    let mut c = Conn::open(addr).await?;
    Ok(c.list_chunks(category)
        .await?
        .iter()
        .filter_map(|e| e["size"].as_u64())
        .sum())
}

/// Waits until nodes 2 and 3 list as many bytes of `category` as node 1;
/// returns how long that took.
async fn drain(three: &Three, category: &str, limit: Duration) -> Result<Duration> {
    let t = Instant::now();
    let want = listed_bytes(three.addr(0), category).await?;
    loop {
        let a = listed_bytes(three.addr(1), category).await?;
        let b = listed_bytes(three.addr(2), category).await?;
        if a >= want && b >= want {
            return Ok(t.elapsed());
        }
        if t.elapsed() > limit {
            bail!("replicas hold {a} and {b} of {want} bytes after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Closed-loop ingest into node 1 of a fresh 3-node cluster per
/// repetition: rates, reply latencies and (with `drain`) how long the
/// replicas took to catch up after the load stopped.
async fn ingest_reps(
    ctx: &Ctx,
    tag: &str,
    path: &str,
    drain_after: bool,
) -> Result<(Vec<f64>, Histogram<u64>, Vec<Duration>)> {
    let mut rates = Vec::new();
    let mut drains = Vec::new();
    let mut hist = Histogram::<u64>::new(3)?;
    for rep in 0..ctx.plan.reps {
        let three = Three::start(ctx, &format!("{tag}-{rep}"))?;
        let r = load::post_loop(
            three.addr(0),
            1,
            path,
            ctx.body.clone(),
            4,
            ctx.plan.warmup,
            ctx.plan.dur,
        )
        .await?;
        if r.errors > 0 {
            bail!(
                "{} write errors on {path} in a 3-node cluster, first: {:?}",
                r.errors,
                r.first_error
            );
        }
        rates.push(r.rate());
        hist.add(&r.hist)?;
        if drain_after {
            drains.push(drain(&three, "bench", Duration::from_secs(120)).await?);
        }
        drop(three);
        for i in 1..=3 {
            let _ = std::fs::remove_dir_all(ctx.work.join(format!("{tag}-{rep}-n{i}")));
        }
    }
    Ok((rates, hist, drains))
}

/// The cluster rows.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let body = ctx.body.clone();
    let (reps, warmup, dur) = (ctx.plan.reps, ctx.plan.warmup, ctx.plan.dur);
    let single = ctx
        .ingest_rate
        .map(|r| (r, "single-node ingest".to_owned()));

    // 1. Async ingest into one node while two replicas copy everything.
    let (rates, hist, drains) = ingest_reps(ctx, "cluster", "/write?category=bench", true).await?;
    let rates = spread(rates);
    let cluster_max = rates[1];
    let worst_drain = drains.iter().max().copied().unwrap_or_default();
    note!("3-node ingest into n1: {}", mbps(rates[1]));
    ctx.rows.push(row(
        "3 nodes: ingest into one node, 2 replicas pulling, 4 conns",
        rates,
        "MB/s",
        single.clone(),
        &format!(
            "reply p99 {}; replicas caught up {} ms after the load stopped (worst run)",
            us(hist.value_at_quantile(0.99)),
            worst_drain.as_millis()
        ),
    ));

    // 2. min_sync_replicas=1: each write waits for one replica's copy.
    let (rates, hist, _) = ingest_reps(
        ctx,
        "msr",
        "/write?category=bench&min_sync_replicas=1",
        false,
    )
    .await?;
    let rates = spread(rates);
    note!(
        "min_sync_replicas=1: {} (reply p99 {})",
        mbps(rates[1]),
        us(hist.value_at_quantile(0.99))
    );
    ctx.rows.push(row(
        "3 nodes: ingest with min_sync_replicas=1, 4 conns",
        rates,
        "MB/s",
        single,
        &format!(
            "reply p50 {} p99 {} p99.9 {}",
            us(hist.value_at_quantile(0.5)),
            us(hist.value_at_quantile(0.99)),
            us(hist.value_at_quantile(0.999))
        ),
    ));

    // 3. Replication lag: produce on n1, consume on n2, open loop at 50%
    //    of the single-node maximum for the latency body size.
    let three = Three::start(ctx, "lag")?;
    let m = ctx.message_size;
    let body_size = LATENCY_BODY.min(ctx.body.len());
    let max = match ctx.latency_max {
        Some(v) => v,
        None => {
            let s = Chunkbus::start(&ctx.bin, &ctx.work.join("lag-max"), &[])?;
            load::post_loop(
                s.addr,
                1,
                "/write?category=max",
                make_body(m, body_size),
                4,
                warmup,
                dur,
            )
            .await?
            .rate()
        }
    };
    // At half the single-node maximum (the target), and at half of what
    // this 3-node cluster sustains here (the lag when not saturated).
    for (rate, basis) in [
        (max / 2.0, "50% of single-node max"),
        (cluster_max / 2.0, "50% of 3-node max"),
        (cluster_max / 4.0, "25% of 3-node max"),
    ] {
        lag_row(ctx, &three, rate, basis).await?;
    }

    // 4. Catch-up: n3 is down while n1 takes data, then comes back.
    let mut three = three;
    three.nodes[2].kill9();
    let target: u64 = if reps == 1 && dur < Duration::from_secs(1) {
        32 << 20
    } else if reps == 1 {
        512 << 20
    } else {
        2 << 30
    };
    let r = load::post_loop(
        three.addr(0),
        1,
        "/write?category=catchup",
        body.clone(),
        4,
        Duration::ZERO,
        Duration::from_secs_f64(target as f64 / ctx.ingest_rate.unwrap_or(max).max(1e6))
            .min(Duration::from_secs(60)),
    )
    .await?;
    let written = listed_bytes(three.addr(0), "catchup").await?;
    drop(r);
    three.nodes[2].spawn()?;
    let t = Instant::now();
    loop {
        if listed_bytes(three.addr(2), "catchup").await? >= written {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("replica did not catch up within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let rate = written as f64 / secs;
    note!(
        "catch-up: {} MB in {secs:.2} s = {}",
        written / 1_000_000,
        mbps(rate)
    );
    ctx.rows.push(row(
        "3 nodes: catch-up of a replica that was down",
        [rate; 3],
        "MB/s",
        None,
        &format!(
            "{} MB of sealed chunks copied in {secs:.2} s (page cache on both sides)",
            written / 1_000_000
        ),
    ));
    Ok(())
}

/// Produce on n1, consume on n2 at `rate` (open loop); one row.
async fn lag_row(ctx: &mut Ctx, three: &Three, rate: f64, basis: &str) -> Result<()> {
    let plan = &ctx.plan;
    let m = ctx.message_size;
    let body_size = LATENCY_BODY.min(ctx.body.len());
    let mut p99s = Vec::new();
    let mut lag = Histogram::<u64>::new(3)?;
    let mut saturated = false;
    for rep in 0..plan.reps {
        let target = ChunkbusHttp {
            addr: three.addr(0),
            consume_addr: three.addr(1),
            category: format!("lag{}r{rep}", rate as u64),
        };
        let schedule = Schedule {
            message_size: m,
            body_size,
            rate,
            warmup: plan.warmup,
            dur: plan.dur,
            conns: 16,
        };
        let r = latency::open_loop(&target, &schedule).await?;
        // Acks travel to every node: the copies go too.
        Conn::open(three.addr(0))
            .await?
            .ack_sealed(&format!("lag{}r{rep}", rate as u64))
            .await?;
        p99s.push(r.hist.value_at_quantile(0.99) as f64 / 1000.0);
        lag.add(&r.hist)?;
        saturated |= r.saturated;
    }
    let p = |q: f64| us(lag.value_at_quantile(q));
    note!("replication lag at {basis}: p99 {}", p(0.99));
    let mut r = row(
        &format!(
            "3 nodes: produce on n1 → consume on n2 at {basis} ({:.0} MB/s open loop)",
            rate / 1e6
        ),
        spread(p99s),
        "ms",
        None,
        &format!(
            "replication lag incl. consume: p50 {} p99 {} p99.9 {} max {}{}",
            p(0.5),
            p(0.99),
            p(0.999),
            us(lag.max()),
            if saturated { "; SATURATED" } else { "" }
        ),
    );
    let ms = |q: f64| lag.value_at_quantile(q) as f64 / 1000.0;
    r.percentiles = Some([ms(0.5), ms(0.99), ms(0.999), lag.max() as f64 / 1000.0]);
    ctx.rows.push(r);
    Ok(())
}
