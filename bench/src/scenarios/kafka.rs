//! `kafka`: the Kafka listener next to HTTP on the same messages, in the
//! same run and on the same server, at `--message-size` and at 1 KiB
//! (Kafka's own benchmarks use 100-byte and 1 KB records). Ingest:
//! Debian's `kcat` (librdkafka, one producer, acks=1 = HTTP's default
//! durability) sends a file of lines, one record each, against the same
//! lines POSTed in `--body-size` bodies on 4 connections (the headline
//! ingest row's setup); issue 19's goal is ≥ 0.5×. Fetch: `kcat -C` reads
//! every record of the topic from the beginning against HTTP `/read`s
//! (16 MiB, one connection) of the same chunks. Both sides are checked to
//! have moved every byte; each ingest starts on a settled disk. Every row also gives the CPU seconds per GB the
//! server and the client (kcat, or this bench's HTTP client) spent: on
//! this 2-core machine a Kafka client's per-record work and the server
//! share the cores, while the HTTP client sends prebuilt bodies. Without
//! `kcat` the scenario prints SKIP and adds no row.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;

use super::Scenario;
use crate::client::Conn;
use crate::ctx::{make_body, Ctx};
use crate::host;
use crate::report::{mbps, row, spread};
use crate::servers::Chunkbus;

/// The `kafka` scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "kafka",
    about: "Kafka protocol (kcat/librdkafka) ingest and fetch vs HTTP on the same messages",
    run: |ctx| Box::pin(run(ctx)),
};

/// HTTP connections of the ingest comparison (as the headline ingest row).
const HTTP_CONNS: usize = 4;
/// Longest a kcat run may take before the scenario fails.
const KCAT_LIMIT: Duration = Duration::from_secs(120);
/// The second record size measured (Kafka's 1 KB benchmark records).
const LARGE_RECORD: usize = 1024;

/// One transfer: its rate and the CPU the server and the client spent.
#[derive(Clone, Copy)]
struct Measured {
    /// Bytes per second.
    rate: f64,
    /// Server CPU seconds per GB moved.
    server: f64,
    /// Client CPU seconds per GB moved.
    client: f64,
}

/// Min/median/max of the rates, medians of the CPU costs.
struct Summary {
    rate: [f64; 3],
    server: f64,
    client: f64,
}

fn summarize(v: &[Measured]) -> Summary {
    let median = |f: fn(&Measured) -> f64| spread(v.iter().map(f).collect())[1];
    Summary {
        rate: spread(v.iter().map(|m| m.rate).collect()),
        server: median(|m| m.server),
        client: median(|m| m.client),
    }
}

/// Runs `work` (moving `bytes`) while measuring the server's (`pid`) CPU
/// and the client's: this process's own for `kcat = false`, else the
/// CPU of the child processes waited for meanwhile (the kcat run).
async fn measured<F>(pid: u32, kcat: bool, bytes: u64, work: F) -> Result<Measured>
where
    F: std::future::Future<Output = Result<Duration>>,
{
    let client_cpu = || {
        if kcat {
            host::children_cpu_time()
        } else {
            host::cpu_time(None)
        }
    };
    let before = (host::cpu_time(Some(pid)), client_cpu());
    let elapsed = work.await?;
    let gb = bytes as f64 / 1e9;
    let per_gb = |b: Option<Duration>, a: Option<Duration>| match (b, a) {
        (Some(b), Some(a)) => a.saturating_sub(b).as_secs_f64() / gb,
        _ => f64::NAN,
    };
    Ok(Measured {
        rate: bytes as f64 / elapsed.as_secs_f64().max(1e-9),
        server: per_gb(before.0, host::cpu_time(Some(pid))),
        client: per_gb(before.1, client_cpu()),
    })
}

/// Kafka vs HTTP ingest and reads at `--message-size` and 1 KiB records.
async fn run(ctx: &mut Ctx) -> Result<()> {
    if !kcat_installed() {
        note!("SKIP kafka: kcat not installed (apt-get install kcat); no Kafka rows");
        return Ok(());
    }
    let mut sizes = vec![ctx.message_size];
    if ctx.message_size != LARGE_RECORD {
        sizes.push(LARGE_RECORD);
    }
    for size in sizes {
        let body = if size == ctx.message_size {
            ctx.body.clone()
        } else {
            make_body(size, ctx.body.len())
        };
        run_size(ctx, size, &body).await?;
    }
    Ok(())
}

/// The four rows for records of `size` bytes (newline included).
async fn run_size(ctx: &mut Ctx, size: usize, body: &Bytes) -> Result<()> {
    let plan = &ctx.plan;
    // About `dur` of ingest at a few hundred MB/s, whole bodies.
    let target: usize = if plan.dur < Duration::from_secs(1) {
        2 << 20
    } else {
        (plan.dur.as_secs_f64() * f64::from(64u32 << 20)).min(f64::from(512u32 << 20)) as usize
    };
    let bodies = (target / body.len()).max(1);
    let file = ctx.work.join(format!("kafka-messages-{size}.txt"));
    write_messages(&file, body, bodies)?;
    let total = (body.len() * bodies) as u64;
    let msgs = body.iter().filter(|&&b| b == b'\n').count() * bodies;
    let (mut k_in, mut h_in, mut k_out, mut h_out) = (vec![], vec![], vec![], vec![]);
    for rep in 0..plan.reps {
        let dir = ctx.work.join(format!("kafka-{size}-{rep}"));
        let s = Chunkbus::start(&ctx.bin, &dir, &["--kafka-listen", "127.0.0.1:0"])?;
        let kafka = kafka_addr(&dir)?;
        let pid = s.pid();
        // Each ingest starts with nothing dirty and a quiet disk, so
        // neither pays for writing back what ran before it.
        settle(&dir).await?;
        k_in.push(measured(pid, true, total, kcat_produce(&kafka, "kafka", &file)).await?);
        check_stored(&s, "kafka", total).await?;
        settle(&dir).await?;
        h_in.push(measured(pid, false, total, http_ingest(&s, "http", body, bodies)).await?);
        check_stored(&s, "http", total).await?;
        k_out.push(measured(pid, true, total, kcat_fetch(&kafka, "kafka", total)).await?);
        h_out.push(measured(pid, false, total, http_read(&s, "kafka", total)).await?);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_file(&file);
    let (k_in, h_in, k_out, h_out) = (
        summarize(&k_in),
        summarize(&h_in),
        summarize(&k_out),
        summarize(&h_out),
    );
    note!(
        "kafka {size} B: ingest {} ({:.2}× HTTP {}), fetch {} (HTTP reads {}); CPU s/GB ingest server {:.2} kcat {:.2} vs server {:.2} client {:.2}",
        mbps(k_in.rate[1]),
        k_in.rate[1] / h_in.rate[1],
        mbps(h_in.rate[1]),
        mbps(k_out.rate[1]),
        mbps(h_out.rate[1]),
        k_in.server,
        k_in.client,
        h_in.server,
        h_in.client
    );
    // What the cores allow Kafka ingest even if its server path cost what
    // HTTP's does: the client's CPU per GB is spent on the same cores.
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let bound = cores / (k_in.client + h_in.server) * 1e9;
    note!(
        "kafka {size} B: with HTTP's server cost per GB, {cores} cores allow at most {} of Kafka ingest ({:.2}× HTTP)",
        mbps(bound),
        bound / h_in.rate[1]
    );
    let per_sec = |rate: f64| rate / size as f64;
    let cpu = |m: &Summary, client: &str| {
        format!("CPU s/GB: server {:.2}, {client} {:.2}", m.server, m.client)
    };
    ctx.rows.push(row(
        &format!(
            "HTTP ingest of the Kafka rows' messages, {size}-byte messages, {HTTP_CONNS} conns"
        ),
        h_in.rate,
        "MB/s",
        None,
        &format!(
            "{msgs} messages in {bodies} bodies of {} B; {:.0} msgs/s; {}",
            body.len(),
            per_sec(h_in.rate[1]),
            cpu(&h_in, "bench client")
        ),
    ));
    ctx.rows.push(row(
        &format!("Kafka ingest: kcat (librdkafka) producer, acks=1, {size}-byte records"),
        k_in.rate,
        "MB/s",
        Some((h_in.rate[1], "HTTP ingest, same messages".to_owned())),
        &format!(
            "{:.0} records/s, one connection, linger.ms=5, batch.size=1 MB; goal ≥ 0.5× HTTP; {}; CPU ceiling with HTTP's server s/GB on {cores} cores: {} ({:.2}× HTTP); includes kcat start",
            per_sec(k_in.rate[1]),
            cpu(&k_in, "kcat"),
            mbps(bound),
            bound / h_in.rate[1]
        ),
    ));
    ctx.rows.push(row(
        &format!("HTTP reads of the Kafka rows' data ({size}-byte messages), 16 MiB /read, 1 conn"),
        h_out.rate,
        "MB/s",
        None,
        &format!("page cache; {}", cpu(&h_out, "bench client")),
    ));
    ctx.rows.push(row(
        &format!("Kafka fetch: kcat -C (librdkafka) from the beginning, {size}-byte records"),
        k_out.rate,
        "MB/s",
        Some((h_out.rate[1], "HTTP reads, same data".to_owned())),
        &format!(
            "{:.0} records/s, max.partition.fetch.bytes=16 MiB, fetch.wait.max.ms=20, queued.min.messages=10M, page cache; {}; includes kcat start",
            per_sec(k_out.rate[1]),
            cpu(&k_out, "kcat")
        ),
    ));
    Ok(())
}

/// [`host::settle_disk`] off the async workers.
async fn settle(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || host::settle_disk(&dir)).await?;
    Ok(())
}

fn kcat_installed() -> bool {
    Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `body` (whole lines) `n` times into `path`.
fn write_messages(path: &Path, body: &Bytes, n: usize) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for _ in 0..n {
        f.write_all(body)?;
    }
    f.flush()?;
    Ok(())
}

/// The Kafka listener's address from `ready.json`.
fn kafka_addr(data: &Path) -> Result<String> {
    let ready: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join(".chunkbus/ready.json"))?)?;
    ready["kafka_addr"]
        .as_str()
        .map(str::to_owned)
        .context("ready.json has no kafka_addr")
}

/// Runs kcat with `args` to completion (bounded); elapsed time and the
/// bytes it wrote to stdout.
async fn kcat(args: Vec<String>) -> Result<(Duration, u64)> {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let t = Instant::now();
        let mut child = Command::new("kcat")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn kcat")?;
        let mut out = child.stdout.take().context("kcat stdout")?;
        let mut err = child.stderr.take().context("kcat stderr")?;
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let r = out.read(&mut buf)?;
            if r == 0 {
                break;
            }
            n += r as u64;
            if t.elapsed() > KCAT_LIMIT {
                let _ = child.kill();
                bail!("kcat {args:?} still running after {KCAT_LIMIT:?}");
            }
        }
        let status = child.wait()?;
        let elapsed = t.elapsed();
        let stderr = errors.join().unwrap_or_default();
        if !status.success() {
            bail!("kcat {args:?} failed: {}", stderr.trim());
        }
        Ok((elapsed, n))
    })
    .await?
}

fn base_args(kafka: &str, topic: &str, mode: &str) -> Vec<String> {
    [mode, "-b", kafka, "-t", topic, "-q"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn push_x(args: &mut Vec<String>, settings: &[&str]) {
    for s in settings {
        args.push("-X".to_owned());
        args.push((*s).to_owned());
    }
}

/// Produces every line of `file` as a record; how long it took.
async fn kcat_produce(kafka: &str, topic: &str, file: &Path) -> Result<Duration> {
    let mut args = base_args(kafka, topic, "-P");
    push_x(
        &mut args,
        &[
            "acks=1",
            "linger.ms=5",
            "batch.size=1000000",
            "batch.num.messages=100000",
            "queue.buffering.max.messages=2000000",
            "queue.buffering.max.kbytes=2097151",
        ],
    );
    args.push("-l".to_owned());
    args.push(PathBuf::from(file).display().to_string());
    let (elapsed, _) = kcat(args).await?;
    Ok(elapsed)
}

/// Fetches the whole topic (`total` bytes) from the beginning; how long
/// it took.
async fn kcat_fetch(kafka: &str, topic: &str, total: u64) -> Result<Duration> {
    let mut args = base_args(kafka, topic, "-C");
    args.extend(["-o", "beginning", "-e"].map(str::to_owned));
    push_x(
        &mut args,
        &[
            "max.partition.fetch.bytes=16777216",
            "fetch.max.bytes=16777216",
            // The last fetch (at the end, where -e stops) waits this long
            // for data that never comes: keep it out of the rate.
            "fetch.wait.max.ms=20",
            // Past this many queued records librdkafka stops fetching for
            // a while (~1 s); a 16 MiB fetch of small records exceeds
            // the default of 100,000.
            "queued.min.messages=10000000",
        ],
    );
    let (elapsed, n) = kcat(args).await?;
    if n != total {
        bail!("kcat -C printed {n} bytes of {total}");
    }
    Ok(elapsed)
}

/// POSTs `body` `n` times over [`HTTP_CONNS`] connections; how long it
/// took.
async fn http_ingest(s: &Chunkbus, category: &str, body: &Bytes, n: usize) -> Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let path: Arc<str> = format!("/write?category={category}").into();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..HTTP_CONNS {
        let (next, path, body, addr) = (Arc::clone(&next), Arc::clone(&path), body.clone(), s.addr);
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await?;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                c.post_ok(&path, body.clone()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(t.elapsed())
}

/// Reads every chunk of `category` (`total` bytes) once over one
/// connection; how long it took.
async fn http_read(s: &Chunkbus, category: &str, total: u64) -> Result<Duration> {
    let mut c = Conn::open(s.addr).await?;
    let t = Instant::now();
    let mut n = 0u64;
    for chunk in c.list_chunks(category).await? {
        if let Some(name) = chunk["name"].as_str() {
            n += c.read_chunk(category, name, None).await?;
        }
    }
    let elapsed = t.elapsed();
    if n != total {
        bail!("HTTP reads got {n} bytes of {total}");
    }
    Ok(elapsed)
}

/// Fails unless `category` holds `total` bytes.
async fn check_stored(s: &Chunkbus, category: &str, total: u64) -> Result<()> {
    let mut c = Conn::open(s.addr).await?;
    let stored: u64 = c
        .list_chunks(category)
        .await?
        .iter()
        .filter_map(|c| c["size"].as_u64())
        .sum();
    if stored != total {
        bail!("{category} holds {stored} bytes, {total} were sent");
    }
    Ok(())
}
