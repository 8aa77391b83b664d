//! Consumer groups: latency of a durable group ack (each one appended and
//! fdatasync'd before the reply), and ingest with 1,000 registered groups
//! next to ingest with none.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Method;

use crate::client::Conn;
use crate::servers::Chunkbus;
use crate::{load, mbps, row, spread, us, Ctx};

/// Registered groups in the ingest comparison.
const GROUPS: usize = 1000;

/// Group-ack latency and ingest with many groups.
pub async fn groups_scenarios(ctx: &mut Ctx) -> Result<()> {
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

/// One push subscription delivering pre-written data to a local receiver
/// that discards bodies and answers 200 at once.
pub async fn push_scenario(ctx: &mut Ctx) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let plan = &ctx.plan;
    let bodies = (plan.dur.as_secs_f64() * 40.0).ceil() as usize; // ~40 MiB per second of plan
    let mut rates = Vec::new();
    for rep in 0..plan.reps {
        let dir = ctx.work.join(format!("push-{rep}"));
        let s = Chunkbus::start(&ctx.bin, &dir, &[])?;
        let mut c = Conn::open(s.addr).await?;
        for _ in 0..bodies {
            c.post_ok("/write?category=push", ctx.body.clone()).await?;
        }
        let total = (bodies * ctx.body.len()) as u64;
        let received = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counter = Arc::clone(&received);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let counter = Arc::clone(&counter);
                            async move {
                                use http_body_util::BodyExt;
                                let mut body = req.into_body();
                                while let Some(Ok(f)) = body.frame().await {
                                    if let Ok(d) = f.into_data() {
                                        counter.fetch_add(d.len() as u64, Ordering::Relaxed);
                                    }
                                }
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(Bytes::new()),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let spec = format!(r#"{{"category":"push","url":"http://{addr}/","group":"bench"}}"#);
        let start = Instant::now();
        let (status, _) = c
            .send(Method::POST, "/subscriptions", Bytes::from(spec))
            .await?;
        if status != 201 {
            bail!("POST /subscriptions answered {status}");
        }
        let deadline = start + Duration::from_secs(120);
        while received.load(Ordering::Relaxed) < total {
            if Instant::now() > deadline {
                bail!("push delivery did not finish within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        rates.push(total as f64 / start.elapsed().as_secs_f64());
        server.abort();
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let r = spread(rates);
    note!("push subscription: {}", mbps(r[1]));
    ctx.rows.push(row(
        "push subscription to a local receiver, 1 MiB batches",
        r,
        "MB/s",
        None,
        &format!(
            "{} MiB pre-written; one batch in flight; each 2xx stores the group position (fdatasync)",
            bodies
        ),
    ));
    Ok(())
}
