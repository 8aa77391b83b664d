//! `chunkbus-bench`: starts release `chunkbus` servers on 127.0.0.1 with temp
//! dirs, measures them next to this machine's ceilings in the same run, and
//! prints a Markdown table (saved with JSON under `bench/results/` for full
//! runs).
//!
//! Scenarios: raw disk ceilings, nginx HTTP ceiling, async ingest, `sync=1`
//! ingest (group commit), consume from page cache, 3-node cluster (ingest,
//! `min_sync_replicas=1`, replication lag, catch-up), tiering (pipeline per
//! core, ingest while tiering, tiered reads from S3), long-poll wake-up, restart
//! with many chunks, server memory (ingest and idle connections).

#[macro_use]
mod progress;
mod alternatives;
mod client;
mod client_bench;
mod cluster_bench;
mod disk;
mod groups_bench;
mod latency;
mod load;
mod report;
mod servers;
mod tier_bench;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use hyper::Method;

use client::Conn;
use report::{markdown, row, spread, Report, Row};
use servers::{Chunkbus, Nginx};

#[derive(Debug, Parser)]
#[command(
    name = "chunkbus-bench",
    about = "Benchmarks chunkbus next to this machine's ceilings"
)]
struct Args {
    /// Short run (under 2 minutes): 1 repetition, 3 s per measurement.
    #[arg(long)]
    quick: bool,
    /// CI smoke run: tiny counts, checks that every scenario still works.
    #[arg(long)]
    smoke: bool,
    /// Seconds per measurement (default: 8 full, 3 quick).
    #[arg(long)]
    secs: Option<f64>,
    /// Repetitions of the headline measurements (default: 3 full, 1 quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Message size in bytes (newline included).
    #[arg(long, default_value_t = 100)]
    message_size: usize,
    /// Body (batch) size in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    body_size: usize,
    /// The chunkbus binary (default: target/release/chunkbus).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Directory for servers' data (default: the system temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Spread the ingest load over this many categories.
    #[arg(long, default_value_t = 1)]
    categories: usize,
    /// Run only these scenarios (comma list of: ingest, alternatives, latency,
    /// sync, cluster, tier, client, groups, push, wake, restart).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Write results to bench/results/<date>.{json,md} (default for full runs
    /// of every scenario).
    #[arg(long)]
    save: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let work = match &args.work_dir {
        Some(d) => tempfile::Builder::new()
            .prefix("chunkbus-bench-")
            .tempdir_in(d)?,
        None => tempfile::Builder::new()
            .prefix("chunkbus-bench-")
            .tempdir()?,
    };
    // On Ctrl-C or SIGTERM the run future is dropped: its servers are
    // killed (Drop) and then the work dir with their data is removed, so an
    // interrupted run leaves no gigabytes behind.
    let outcome = rt.block_on(async {
        tokio::select! {
            r = run(args, work.path()) => r,
            s = interrupted() => Err(anyhow::anyhow!("interrupted by {s}")),
        }
    });
    drop(rt);
    drop(work);
    outcome
}

/// Resolves with the signal's name on SIGINT or SIGTERM.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

struct Plan {
    dur: Duration,
    warmup: Duration,
    reps: usize,
    restart_chunks: usize,
    idle_conns: usize,
    wake_samples: usize,
}

async fn run(args: Args, work: &Path) -> Result<()> {
    let plan = if args.smoke {
        Plan {
            dur: Duration::from_millis(300),
            warmup: Duration::from_millis(100),
            reps: 1,
            restart_chunks: 50,
            idle_conns: 50,
            wake_samples: 20,
        }
    } else if args.quick {
        Plan {
            dur: Duration::from_secs(3),
            warmup: Duration::from_millis(500),
            reps: 1,
            restart_chunks: 1000,
            idle_conns: 2000,
            wake_samples: 200,
        }
    } else {
        Plan {
            dur: Duration::from_secs(8),
            warmup: Duration::from_secs(1),
            reps: 3,
            restart_chunks: 10_000,
            idle_conns: 10_000,
            wake_samples: 1000,
        }
    };
    let plan = Plan {
        dur: args.secs.map_or(plan.dur, Duration::from_secs_f64),
        reps: args.reps.unwrap_or(plan.reps).max(1),
        ..plan
    };
    let root = workspace_root();
    let bin = args
        .server_bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/chunkbus"));
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release --bin chunkbus` (make bench does)",
            bin.display()
        );
    }
    let body = make_body(args.message_size, args.body_size);
    let mut ctx = Ctx {
        bin,
        categories: args.categories.max(1),
        work: work.to_path_buf(),
        msgs_per_body: body.len() / args.message_size,
        message_size: args.message_size,
        body,
        plan,
        rows: Vec::new(),
        ingest_rate: None,
        latency_max: None,
    };
    note!(
        "bench: {:?} per measurement, {} repetition(s), body {} B of {}-byte messages",
        ctx.plan.dur,
        ctx.plan.reps,
        ctx.body.len(),
        args.message_size
    );
    let warm_limit = if args.smoke {
        0
    } else if args.quick {
        4 << 30
    } else {
        20 << 30
    };
    if warm_limit > 0 {
        let (n, secs) = warm_guest_memory(warm_limit);
        note!(
            "warmed {:.1} GiB of guest memory in {secs:.1} s",
            n as f64 / f64::from(1u32 << 30)
        );
    }
    let want = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let selected: Vec<&str> = SCENARIOS.iter().copied().filter(|s| want(s)).collect();
    let bar = progress::start(selected.len() as u64);
    for name in selected {
        bar.set_message(name);
        match name {
            "ingest" => ingest_scenarios(&mut ctx).await?,
            "alternatives" => alternatives_scenario(&mut ctx).await?,
            "latency" => latency_scenario(&mut ctx).await?,
            "sync" => sync_scenario(&mut ctx).await?,
            "cluster" => cluster_bench::cluster_scenarios(&mut ctx).await?,
            "tier" => tier_bench::tier_scenarios(&mut ctx).await?,
            "client" => client_bench::client_scenarios(&mut ctx).await?,
            "groups" => groups_bench::groups_scenarios(&mut ctx).await?,
            "push" => groups_bench::push_scenario(&mut ctx).await?,
            "wake" => wake_and_idle_scenarios(&mut ctx).await?,
            "restart" => restart_scenario(&mut ctx).await?,
            other => bail!("unknown scenario {other}"),
        }
        // Whatever a scenario left behind (its servers are gone now).
        remove_contents(work);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let rows = std::mem::take(&mut ctx.rows);
    let report = Report {
        date: utc_now(),
        commit: git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: machine(work),
        rows,
    };
    let md = markdown(&report);
    println!("{md}");
    if args.save || !(args.quick || args.smoke || !args.only.is_empty()) {
        let dir = root.join("bench/results");
        std::fs::create_dir_all(&dir)?;
        let stem = report.date.replace(':', "-");
        std::fs::write(
            dir.join(format!("{stem}.json")),
            serde_json::to_vec_pretty(&report)?,
        )?;
        std::fs::write(dir.join(format!("{stem}.md")), &md)?;
        std::fs::write(dir.join(format!("{stem}.svg")), report::svg(&report))?;
        note!("saved bench/results/{stem}.{{json,md,svg}}");
    }
    Ok(())
}

struct Ctx {
    bin: PathBuf,
    categories: usize,
    work: PathBuf,
    body: Bytes,
    msgs_per_body: usize,
    message_size: usize,
    plan: Plan,
    rows: Vec<Row>,
    /// Median async ingest rate of chunkbus (bytes/s), once measured.
    ingest_rate: Option<f64>,
    /// Closed-loop maximum with latency-sized bodies (bytes/s), once measured.
    latency_max: Option<f64>,
}

/// Ceilings (raw disk with fdatasync every 1 s, nginx discarding bodies),
/// async ingest against the lower one, then consume and memory.
async fn ingest_scenarios(ctx: &mut Ctx) -> Result<()> {
    let (plan, body, work) = (&ctx.plan, ctx.body.clone(), ctx.work.clone());
    let disk = repeat(plan.reps, || {
        disk::write_with_periodic_sync(&work, &body, plan.dur, Duration::from_secs(1))
    })?;
    note!("ceiling raw write+fdatasync/1s: {}", mbps(disk[1]));
    let nginx = match Nginx::start(&work.join("nginx"))? {
        Some(n) => {
            let mut v = Vec::new();
            for _ in 0..plan.reps {
                v.push(
                    load::post_loop(n.addr, 1, "/", body.clone(), 4, plan.warmup, plan.dur)
                        .await?
                        .rate(),
                );
            }
            Some(spread(v))
        }
        None => None,
    };
    let ceiling = match nginx {
        Some(n) if n[1] < disk[1] => (n[1], "nginx discard".to_owned()),
        _ => (disk[1], "raw write+fdatasync/1s".to_owned()),
    };
    ctx.rows.push(row(
        "ceiling: raw sequential write, fdatasync every 1 s",
        disk,
        "MB/s",
        None,
        "same filesystem, same run",
    ));
    if let Some(n) = nginx {
        note!("ceiling nginx discarding bodies: {}", mbps(n[1]));
        ctx.rows.push(row(
            "ceiling: nginx discarding 1 MiB POST bodies, 4 conns",
            n,
            "MB/s",
            None,
            "",
        ));
    }

    let mut ingest = Vec::new();
    let mut hist = Histogram::<u64>::new(3)?;
    let mut rss = 0;
    let mut last = None;
    for rep in 0..plan.reps {
        let dir = work.join(format!("ingest-{rep}"));
        // Smoke runs are too short to fill a 64 MiB chunk with a debug
        // build; the consume step needs sealed chunks.
        let small: &[&str] = if plan.dur < Duration::from_secs(1) {
            &["--max-chunk-size", "4MiB"]
        } else {
            &[]
        };
        let s = Chunkbus::start(&ctx.bin, &dir, small)?;
        let r = load::post_loop(
            s.addr,
            ctx.categories,
            "/write?category=bench",
            body.clone(),
            4,
            plan.warmup,
            plan.dur,
        )
        .await?;
        if r.errors > 0 {
            bail!(
                "{} write errors during ingest, first: {:?}",
                r.errors,
                r.first_error
            );
        }
        ingest.push(r.rate());
        hist.add(&r.hist)?;
        rss = rss.max(s.rss_anon().unwrap_or(0));
        if rep + 1 == plan.reps {
            last = Some(s);
        } else {
            drop(s);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let ingest = spread(ingest);
    ctx.ingest_rate = Some(ingest[1]);
    note!("ingest async: {}", mbps(ingest[1]));
    ctx.rows.push(row(
        &format!(
            "ingest, {}-byte messages in 1 MiB bodies, 4 conns, default durability",
            ctx.message_size
        ),
        ingest,
        "MB/s",
        Some(ceiling),
        &format!(
            "{:.0} msgs/s; reply p50 {} p99 {}",
            ingest[1] / body.len() as f64 * ctx.msgs_per_body as f64,
            us(hist.value_at_quantile(0.5)),
            us(hist.value_at_quantile(0.99))
        ),
    ));
    let s = last.context("ingest server")?;
    let rate = consume(&s, plan.dur).await?;
    note!("consume: {}", mbps(rate));
    ctx.rows.push(row(
        "consume from page cache, 1 consumer, 16 MiB reads",
        [rate; 3],
        "MB/s",
        None,
        "sealed chunks just written",
    ));
    ctx.rows.push(row(
        "server RssAnon during ingest (4 conns)",
        [rss as f64 / 1_048_576.0; 3],
        "MiB",
        None,
        "mapped chunk pages not counted",
    ));
    Ok(())
}

/// Every scenario, in the order they run.
const SCENARIOS: [&str; 11] = [
    "ingest",
    "alternatives",
    "latency",
    "sync",
    "cluster",
    "tier",
    "client",
    "groups",
    "push",
    "wake",
    "restart",
];

/// Redis Streams and NATS JetStream ingesting the same message size, as
/// ratios to chunkbus's async ingest.
async fn alternatives_scenario(ctx: &mut Ctx) -> Result<()> {
    let (plan, work, m) = (&ctx.plan, ctx.work.clone(), ctx.message_size);
    let vs = ctx.ingest_rate.map(|r| (r, "chunkbus ingest".to_owned()));
    let mut redis = Vec::new();
    for rep in 0..plan.reps {
        let dir = work.join(format!("redis-{rep}"));
        let Some(d) = alternatives::start_redis(&dir)? else {
            break;
        };
        redis.push(alternatives::redis_xadd(d.addr, m, 4, plan.warmup, plan.dur).await?);
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
        let Some(d) = alternatives::start_nats(&dir)? else {
            break;
        };
        nats.push(alternatives::nats_publish(d.addr, m, 4, plan.warmup, plan.dur).await?);
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

/// Open-loop produce → consume latency at 25/50/75% of the closed-loop
/// maximum for the same body size.
async fn latency_scenario(ctx: &mut Ctx) -> Result<()> {
    let (plan, work, m) = (&ctx.plan, ctx.work.clone(), ctx.message_size);
    let body_size = LATENCY_BODY.min(ctx.body.len());
    let body = make_body(m, body_size);
    let dir = work.join("latency");
    let s = Chunkbus::start(&ctx.bin, &dir, &[])?;
    let max = load::post_loop(
        s.addr,
        1,
        "/write?category=max",
        body,
        4,
        plan.warmup,
        plan.dur,
    )
    .await?
    .rate();
    Conn::open(s.addr).await?.ack_sealed("max").await?;
    ctx.latency_max = Some(max);
    note!(
        "latency: closed-loop max with {body_size} B bodies: {}",
        mbps(max)
    );
    ctx.rows.push(row(
        &format!(
            "ingest max, {} KiB bodies, 4 conns (basis of the latency rates)",
            body_size >> 10
        ),
        [max; 3],
        "MB/s",
        None,
        "closed loop",
    ));
    for pct in [25u32, 50, 75] {
        let rate = max * f64::from(pct) / 100.0;
        let mut p99s = Vec::new();
        let mut hist = Histogram::<u64>::new(3)?;
        let mut replies = Histogram::<u64>::new(3)?;
        let (mut achieved, mut saturated) = (0.0f64, false);
        for rep in 0..plan.reps {
            let r = latency::open_loop(
                s.addr,
                s.addr,
                &format!("lat{pct}r{rep}"),
                m,
                body_size,
                rate,
                plan.warmup,
                plan.dur,
            )
            .await?;
            Conn::open(s.addr)
                .await?
                .ack_sealed(&format!("lat{pct}r{rep}"))
                .await?;
            p99s.push(r.hist.value_at_quantile(0.99) as f64 / 1000.0);
            hist.add(&r.hist)?;
            replies.add(&r.replies)?;
            achieved = achieved.max(r.achieved);
            saturated |= r.saturated;
        }
        let p = |q: f64| us(hist.value_at_quantile(q));
        note!(
            "latency at {pct}%: p99 {} (write reply p99 {})",
            p(0.99),
            us(replies.value_at_quantile(0.99))
        );
        let mut r = row(
            &format!(
                "end-to-end latency p99 at {pct}% of max ({:.0} MB/s open loop)",
                rate / 1e6
            ),
            spread(p99s),
            "ms",
            None,
            &format!(
                "p50 {} p99 {} p99.9 {} max {}; write reply p50 {} p99 {}; {} bodies; sent {:.0} MB/s{}",
                p(0.5),
                p(0.99),
                p(0.999),
                us(hist.max()),
                us(replies.value_at_quantile(0.5)),
                us(replies.value_at_quantile(0.99)),
                hist.len(),
                achieved / 1e6,
                if saturated {
                    "; SATURATED (generator had to wait)"
                } else {
                    ""
                }
            ),
        );
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        r.percentiles = Some([ms(0.5), ms(0.99), ms(0.999), hist.max() as f64 / 1000.0]);
        ctx.rows.push(r);
    }
    Ok(())
}

/// Body size of the latency runs: small enough that a body is one of many
/// per flush, as with real producers.
const LATENCY_BODY: usize = 64 << 10;

/// `sync=1` ingest with 8 writers (group commit) vs a raw write+fdatasync loop.
async fn sync_scenario(ctx: &mut Ctx) -> Result<()> {
    let (plan, body, work) = (&ctx.plan, ctx.body.clone(), ctx.work.clone());
    let mut rates = Vec::new();
    let mut hist = Histogram::<u64>::new(3)?;
    for rep in 0..plan.reps {
        let dir = work.join(format!("sync-{rep}"));
        let s = Chunkbus::start(&ctx.bin, &dir, &[])?;
        let r = load::post_loop(
            s.addr,
            ctx.categories,
            "/write?category=bench&sync=1",
            body.clone(),
            8,
            plan.warmup,
            plan.dur,
        )
        .await?;
        rates.push(r.rate());
        hist.add(&r.hist)?;
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut raw = Vec::new();
    let mut raw_hist = Histogram::<u64>::new(3)?;
    for _ in 0..plan.reps {
        let (r, h) = disk::write_sync_each(&work, &body, plan.dur)?;
        raw.push(r);
        raw_hist.add(&h)?;
    }
    let (rates, raw) = (spread(rates), spread(raw));
    note!(
        "ingest sync=1: {} (raw write+fdatasync loop {})",
        mbps(rates[1]),
        mbps(raw[1])
    );
    ctx.rows.push(row(
        "ceiling: raw write+fdatasync loop of 1 MiB blocks",
        raw,
        "MB/s",
        None,
        &format!(
            "p50 {} p99 {}",
            us(raw_hist.value_at_quantile(0.5)),
            us(raw_hist.value_at_quantile(0.99))
        ),
    ));
    ctx.rows.push(row(
        "ingest sync=1, 1 MiB bodies, 8 conns (group commit)",
        rates,
        "MB/s",
        Some((raw[1], "raw write+fdatasync loop".into())),
        &format!(
            "reply p50 {} p99 {} p99.9 {}",
            us(hist.value_at_quantile(0.5)),
            us(hist.value_at_quantile(0.99)),
            us(hist.value_at_quantile(0.999))
        ),
    ));
    Ok(())
}

/// Long-poll wake-up latency, then memory with many idle connections.
async fn wake_and_idle_scenarios(ctx: &mut Ctx) -> Result<()> {
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

/// Time to ready after SIGTERM and after kill -9 with many chunks on disk.
async fn restart_scenario(ctx: &mut Ctx) -> Result<()> {
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

async fn consume(s: &Chunkbus, dur: Duration) -> Result<f64> {
    let mut c = Conn::open(s.addr).await?;
    let sealed: Vec<String> = c
        .list_chunks("bench")
        .await?
        .iter()
        .filter(|c| c["complete"].as_bool() == Some(true))
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    if sealed.is_empty() {
        bail!("no sealed chunks to consume");
    }
    let start = Instant::now();
    let deadline = start + dur;
    let mut bytes = 0u64;
    while Instant::now() < deadline {
        for name in &sealed {
            bytes += c.read_chunk("bench", name, Some(deadline)).await?;
            if Instant::now() >= deadline {
                break;
            }
        }
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64())
}

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

fn make_body(message_size: usize, body_size: usize) -> Bytes {
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

fn repeat(n: usize, mut f: impl FnMut() -> Result<f64>) -> Result<[f64; 3]> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(f()?);
    }
    Ok(spread(v))
}

fn mbps(v: f64) -> String {
    format!("{:.0} MB/s", v / 1e6)
}

fn us(v: u64) -> String {
    if v >= 1000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine(work: &Path) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb >> 20);
    let fs = Command::new("df")
        .args(["--output=source,fstype"])
        .arg(work)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} GiB RAM, disk {fs}")
}

/// Removes everything inside `dir`, keeping `dir`.
fn remove_contents(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Touches (and frees) most of the available memory once, before any
/// measurement. On this VM the first use of a guest page is several times
/// slower than any later use (the hypervisor backs it lazily), so without
/// this whichever measurement first grows the page cache into untouched
/// memory runs at about half speed (seen: the producer run right after the
/// raw-POST run at 0.55x of the same producer run first, on tmpfs).
/// Returns (bytes touched, seconds).
fn warm_guest_memory(limit: u64) -> (u64, f64) {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    // Leave room for the servers and the kernel.
    let n = available.saturating_sub(4 << 30).min(limit);
    let t = Instant::now();
    let mut touched = 0u64;
    // 1 GiB at a time so the peak stays n and a failure costs little.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    while touched < n {
        let len = (n - touched).min(1 << 30) as usize;
        blocks.push(vec![1u8; len]);
        touched += len as u64;
    }
    drop(blocks);
    (touched, t.elapsed().as_secs_f64())
}

fn raise_fd_limit() {
    // The servers inherit this limit; 10,000 idle connections need it.
    #[allow(unsafe_code)]
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
