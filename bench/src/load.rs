//! Closed-loop load: N connections each POST (or GET) as fast as answers
//! come, after a warm-up, recording latency per request in HdrHistogram.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::Method;

use crate::client::Conn;

/// The outcome of a load run.
pub struct LoadResult {
    /// Bytes sent (writes) or received (reads) in the timed window.
    pub bytes: u64,
    /// Requests completed in the timed window.
    pub requests: u64,
    /// Seconds of the timed window.
    pub secs: f64,
    /// Latency per request, µs.
    pub hist: Histogram<u64>,
    /// Non-200 answers.
    pub errors: u64,
    /// The first non-200 answer: status and body.
    pub first_error: Option<(u16, String)>,
}

impl LoadResult {
    /// Bytes per second.
    pub fn rate(&self) -> f64 {
        self.bytes as f64 / self.secs
    }
}

/// POSTs `body` to `path` on `conns` connections for `warmup + dur`. With
/// `categories > 1`, connection `i` writes to `bench<i % categories>`.
pub async fn post_loop(
    addr: SocketAddr,
    categories: usize,
    path: &str,
    body: Bytes,
    conns: usize,
    warmup: Duration,
    dur: Duration,
) -> Result<LoadResult> {
    let start = Instant::now() + warmup;
    let end = start + dur;
    let mut tasks = Vec::new();
    for i in 0..conns {
        let path: Arc<str> = if categories > 1 {
            path.replace(
                "category=bench",
                &format!("category=bench{}", i % categories),
            )
            .into()
        } else {
            path.into()
        };
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await?;
            let mut hist = Histogram::<u64>::new(3)?;
            let (mut bytes, mut reqs, mut errors) = (0u64, 0u64, 0u64);
            let mut first_error = None;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let (status, reply) = c.fetch(Method::POST, &path, body.clone()).await?;
                if status != 200 && first_error.is_none() {
                    first_error = Some((status, String::from_utf8_lossy(&reply).trim().to_owned()));
                }
                if t >= start {
                    hist.record(t.elapsed().as_micros() as u64)?;
                    if status == 200 {
                        bytes += body.len() as u64;
                        reqs += 1;
                    } else {
                        errors += 1;
                    }
                }
            }
            anyhow::Ok((bytes, reqs, errors, hist, first_error))
        }));
    }
    let mut out = LoadResult {
        bytes: 0,
        requests: 0,
        secs: dur.as_secs_f64(),
        hist: Histogram::new(3)?,
        errors: 0,
        first_error: None,
    };
    for t in tasks {
        let (b, r, e, h, f) = t.await??;
        if out.first_error.is_none() {
            out.first_error = f;
        }
        out.bytes += b;
        out.requests += r;
        out.errors += e;
        out.hist.add(h)?;
    }
    Ok(out)
}
