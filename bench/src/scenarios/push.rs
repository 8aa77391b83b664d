//! `push`: one push subscription delivering pre-written data to a local
//! receiver (in this process) that discards bodies and answers 200 at once;
//! each 2xx stores the group position on the server.

use std::sync::atomic::{AtomicU64, Ordering};
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

/// The `push` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "push",
    about: "push subscription delivering to a local receiver",
    run: |ctx| Box::pin(run(ctx)),
};

/// One push subscription delivering pre-written data to a local receiver
/// that discards bodies and answers 200 at once.
async fn run(ctx: &mut Ctx) -> Result<()> {
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
