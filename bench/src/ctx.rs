//! What every scenario gets: the [`Plan`] (how long and how often to
//! measure), the [`Ctx`] (server binary, work dir, the body to send, the rows
//! measured so far) and the bodies of `message_size`-byte JSON lines.
//! This module measures nothing and starts no process.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::report::Row;

/// Body size of the latency runs: small enough that a body is one of many
/// per flush, as with real producers.
pub const LATENCY_BODY: usize = 64 << 10;

/// How long and how often a run measures.
pub struct Plan {
    /// Timed window of one measurement.
    pub dur: Duration,
    /// Untimed load before each timed window.
    pub warmup: Duration,
    /// Repetitions of the headline measurements.
    pub reps: usize,
    /// Chunks on disk in the restart measurement.
    pub restart_chunks: usize,
    /// Idle keep-alive connections in the memory measurement.
    pub idle_conns: usize,
    /// Samples of the long-poll wake-up measurement.
    pub wake_samples: usize,
}

impl Plan {
    /// The plan of a smoke, quick or full run, with `--secs` and `--reps`
    /// applied on top.
    pub fn new(smoke: bool, quick: bool, secs: Option<f64>, reps: Option<usize>) -> Self {
        let plan = if smoke {
            Self {
                dur: Duration::from_millis(300),
                warmup: Duration::from_millis(100),
                reps: 1,
                restart_chunks: 50,
                idle_conns: 50,
                wake_samples: 20,
            }
        } else if quick {
            Self {
                dur: Duration::from_secs(3),
                warmup: Duration::from_millis(500),
                reps: 1,
                restart_chunks: 1000,
                idle_conns: 2000,
                wake_samples: 200,
            }
        } else {
            Self {
                dur: Duration::from_secs(8),
                warmup: Duration::from_secs(1),
                reps: 3,
                restart_chunks: 10_000,
                idle_conns: 10_000,
                wake_samples: 1000,
            }
        };
        Self {
            dur: secs.map_or(plan.dur, Duration::from_secs_f64),
            reps: reps.unwrap_or(plan.reps).max(1),
            ..plan
        }
    }
}

/// The state a run threads through its scenarios, in table order.
pub struct Ctx {
    /// The chunkbus binary under test.
    pub bin: PathBuf,
    /// Categories the ingest load is spread over (`--categories`).
    pub categories: usize,
    /// The run's temp dir; emptied after every scenario.
    pub work: PathBuf,
    /// The body most scenarios POST (`--body-size` of `--message-size` lines).
    pub body: Bytes,
    /// Messages in `body`.
    pub msgs_per_body: usize,
    /// `--message-size`, newline included.
    pub message_size: usize,
    /// How long and how often to measure.
    pub plan: Plan,
    /// The report's rows, in the order measured.
    pub rows: Vec<Row>,
    /// Median async ingest rate of chunkbus (bytes/s), once measured.
    pub ingest_rate: Option<f64>,
    /// Closed-loop maximum with latency-sized bodies (bytes/s), once measured.
    pub latency_max: Option<f64>,
}

/// A body of whole `message_size`-byte JSON lines (`{"seq":N,"pad":"aaa…"}`),
/// at most `body_size` bytes.
pub fn make_body(message_size: usize, body_size: usize) -> Bytes {
    let mut v = Vec::with_capacity(body_size);
    let mut i = 0u64;
    while v.len() + message_size <= body_size {
        let head = format!("{{\"seq\":{i},\"pad\":\"");
        let start = v.len();
        v.extend_from_slice(head.as_bytes());
        while v.len() < start + message_size - 3 {
            v.push(b'a' + (i % 26) as u8);
        }
        v.extend_from_slice(b"\"}\n");
        v.truncate(start + message_size);
        if let Some(last) = v.last_mut() {
            *last = b'\n';
        }
        i += 1;
    }
    Bytes::from(v)
}
