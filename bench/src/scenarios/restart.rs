//! `restart`: time from spawn to `ready.json` with many chunks on disk,
//! after a clean SIGTERM and after kill -9 (which adds recovery of the open
//! chunk), checking every chunk is still listed.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::Bytes;
use hyper::Method;

use super::Scenario;
use crate::client::Conn;
use crate::ctx::Ctx;
use crate::report::row;
use crate::servers::Chunkbus;

/// The `restart` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "restart",
    about: "time to ready after SIGTERM and after kill -9 with many chunks",
    run: |ctx| Box::pin(run(ctx)),
};

/// Time to ready after SIGTERM and after kill -9 with many chunks on disk.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.plan.restart_chunks;
    let (clean, crash) = restart_time(&ctx.bin, &ctx.work.join("restart"), n).await?;
    note!("restart with {n} chunks: clean {clean:?}, after kill -9 {crash:?}");
    ctx.rows.push(row(
        &format!("restart to ready with {n} chunks (after SIGTERM)"),
        [clean.as_secs_f64() * 1000.0; 3],
        "ms",
        None,
        "",
    ));
    ctx.rows.push(row(
        &format!("restart to ready with {n} chunks (after kill -9)"),
        [crash.as_secs_f64() * 1000.0; 3],
        "ms",
        None,
        "includes recovery of the open chunk",
    ));
    Ok(())
}

/// Writes `chunks` chunks of 4 KiB, then restarts after SIGTERM and after
/// kill -9; (clean, crash) time to ready.
async fn restart_time(bin: &Path, dir: &Path, chunks: usize) -> Result<(Duration, Duration)> {
    let mut s = Chunkbus::start(bin, dir, &["--max-chunk-size", "4096"])?;
    let mut c = Conn::open(s.addr).await?;
    let body = Bytes::from("r".repeat(4000) + "\n");
    for _ in 0..chunks {
        c.post_ok("/write?category=restart", body.clone()).await?;
    }
    drop(c);
    s.stop();
    let clean = s.spawn()?;
    s.kill9();
    let crash = s.spawn()?;
    let mut c = Conn::open(s.addr).await?;
    let (_, list) = c
        .fetch(Method::GET, "/listChunks?category=restart", Bytes::new())
        .await?;
    let n = serde_json::from_slice::<Vec<serde_json::Value>>(&list)?.len();
    if n != chunks {
        bail!("expected {chunks} chunks after restart, found {n}");
    }
    Ok((clean, crash))
}
