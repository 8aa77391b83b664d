//! `scaleout`: five servers on this machine ingesting through all five,
//! with `--replication-factor 2` vs 5 (every server holds everything, the
//! chukcha way): aggregate ingest, and the bytes the servers wrote to disk
//! per ingested byte (from `/proc/<pid>/io`, counted when pages are
//! dirtied, after replication drained); then a whole-chunk read from a
//! holder vs through a server that does not hold the chunk (relayed), and
//! the replication lag (produce on one server, follow a copy on another)
//! at half the R=2 maximum.
//! All five share one disk here, so the ceiling for R copies is the raw
//! disk rate / R.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Scenario;
use crate::client::Conn;
use crate::ctx::Ctx;
use crate::report::{mbps, row, spread};
use crate::servers::Chunkbus;
use crate::{disk, latency, load};

/// The `scaleout` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "scaleout",
    about: "5 servers: replication factor 2 vs 5, bytes written per ingested byte, relayed reads",
    run: |ctx| Box::pin(run(ctx)),
};

/// Servers in the cluster.
const N: usize = 5;

/// Five chunkbus processes on fixed loopback ports, peers of each other.
struct Five {
    nodes: Vec<Chunkbus>,
}

impl Five {
    fn start(ctx: &Ctx, tag: &str, factor: usize) -> Result<Self> {
        let factor = factor.to_string();
        let nodes = crate::servers::start_cluster(
            &ctx.bin,
            &ctx.work,
            tag,
            N,
            &["--replication-factor", &factor],
        )?;
        Ok(Self { nodes })
    }

    /// Bytes the servers caused to be written to disk so far.
    fn written(&self) -> Result<u64> {
        self.nodes.iter().map(|n| write_bytes(n.pid())).sum()
    }

    fn remove(self, ctx: &Ctx, tag: &str) {
        drop(self);
        for i in 1..=N {
            let _ = std::fs::remove_dir_all(ctx.work.join(format!("{tag}-n{i}")));
        }
    }
}

/// `write_bytes` of `/proc/<pid>/io`.
fn write_bytes(pid: u32) -> Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .with_context(|| format!("/proc/{pid}/io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .context("no write_bytes in /proc/<pid>/io")
}

/// One measurement: ingest through all five for the plan's duration, then
/// wait until the servers stop writing (replication drained).
struct Run {
    rate: f64,
    written_per_byte: f64,
}

async fn ingest(ctx: &Ctx, five: &Five) -> Result<Run> {
    let before = five.written()?;
    let loads = five.nodes.iter().map(|n| {
        load::post_loop(
            n.addr,
            1,
            "/write?category=bench",
            ctx.body.clone(),
            2,
            Duration::ZERO,
            ctx.plan.dur,
        )
    });
    let results = futures_util::future::try_join_all(loads).await?;
    let mut ingested = 0u64;
    let mut rate = 0.0;
    for r in &results {
        if r.errors > 0 {
            bail!("{} write errors, first: {:?}", r.errors, r.first_error);
        }
        ingested += r.bytes;
        rate += r.rate();
    }
    // Replication drained: nothing more written for a second (at most 2 min).
    let t = Instant::now();
    let mut last = five.written()?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = five.written()?;
        if now == last || t.elapsed() > Duration::from_secs(120) {
            break;
        }
        last = now;
    }
    let written = five.written()? - before;
    Ok(Run {
        rate,
        written_per_byte: written as f64 / ingested.max(1) as f64,
    })
}

/// Reads one sealed chunk of `bench` whole, from a holder and through a
/// server that holds no copy: (holder MB/s, relayed MB/s).
async fn read_pair(five: &Five) -> Result<Option<(f64, f64)>> {
    let addr_of = |name: &str| -> Option<SocketAddr> {
        let i: usize = name.strip_prefix('n')?.parse().ok()?;
        five.nodes.get(i.checked_sub(1)?).map(|n| n.addr)
    };
    let mut c = Conn::open(five.nodes[0].addr).await?;
    let list = c.list_chunks("bench").await?;
    let Some(chunk) = list.iter().find(|e| e["complete"] == true) else {
        return Ok(None);
    };
    let name = chunk["name"].as_str().unwrap_or_default().to_owned();
    let holders: Vec<String> = chunk["holders"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let holder = holders.first().and_then(|h| addr_of(h.as_str()));
    let other = (1..=N)
        .map(|i| format!("n{i}"))
        .find(|n| !holders.contains(n))
        .and_then(|n| addr_of(n.as_str()));
    let (Some(holder), Some(other)) = (holder, other) else {
        return Ok(None);
    };
    let mut rates = Vec::new();
    for addr in [holder, other, holder, other] {
        let mut c = Conn::open(addr).await?;
        let t = Instant::now();
        let n = c.read_chunk("bench", &name, None).await?;
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    // The second pass of each (page cache warm for both).
    Ok(Some((rates[2], rates[3])))
}

/// The scale-out rows.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let raw =
        disk::write_with_periodic_sync(&ctx.work, &ctx.body, ctx.plan.dur, Duration::from_secs(1))?;
    let mut by_factor = Vec::new();
    let mut reads = None;
    for factor in [2usize, 5] {
        let (mut rates, mut per_byte) = (Vec::new(), Vec::new());
        for rep in 0..ctx.plan.reps {
            let tag = format!("scaleout-r{factor}-{rep}");
            let five = Five::start(ctx, &tag, factor)?;
            let r = ingest(ctx, &five).await?;
            rates.push(r.rate);
            per_byte.push(r.written_per_byte);
            if factor == 2 && reads.is_none() {
                reads = read_pair(&five).await?;
            }
            five.remove(ctx, &tag);
        }
        by_factor.push((factor, spread(rates), spread(per_byte)));
    }
    let r2 = by_factor[0].1[1];
    let r5 = by_factor[1].1[1];
    note!(
        "scale-out: R=2 {} vs R=5 {} ({:.2}x); raw disk {}",
        mbps(r2),
        mbps(r5),
        r2 / r5.max(1.0),
        mbps(raw)
    );
    for (factor, rates, per_byte) in by_factor {
        let ceiling = raw / factor as f64;
        let extra = if factor == 2 {
            format!("; {:.2}× R=5 in the same run (goal ≥ 2×)", r2 / r5.max(1.0))
        } else {
            String::new()
        };
        ctx.rows.push(row(
            &format!("5 nodes, replication factor {factor}: ingest through all five, 2 conns each"),
            rates,
            "MB/s",
            Some((ceiling, format!("raw disk / {factor}"))),
            &format!(
                "{:.2} bytes written per ingested byte ({:.2}–{:.2}; goal ≤ {:.1}){extra}; raw disk {} shared by all five",
                per_byte[1],
                per_byte[0],
                per_byte[2],
                factor as f64 + 0.1,
                mbps(raw)
            ),
        ));
    }
    lag_row(ctx, r2).await?;
    if let Some((holder, relayed)) = reads {
        ctx.rows.push(row(
            "5 nodes, R=2: read a sealed chunk through a server without a copy (relayed)",
            [relayed; 3],
            "MB/s",
            Some((holder, "read from a holder".to_owned())),
            "one 16 MiB /read at a time, page cache warm on the holder",
        ));
    }
    Ok(())
}

/// Produce on one server, follow on a server holding a *copy* of its
/// chunks (raw long-poll `/read`s there): replication lag under a
/// replication factor.
struct OwnerToCopy {
    owner: SocketAddr,
    /// Every server: name and address.
    nodes: Vec<(String, SocketAddr)>,
    category: String,
}

impl latency::Target for OwnerToCopy {
    type Sender = latency::targets::HttpSender;

    async fn connect(&self) -> Result<Self::Sender> {
        let t = latency::targets::ChunkbusHttp {
            addr: self.owner,
            consume_addr: self.owner,
            category: self.category.clone(),
        };
        latency::Target::connect(&t).await
    }

    async fn follow(
        &self,
        mut rec: latency::Recorder,
    ) -> Result<tokio::task::JoinHandle<Result<hdrhistogram::Histogram<u64>>>> {
        let (owner, nodes, category) = (self.owner, self.nodes.clone(), self.category.clone());
        Ok(tokio::spawn(async move {
            let mut list_conn = Conn::open(owner).await?;
            // The first chunk and a holder of a copy (not the owner).
            let (mut chunk, copy_at) = loop {
                let list = list_conn.list_chunks(&category).await?;
                let found = list.first().and_then(|e| {
                    let name = e["name"].as_str()?.to_owned();
                    let holder = e["holders"].as_array()?.get(1)?.as_str()?.to_owned();
                    let addr = nodes.iter().find(|(n, _)| *n == holder)?.1;
                    Some((name, addr))
                });
                if let Some(f) = found {
                    break f;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            let mut c = Conn::open(copy_at).await?;
            let mut off = 0u64;
            loop {
                let path = format!(
                    "/read?category={category}&chunk={chunk}&off={off}&max_size=16777216&wait_ms=200"
                );
                let (st, body) = c
                    .fetch(hyper::Method::GET, &path, bytes::Bytes::new())
                    .await?;
                if st == 404 {
                    // Not copied here yet.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                if st != 200 {
                    bail!("read on the copy answered {st}");
                }
                if body.is_empty() {
                    // Sealed and read to its end: go on with the next chunk.
                    let list = c.list_chunks(&category).await?;
                    let me = list.iter().position(|e| e["name"] == chunk.as_str());
                    let done = me.is_some_and(|i| list[i]["complete"] == true);
                    if let (true, Some(next)) = (done, me.and_then(|i| list.get(i + 1))) {
                        chunk = next["name"].as_str().unwrap_or_default().to_owned();
                        off = 0;
                    }
                    continue;
                }
                off += body.len() as u64;
                for msg in body.split(|&b| b == b'\n').filter(|m| !m.is_empty()) {
                    if rec.message(msg)? {
                        return rec.into_hist();
                    }
                }
            }
        }))
    }
}

/// Replication lag at half the R=2 maximum (all of it produced on n1),
/// consumed from the server holding n1's copy.
async fn lag_row(ctx: &mut Ctx, r2_max: f64) -> Result<()> {
    let five = Five::start(ctx, "scaleout-lag", 2)?;
    let nodes: Vec<(String, SocketAddr)> = five
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("n{}", i + 1), n.addr))
        .collect();
    // Half the cluster's R=2 maximum, all of it into n1.
    let rate = r2_max / 2.0;
    let target = OwnerToCopy {
        owner: five.nodes[0].addr,
        nodes,
        category: "lag".to_owned(),
    };
    let schedule = latency::Schedule {
        message_size: ctx.message_size,
        body_size: crate::ctx::LATENCY_BODY.min(ctx.body.len()),
        rate,
        warmup: ctx.plan.warmup,
        dur: ctx.plan.dur,
        conns: 16,
    };
    let r = latency::open_loop(&target, &schedule).await?;
    five.remove(ctx, "scaleout-lag");
    let h = &r.hist;
    let p = |q: f64| crate::report::us(h.value_at_quantile(q));
    let p99 = h.value_at_quantile(0.99) as f64 / 1000.0;
    ctx.rows.push(row(
        &format!(
            "5 nodes, R=2: produce on n1 → consume from a copy, at 50% of the R=2 maximum ({:.0} MB/s open loop into n1)",
            rate / 1e6
        ),
        [p99; 3],
        "ms",
        None,
        &format!(
            "replication lag incl. consume: p50 {} p99 {} p99.9 {}{}",
            p(0.5),
            p(0.99),
            p(0.999),
            if r.saturated { "; SATURATED" } else { "" }
        ),
    ));
    Ok(())
}
