//! `wake`: long-poll wake-up latency (a write sent → the reader waiting at
//! the end of the chunk has it), then the server's RssAnon with many idle
//! keep-alive connections.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Method;

use super::Scenario;
use crate::client::Conn;
use crate::ctx::Ctx;
use crate::report::{row, us};
use crate::servers::Chunkbus;

/// The `wake` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "wake",
    about: "long-poll wake-up latency, then memory with many idle connections",
    run: |ctx| Box::pin(run(ctx)),
};

/// Long-poll wake-up latency, then memory with many idle connections.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let s = Chunkbus::start(&ctx.bin, &ctx.work.join("wake"), &[])?;
    let wake = wake_latency(&s, ctx.plan.wake_samples).await?;
    note!(
        "long-poll wake-up p99: {}",
        us(wake.value_at_quantile(0.99))
    );
    ctx.rows.push(row(
        "long-poll wake-up: write sent → waiting reader has it",
        [wake.value_at_quantile(0.99) as f64 / 1000.0; 3],
        "ms p99",
        None,
        &format!(
            "p50 {} max {}; {} samples, includes the write's own round trip",
            us(wake.value_at_quantile(0.5)),
            us(wake.max()),
            wake.len()
        ),
    ));
    let base = s.rss_anon().unwrap_or(0);
    let mut idle = Vec::new();
    for _ in 0..ctx.plan.idle_conns {
        let mut c = Conn::open(s.addr).await?;
        c.send(Method::GET, "/healthz", Bytes::new()).await?;
        idle.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let with_idle = s.rss_anon().unwrap_or(0);
    note!(
        "{} idle connections: RssAnon {} MiB (before {} MiB)",
        idle.len(),
        with_idle >> 20,
        base >> 20
    );
    ctx.rows.push(row(
        &format!(
            "server RssAnon with {} idle keep-alive connections",
            idle.len()
        ),
        [with_idle as f64 / 1_048_576.0; 3],
        "MiB",
        None,
        &format!("{} MiB before", base >> 20),
    ));
    Ok(())
}

/// `samples` long polls, each woken by a 2-byte write; the histogram of
/// write sent → read answered, in µs.
async fn wake_latency(s: &Chunkbus, samples: usize) -> Result<Histogram<u64>> {
    let mut w = Conn::open(s.addr).await?;
    let (_, reply) = w
        .fetch(
            Method::POST,
            "/write?category=wake",
            Bytes::from_static(b"start\n"),
        )
        .await?;
    let v: serde_json::Value = serde_json::from_slice(&reply)?;
    let chunk = v["chunk"].as_str().context("chunk")?.to_owned();
    let mut off = 6u64;
    let mut hist = Histogram::<u64>::new(3)?;
    let mut r = Conn::open(s.addr).await?;
    for _ in 0..samples {
        let path =
            format!("/read?category=wake&chunk={chunk}&off={off}&max_size=1000&wait_ms=10000");
        let reader = async {
            let got = r.send(Method::GET, &path, Bytes::new()).await;
            (got, Instant::now())
        };
        let writer = async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let t = Instant::now();
            w.post_ok("/write?category=wake", Bytes::from_static(b"x\n"))
                .await
                .map(|()| t)
        };
        let ((got, received), sent) = tokio::join!(reader, writer);
        let (st, n) = got?;
        let sent = sent?;
        if st != 200 || n != 2 {
            bail!("long poll answered {st} with {n} bytes");
        }
        off += 2;
        hist.record(received.saturating_duration_since(sent).as_micros() as u64)?;
    }
    Ok(hist)
}
