//! `groups`: consumer groups: latency of a durable group ack (each one
//! appended and fdatasync'd before the reply), and ingest with 1,000
//! registered groups next to ingest with none.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Method;

use super::Scenario;
use crate::client::Conn;
use crate::ctx::Ctx;
use crate::load;
use crate::report::{mbps, row, spread, us};
use crate::servers::Chunkbus;

/// The `groups` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "groups",
    about: "durable group-ack latency, ingest with 1,000 registered groups",
    run: |ctx| Box::pin(run(ctx)),
};

/// Registered groups in the ingest comparison.
const GROUPS: usize = 1000;

/// Group-ack latency and ingest with many groups.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let dir = ctx.work.join("groups");
    let s = Chunkbus::start(&ctx.bin, &dir, &[])?;
    let mut c = Conn::open(s.addr).await?;
    // One chunk of 100-byte messages to ack through.
    for _ in 0..8 {
        c.post_ok("/write?category=acks", ctx.body.clone()).await?;
    }
    let (_, list) = c
        .fetch(Method::GET, "/listChunks?category=acks", Bytes::new())
        .await?;
    let chunks: Vec<serde_json::Value> = serde_json::from_slice(&list)?;
    let chunk = chunks
        .first()
        .and_then(|c| c["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    let m = ctx.message_size as u64;
    let mut hist = Histogram::<u64>::new(3)?;
    let start = Instant::now();
    let mut off = 0u64;
    while start.elapsed() < plan.dur {
        off += m;
        let path = format!("/ack?category=acks&consumer=g&chunk={chunk}&off={off}");
        let t = Instant::now();
        let (status, _) = c.send(Method::POST, &path, Bytes::new()).await?;
        if status != 200 {
            bail!("group ack answered {status}");
        }
        hist.record(t.elapsed().as_micros() as u64)?;
    }
    note!(
        "group ack: p50 {} p99 {}",
        us(hist.value_at_quantile(0.5)),
        us(hist.value_at_quantile(0.99))
    );
    let p99_ms = hist.value_at_quantile(0.99) as f64 / 1000.0;
    ctx.rows.push(row(
        "durable group ack (POST /ack?consumer=G), sequential, 1 conn",
        [p99_ms; 3],
        "ms p99",
        None,
        &format!(
            "p50 {} p99 {} max {}; {} acks, each fdatasync'd before the reply",
            us(hist.value_at_quantile(0.5)),
            us(hist.value_at_quantile(0.99)),
            us(hist.max()),
            hist.len()
        ),
    ));

    // Ingest with and without 1,000 registered groups, alternating.
    let (mut none, mut many) = (Vec::new(), Vec::new());
    for rep in 0..plan.reps {
        for with_groups in [rep % 2 == 1, rep % 2 == 0] {
            let dir = ctx.work.join(format!("groups-ingest-{rep}-{with_groups}"));
            let s = Chunkbus::start(&ctx.bin, &dir, &[])?;
            if with_groups {
                let mut c = Conn::open(s.addr).await?;
                c.post_ok("/write?category=bench", ctx.body.clone()).await?;
                let (_, list) = c
                    .fetch(Method::GET, "/listChunks?category=bench", Bytes::new())
                    .await?;
                let chunks: Vec<serde_json::Value> = serde_json::from_slice(&list)?;
                let name = chunks
                    .first()
                    .and_then(|c| c["name"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                for g in 0..GROUPS {
                    let path = format!("/ack?category=bench&consumer=g{g}&chunk={name}&off={m}");
                    let (status, _) = c.send(Method::POST, &path, Bytes::new()).await?;
                    if status != 200 {
                        bail!("registering group {g} answered {status}");
                    }
                }
            }
            let r = load::post_loop(
                s.addr,
                1,
                "/write?category=bench",
                ctx.body.clone(),
                4,
                plan.warmup,
                plan.dur,
            )
            .await?;
            if with_groups {
                many.push(r.rate());
            } else {
                none.push(r.rate());
            }
            drop(s);
            let _ = std::fs::remove_dir_all(&dir);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (none, many) = (spread(none), spread(many));
    note!(
        "ingest with {GROUPS} groups: {} (none: {})",
        mbps(many[1]),
        mbps(none[1])
    );
    ctx.rows.push(row(
        &format!("ingest with {GROUPS} registered consumer groups, 4 conns"),
        many,
        "MB/s",
        Some((none[1], "same without groups".to_owned())),
        "alternating order with the run without groups",
    ));
    Ok(())
}
