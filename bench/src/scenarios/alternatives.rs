//! `alternatives`: what a user would pick instead, measured in the same run
//! with the same message size: Redis Streams (`XADD`, AOF `appendfsync
//! everysec`) and NATS JetStream (file storage), both on 127.0.0.1 in temp
//! dirs, driven by their maintained Rust clients (`redis`, `async-nats`)
//! with pipelining / async publish windows so the client is not the
//! bottleneck. A peer that is not installed is skipped (no row), never
//! installed from here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;

use super::Scenario;
use crate::alt_servers::{start_nats, start_redis};
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
