//! `latency`: the sustained ingest maximum with 64 KiB bodies (a
//! closed-loop run long enough to pass the page cache's dirty limit first),
//! then end-to-end (produce → consume) latency under an open-loop load at
//! 10/25/50/75% of it for chunkbus, Redis Streams and NATS JetStream in the
//! same run, and application-style rows: single small messages, one per
//! request, at 1,000 and 10,000 messages/s. Sets [`Ctx::latency_max`],
//! which the cluster's lag rows reuse. The load generator is
//! [`crate::latency`]; this module only plans and reports.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;

use super::Scenario;
use crate::alt_servers::{start_nats, start_redis, Daemon};
use crate::client::Conn;
use crate::ctx::{make_body, Ctx, LATENCY_BODY};
use crate::host;
use crate::latency::stages::Stages;
use crate::latency::targets::{ChunkbusClient, ChunkbusHttp, NatsJetStream, RedisStreams};
use crate::latency::{self, LatencyResult, Schedule};
use crate::load;
use crate::report::{mbps, row, spread, us, Curve};
use crate::servers::Chunkbus;

/// The `latency` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "latency",
    about: "end-to-end latency at 10/25/50/75% of the sustained maximum (open loop), next to Redis and NATS; single messages at 1k and 10k/s",
    run: |ctx| Box::pin(run(ctx)),
};

/// Longest closed-loop run before the sustained measurement (full runs).
const MAX_PASS: Duration = Duration::from_secs(60);
/// Connections sending scheduled bodies.
const CONNS: usize = 16;

/// Bytes the kernel lets be dirty before it throttles writers: `vm.dirty_bytes`,
/// or `vm.dirty_ratio` percent of the available memory.
fn dirty_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
    if let Some(b) = read("/proc/sys/vm/dirty_bytes").filter(|&b| b > 0) {
        return Some(b);
    }
    let ratio = read("/proc/sys/vm/dirty_ratio")?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024 * ratio / 100)
}

/// The systems measured at each rate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    ChunkbusHttp,
    ChunkbusClient,
    Redis,
    Nats,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            Self::ChunkbusHttp => "chunkbus (HTTP)",
            Self::ChunkbusClient => "chunkbus (Rust client)",
            Self::Redis => "Redis Streams (XADD + XREAD BLOCK, AOF everysec)",
            Self::Nats => "NATS JetStream (file storage, pull consumer)",
        }
    }
}

/// Cores (CPU seconds per second) the system's server and this bench
/// (load generator, senders and consumer) used during a run: where both
/// add up to the machine's cores, the tail is CPU queueing.
/// For chunkbus also the server's own p99 of its request stages (write,
/// append, read; µs, bucket upper bounds).
#[derive(Clone, Copy, Default)]
struct CpuUse {
    server: f64,
    bench: f64,
    /// Threads of the server / the bench runnable but waiting for a core,
    /// on average over the run (run-queue wait seconds per second).
    server_queued: f64,
    bench_queued: f64,
    stages_p99: [Option<f64>; 3],
}

/// Runs `open_loop` against `target` while measuring the CPU that the
/// server (`pid`) and this process use, and for chunkbus (`metrics`) its
/// request-stage histograms.
async fn timed_run<T: latency::Target>(
    target: &T,
    schedule: &Schedule,
    pid: Option<u32>,
    metrics: Option<std::net::SocketAddr>,
) -> Result<(LatencyResult, CpuUse)> {
    let stages_before = match metrics {
        Some(a) => Some(Stages::scrape(a).await?),
        None => None,
    };
    let before = (host::cpu_time(pid), host::cpu_time(None), Instant::now());
    let queued_before = (host::run_queue_wait(pid), host::run_queue_wait(None));
    let r = latency::open_loop(target, schedule).await?;
    let wall = before.2.elapsed().as_secs_f64().max(1e-9);
    let used = |b: Option<Duration>, a: Option<Duration>| match (b, a) {
        (Some(b), Some(a)) => a.saturating_sub(b).as_secs_f64() / wall,
        _ => 0.0,
    };
    let mut cpu = CpuUse {
        server: used(before.0, host::cpu_time(pid)),
        bench: used(before.1, host::cpu_time(None)),
        server_queued: used(queued_before.0, host::run_queue_wait(pid)),
        bench_queued: used(queued_before.1, host::run_queue_wait(None)),
        stages_p99: [None; 3],
    };
    if let (Some(a), Some(b)) = (metrics, stages_before) {
        cpu.stages_p99 = Stages::scrape(a).await?.quantiles_since(&b, 0.99);
    }
    Ok((r, cpu))
}

/// "; server p99: write ≤ …, append ≤ …, read ≤ …" (max of runs), or
/// nothing for a system without stage histograms.
fn stage_note(p99: [Option<f64>; 3]) -> String {
    if p99.iter().all(Option::is_none) {
        return String::new();
    }
    let parts: Vec<String> = ["write", "append", "read"]
        .iter()
        .zip(p99)
        .map(|(stage, v)| match v {
            Some(us) if us.is_finite() => format!("{stage} ≤ {}", crate::report::us(us as u64)),
            Some(_) => format!("{stage} > 5 s"),
            None => format!("{stage} –"),
        })
        .collect();
    format!("; server's own p99 (/metrics): {}", parts.join(", "))
}

/// One run of `system` at `schedule`; `None` when the system is not
/// installed.
async fn run_once(
    system: System,
    chunkbus: &Chunkbus,
    dir: &Path,
    name: &str,
    schedule: &Schedule,
) -> Result<Option<(LatencyResult, CpuUse)>> {
    let m = schedule.message_size;
    // Every run starts with nothing dirty and a quiet disk: without this
    // the first runs after the closed-loop calibration pay for writing back
    // its gigabytes.
    let work = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let _ = std::fs::create_dir_all(&work);
        host::settle_disk(&work);
    })
    .await?;
    let result = match system {
        System::ChunkbusHttp => {
            let t = ChunkbusHttp {
                addr: chunkbus.addr,
                consume_addr: chunkbus.addr,
                category: name.to_owned(),
            };
            timed_run(&t, schedule, Some(chunkbus.pid()), Some(chunkbus.addr)).await?
        }
        System::ChunkbusClient => {
            let t = ChunkbusClient {
                addr: chunkbus.addr,
                category: name.to_owned(),
            };
            timed_run(&t, schedule, Some(chunkbus.pid()), Some(chunkbus.addr)).await?
        }
        System::Redis => {
            let d = dir.join(name);
            let Some(daemon): Option<Daemon> = start_redis(&d)? else {
                return Ok(None);
            };
            let t = RedisStreams {
                addr: daemon.addr,
                key: name.to_owned(),
                message_size: m,
            };
            let r = timed_run(&t, schedule, Some(daemon.pid()), None).await;
            drop(daemon);
            let _ = std::fs::remove_dir_all(&d);
            r?
        }
        System::Nats => {
            let d = dir.join(name);
            let Some(daemon) = start_nats(&d)? else {
                return Ok(None);
            };
            let t = NatsJetStream {
                addr: daemon.addr,
                stream: name.to_owned(),
                message_size: m,
            };
            let r = timed_run(&t, schedule, Some(daemon.pid()), None).await;
            drop(daemon);
            let _ = std::fs::remove_dir_all(&d);
            r?
        }
    };
    if matches!(system, System::ChunkbusHttp | System::ChunkbusClient) {
        Conn::open(chunkbus.addr).await?.ack_sealed(name).await?;
    }
    Ok(Some(result))
}

/// Measures `system` `reps` times at `schedule` and pushes one row;
/// returns its median p99 (ms) unless it saturated or is not installed.
#[allow(clippy::too_many_arguments)]
async fn measure(
    ctx: &mut Ctx,
    chunkbus: &Chunkbus,
    system: System,
    what: &str,
    tag: &str,
    schedule: &Schedule,
    vs: Option<(f64, String)>,
    percent: Option<u32>,
) -> Result<Option<f64>> {
    let dir = ctx.work.join("latency-peers");
    let mut p99s = Vec::new();
    let mut hist = Histogram::<u64>::new(3)?;
    let mut replies = Histogram::<u64>::new(3)?;
    let mut lateness = Histogram::<u64>::new(3)?;
    let (mut achieved, mut saturated) = (0.0f64, false);
    let mut cpu = CpuUse::default();
    for rep in 0..ctx.plan.reps {
        let name = format!("{tag}r{rep}");
        let Some((r, used)) = run_once(system, chunkbus, &dir, &name, schedule).await? else {
            return Ok(None);
        };
        cpu.server = cpu.server.max(used.server);
        cpu.bench = cpu.bench.max(used.bench);
        cpu.server_queued = cpu.server_queued.max(used.server_queued);
        cpu.bench_queued = cpu.bench_queued.max(used.bench_queued);
        for (all, run) in cpu.stages_p99.iter_mut().zip(used.stages_p99) {
            *all = match (*all, run) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        p99s.push(r.hist.value_at_quantile(0.99) as f64 / 1000.0);
        hist.add(&r.hist)?;
        replies.add(&r.replies)?;
        lateness.add(&r.lateness)?;
        achieved = achieved.max(r.achieved);
        saturated |= r.saturated;
    }
    let p = |q: f64| us(hist.value_at_quantile(q));
    note!(
        "{what}, {}: p99 {} (acknowledged p99 {}){}",
        system.label(),
        p(0.99),
        us(replies.value_at_quantile(0.99)),
        if saturated { " SATURATED" } else { "" }
    );
    let p99 = spread(p99s);
    let mut r = row(
        &format!("end-to-end latency p99, {what}: {}", system.label()),
        p99,
        "ms",
        if saturated { None } else { vs },
        &format!(
            "p50 {} p99 {} p99.9 {} max {}; acknowledged p50 {} p99 {}; generator late p99 {}; CPU cores used (max of runs): server {:.2}, bench {:.2}; threads queued for a core: server {:.2}, bench {:.2}{}; {} messages; sent {:.1} MB/s{}",
            p(0.5),
            p(0.99),
            p(0.999),
            us(hist.max()),
            us(replies.value_at_quantile(0.5)),
            us(replies.value_at_quantile(0.99)),
            us(lateness.value_at_quantile(0.99)),
            cpu.server,
            cpu.bench,
            cpu.server_queued,
            cpu.bench_queued,
            stage_note(cpu.stages_p99),
            hist.len(),
            achieved / 1e6,
            if saturated {
                "; SATURATED (the generator had to wait, or the consumer could not keep up): not a latency figure"
            } else {
                ""
            }
        ),
    );
    if !saturated {
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        r.percentiles = Some([ms(0.5), ms(0.99), ms(0.999), hist.max() as f64 / 1000.0]);
    }
    r.curve = percent.map(|p| Curve {
        system: system.label().to_owned(),
        percent: f64::from(p),
    });
    ctx.rows.push(r);
    Ok((!saturated).then_some(p99[1]))
}

/// The sustained maximum, then the latency rows.
async fn run(ctx: &mut Ctx) -> Result<()> {
    let (plan, work, m) = (&ctx.plan, ctx.work.clone(), ctx.message_size);
    let body_size = LATENCY_BODY.min(ctx.body.len());
    let body = make_body(m, body_size);
    let s = Chunkbus::start(&ctx.bin, &work.join("latency"), &[])?;
    // A short closed-loop run first: what the page cache absorbs.
    let probe_dur = plan.dur.min(Duration::from_secs(2));
    let short = load::post_loop(
        s.addr,
        1,
        "/write?category=probe",
        body.clone(),
        4,
        plan.warmup,
        probe_dur,
    )
    .await?
    .rate();
    Conn::open(s.addr).await?.ack_sealed("probe").await?;
    // Then long enough to write 1.5 × the dirty limit before measuring,
    // so the rate is the one writeback sustains.
    let dirty = dirty_limit();
    let pass = if plan.dur < Duration::from_secs(1) {
        plan.warmup // a smoke run only checks that it works
    } else {
        let need = dirty.map_or(MAX_PASS, |d| {
            Duration::from_secs_f64(1.5 * d as f64 / short.max(1.0))
        });
        need.clamp(plan.warmup, MAX_PASS)
    };
    let started = Instant::now();
    let max = load::post_loop(s.addr, 1, "/write?category=max", body, 4, pass, plan.dur)
        .await?
        .rate();
    let took = started.elapsed();
    Conn::open(s.addr).await?.ack_sealed("max").await?;
    ctx.latency_max = Some(max);
    note!(
        "latency: sustained max with {body_size} B bodies: {} (short run {}; {:.0} s closed loop past a dirty limit of {})",
        mbps(max),
        mbps(short),
        took.as_secs_f64(),
        dirty.map_or("unknown".to_owned(), |d| format!("{:.1} GB", d as f64 / 1e9)),
    );
    ctx.rows.push(row(
        &format!(
            "ingest sustained max, {} KiB bodies, 4 conns (basis of the latency rates)",
            body_size >> 10
        ),
        [max; 3],
        "MB/s",
        Some((short, format!("short run ({} s)", probe_dur.as_secs_f64()))),
        &format!(
            "closed loop for {:.0} s ({:.0} s untimed, to write 1.5 × the dirty limit of {}), then {:.0} s measured",
            took.as_secs_f64(),
            pass.as_secs_f64(),
            dirty.map_or("unknown".to_owned(), |d| format!("{:.1} GB", d as f64 / 1e9)),
            ctx.plan.dur.as_secs_f64(),
        ),
    ));
    // A smoke run (debug builds) only checks that every system works.
    let smoke = ctx.plan.dur < Duration::from_secs(1);
    let pcts: &[u32] = if smoke { &[10] } else { &[10, 25, 50, 75] };
    for &pct in pcts {
        let rate = max * f64::from(pct) / 100.0;
        let schedule = Schedule {
            message_size: m,
            body_size,
            rate,
            warmup: ctx.plan.warmup,
            dur: ctx.plan.dur,
            conns: CONNS,
        };
        let what = format!(
            "{}-byte messages in {} KiB bodies at {pct}% of the sustained max ({:.0} MB/s)",
            m,
            body_size >> 10,
            rate / 1e6
        );
        let ours = measure(
            ctx,
            &s,
            System::ChunkbusHttp,
            &what,
            &format!("lat{pct}"),
            &schedule,
            None,
            Some(pct),
        )
        .await?;
        let vs = ours.map(|p| (p, "chunkbus p99".to_owned()));
        for peer in [System::Redis, System::Nats] {
            measure(
                ctx,
                &s,
                peer,
                &what,
                &format!("lat{pct}{}", peer as u8),
                &schedule,
                vs.clone(),
                Some(pct),
            )
            .await?;
        }
    }
    // Application style: one small message per request.
    let small = m.clamp(latency::STAMP + 2, 100);
    let app_rates: &[u32] = if smoke { &[1_000] } else { &[1_000, 10_000] };
    for &per_sec in app_rates {
        let schedule = Schedule {
            message_size: small,
            body_size: small,
            rate: f64::from(per_sec) * small as f64,
            warmup: ctx.plan.warmup,
            dur: ctx.plan.dur,
            conns: CONNS,
        };
        let what = format!("single {small}-byte messages, one per request, {per_sec}/s");
        let ours = measure(
            ctx,
            &s,
            System::ChunkbusHttp,
            &what,
            &format!("app{per_sec}h"),
            &schedule,
            None,
            None,
        )
        .await?;
        let vs = ours.map(|p| (p, "chunkbus HTTP p99".to_owned()));
        for other in [System::ChunkbusClient, System::Redis, System::Nats] {
            measure(
                ctx,
                &s,
                other,
                &what,
                &format!("app{per_sec}{}", other as u8),
                &schedule,
                vs.clone(),
                None,
            )
            .await?;
        }
    }
    Ok(())
}
