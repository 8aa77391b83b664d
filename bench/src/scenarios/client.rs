//! `client`: the client crate against raw HTTP on the same server: a `Producer`
//! sending 100-byte messages one `send` at a time vs sequential 1 MiB POSTs
//! of the same messages (both one category, so one request in flight, the
//! price of order), and a `Consumer` vs sequential raw `/read`s.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions, Producer, ProducerConfig};

use super::Scenario;
use crate::client::Conn;
use crate::ctx::Ctx;
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

/// Producer vs raw POSTs, consumer vs raw reads; `reps` times each.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let (mut raw_w, mut prod_w, mut raw_r, mut cons_r) = (vec![], vec![], vec![], vec![]);
    let mut peak_buffer = 0usize;
    for rep in 0..plan.reps {
        // Each write measurement gets a fresh server and data dir (a second
        // measurement on the same server ran measurably slower, whichever
        // it was), in alternating order, from a clean page cache state.
        // The first server of a pair is stopped and its data deleted
        // before the second starts, so both start from the same memory
        // state (page cache growing into memory not used before is slow
        // here); the second one's data is read by the read pair.
        let mut kept = None;
        for (i, is_raw) in [rep % 2 == 0, rep % 2 == 1].into_iter().enumerate() {
            settle();
            let dir = ctx.work.join(format!("client-{rep}-{is_raw}"));
            let s = Chunkbus::start(&ctx.bin, &dir, &[])?;
            let category = if is_raw {
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
                raw_w.push(raw.rate());
                "bench"
            } else {
                let (rate, peak) = produce(&s, ctx.message_size, plan.dur).await?;
                prod_w.push(rate);
                peak_buffer = peak_buffer.max(peak);
                PRODUCER_CATEGORY
            };
            if i == 1 {
                kept = Some((s, dir, category));
            } else {
                drop(s);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        let Some((s, dir, category)) = kept else {
            bail!("no server to read from");
        };
        // Both readers read the whole category, from page cache.
        settle();
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
        &format!("client Producer, {m}-byte messages, one send() each, 1 category"),
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
async fn produce(s: &Chunkbus, message_size: usize, dur: Duration) -> Result<(f64, usize)> {
    let client = Client::new(&format!("http://{}", s.addr))?;
    let producer = Producer::new(client, ProducerConfig::default());
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

/// Writes back dirty pages so one measurement does not pay for another's.
fn settle() {
    rustix::fs::sync();
}
