//! `client`: the client crate against raw HTTP on the same server: a `Producer`
//! sending 100-byte messages one `send` at a time vs sequential 1 MiB POSTs
//! of the same messages (both one category, so one request in flight, the
//! price of order) — idempotent (the default) and not, with 1 MiB and
//! 4 KiB batches, for the price of idempotence — and a `Consumer` vs
//! sequential raw `/read`s.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions, Producer, ProducerConfig};

use super::Scenario;
use crate::client::Conn;
use crate::ctx::Ctx;
use crate::host;
use crate::load;
use crate::report::{mbps, row, spread};
use crate::servers::Chunkbus;

/// The `client` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "client",
    about: "client Producer and Consumer vs raw POSTs and /reads on the same server",
    run: |ctx| Box::pin(run(ctx)),
};

/// Category the producer measurement writes to.
const PRODUCER_CATEGORY: &str = "prod";

/// One write measurement of a rep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Raw sequential 1 MiB POSTs.
    Raw,
    /// The crate's `Producer` with these settings.
    Producer {
        idempotent: bool,
        max_batch_bytes: usize,
    },
}

/// The write measurements of each rep (rotated, so none always goes first).
const WRITERS: [Writer; 5] = [
    Writer::Raw,
    Writer::Producer {
        idempotent: true,
        max_batch_bytes: 1 << 20,
    },
    Writer::Producer {
        idempotent: false,
        max_batch_bytes: 1 << 20,
    },
    Writer::Producer {
        idempotent: true,
        max_batch_bytes: 4 << 10,
    },
    Writer::Producer {
        idempotent: false,
        max_batch_bytes: 4 << 10,
    },
];

/// Producer vs raw POSTs (idempotent or not, large and small batches),
/// consumer vs raw reads; `reps` times each.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); WRITERS.len()];
    let (mut raw_r, mut cons_r) = (vec![], vec![]);
    let mut peak_buffer = 0usize;
    for rep in 0..plan.reps {
        // Each write measurement gets a fresh server and data dir (a second
        // measurement on the same server ran measurably slower, whichever
        // it was), in rotating order, from a clean page cache state.
        // Each server is stopped and its data deleted before the next
        // starts, so all start from the same memory state (page cache
        // growing into memory not used before is slow here); the raw
        // POSTs' data is kept for the read pair.
        let mut kept = None;
        for k in 0..WRITERS.len() {
            let w = (rep + k) % WRITERS.len();
            host::settle();
            let dir = ctx.work.join(format!("client-{rep}-{w}"));
            let s = Chunkbus::start(&ctx.bin, &dir, &[])?;
            match WRITERS[w] {
                Writer::Raw => {
                    let raw = load::post_loop(
                        s.addr,
                        1,
                        "/write?category=bench",
                        ctx.body.clone(),
                        1,
                        plan.warmup,
                        plan.dur,
                    )
                    .await?;
                    if raw.errors > 0 {
                        bail!("{} write errors, first: {:?}", raw.errors, raw.first_error);
                    }
                    rates[w].push(raw.rate());
                }
                Writer::Producer {
                    idempotent,
                    max_batch_bytes,
                } => {
                    let config = ProducerConfig::default()
                        .idempotent(idempotent)
                        .max_batch_bytes(max_batch_bytes);
                    let (rate, peak) = produce(&s, config, ctx.message_size, plan.dur).await?;
                    rates[w].push(rate);
                    if max_batch_bytes == 1 << 20 {
                        peak_buffer = peak_buffer.max(peak);
                    }
                }
            }
            if WRITERS[w] == Writer::Raw {
                // Stopped now, read after the other writers ran.
                drop(s);
                kept = Some(dir);
            } else {
                drop(s);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        let Some(dir) = kept else {
            bail!("no server to read from");
        };
        let s = Chunkbus::start(&ctx.bin, &dir, &[])?;
        let category = "bench";
        // Both readers read the whole category, from page cache.
        let _ = read_raw(&s, category).await?; // warms the page cache
        host::settle();
        for first in [rep % 2 == 0, rep % 2 == 1] {
            if first {
                raw_r.push(read_raw(&s, category).await?);
            } else {
                cons_r.push(read_consumer(&s, category).await?);
            }
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let raw_w = rates[0].clone();
    let prod_w = rates[1].clone();
    // The disk drifts between measurements; a ratio of medians taken at
    // different moments says little, so report the median of the ratios
    // of each back-to-back pair too.
    let paired = |a: &[f64], b: &[f64]| spread(a.iter().zip(b).map(|(x, y)| x / y).collect());
    let (w_ratio, r_ratio) = (paired(&prod_w, &raw_w), paired(&cons_r, &raw_r));
    let (raw_w, prod_w, raw_r, cons_r) =
        (spread(raw_w), spread(prod_w), spread(raw_r), spread(cons_r));
    note!(
        "client: producer {} vs raw POSTs {}; consumer {} vs raw reads {}",
        mbps(prod_w[1]),
        mbps(raw_w[1]),
        mbps(cons_r[1]),
        mbps(raw_r[1])
    );
    let m = ctx.message_size;
    ctx.rows.push(row(
        "raw sequential 1 MiB POSTs, 1 conn (ceiling of an ordered producer)",
        raw_w,
        "MB/s",
        None,
        &format!("{:.0} msgs/s", raw_w[1] / m as f64),
    ));
    ctx.rows.push(row(
        &format!("client Producer (idempotent, the default), {m}-byte messages, one send() each, 1 category, 1 MiB batches"),
        prod_w,
        "MB/s",
        Some((raw_w[1], "raw POSTs".to_owned())),
        &format!(
            "paired ratio to raw POSTs {:.2}× ({:.2}–{:.2}); {:.0} msgs/s; peak buffered {:.1} MiB (bound 16 MiB)",
            w_ratio[1],
            w_ratio[0],
            w_ratio[2],
            prod_w[1] / m as f64,
            peak_buffer as f64 / 1_048_576.0
        ),
    ));
    // The price of idempotence: each idempotent measurement over the
    // plain one of the same rep (goal ≥ 0.90×).
    let idem_large = paired(&rates[1], &rates[2]);
    let idem_small = paired(&rates[3], &rates[4]);
    let plain_large = spread(rates[2].clone());
    ctx.rows.push(row(
        &format!("client Producer, idempotence off, {m}-byte messages, 1 MiB batches"),
        plain_large,
        "MB/s",
        Some((raw_w[1], "raw POSTs".to_owned())),
        &format!(
            "idempotent / this, paired: {:.2}× ({:.2}–{:.2}; goal ≥ 0.90×)",
            idem_large[1], idem_large[0], idem_large[2]
        ),
    ));
    let (small_idem, small_plain) = (spread(rates[3].clone()), spread(rates[4].clone()));
    ctx.rows.push(row(
        &format!("client Producer, idempotent, {m}-byte messages, 4 KiB batches"),
        small_idem,
        "MB/s",
        Some((raw_w[1], "raw POSTs".to_owned())),
        &format!(
            "{:.0} batches/s; per-request costs dominate",
            small_idem[1] / 4096.0
        ),
    ));
    ctx.rows.push(row(
        &format!("client Producer, idempotence off, {m}-byte messages, 4 KiB batches"),
        small_plain,
        "MB/s",
        Some((raw_w[1], "raw POSTs".to_owned())),
        &format!(
            "idempotent / this, paired: {:.2}× ({:.2}–{:.2}; goal ≥ 0.90×)",
            idem_small[1], idem_small[0], idem_small[2]
        ),
    ));
    ctx.rows.push(row(
        "raw sequential /read, 16 MiB, 1 conn",
        raw_r,
        "MB/s",
        None,
        "page cache",
    ));
    ctx.rows.push(row(
        "client Consumer, 16 MiB reads, follow=false",
        cons_r,
        "MB/s",
        Some((raw_r[1], "raw /read".to_owned())),
        &format!(
            "paired ratio to raw reads {:.2}× ({:.2}–{:.2}); page cache, includes its listChunks calls",
            r_ratio[1], r_ratio[0], r_ratio[2]
        ),
    ));
    Ok(())
}

/// Sends messages through a `Producer` for `dur`, then flushes; returns
/// (bytes per second including the flush, peak buffered bytes).
async fn produce(
    s: &Chunkbus,
    config: ProducerConfig,
    message_size: usize,
    dur: Duration,
) -> Result<(f64, usize)> {
    let client = Client::new(&format!("http://{}", s.addr))?;
    let producer = Producer::new(client, config);
    let lane = producer.category(PRODUCER_CATEGORY)?;
    let msg = vec![b'm'; message_size.saturating_sub(1).max(1)];
    let start = Instant::now();
    let (mut n, mut peak) = (0u64, 0usize);
    while start.elapsed() < dur {
        for _ in 0..1024 {
            lane.enqueue(&msg).await?;
        }
        n += 1024;
        peak = peak.max(producer.buffered_bytes());
    }
    producer.flush().await?;
    let bytes = n * (msg.len() as u64 + 1);
    Ok((bytes as f64 / start.elapsed().as_secs_f64(), peak))
}

async fn read_raw(s: &Chunkbus, category: &str) -> Result<f64> {
    let mut c = Conn::open(s.addr).await?;
    let chunks = c.list_chunks(category).await?;
    let start = Instant::now();
    let mut bytes = 0u64;
    for name in chunks.iter().filter_map(|c| c["name"].as_str()) {
        bytes += c.read_chunk(category, name, None).await?;
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64())
}

async fn read_consumer(s: &Chunkbus, category: &str) -> Result<f64> {
    let client = Client::new(&format!("http://{}", s.addr))?;
    let config = ConsumerConfig::default()
        .max_read_bytes(16 << 20)
        .follow(false);
    let start = Instant::now();
    let mut consumer = Consumer::start(client, category, config, Positions::default())?;
    let mut bytes = 0u64;
    while let Some(batch) = consumer.next().await? {
        bytes += batch.data.len() as u64;
        consumer.ack(&batch).await?;
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64())
}
