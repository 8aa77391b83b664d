//! `chunkbus-bench`: starts release `chunkbus` servers on 127.0.0.1 with temp
//! dirs, measures them next to this machine's ceilings in the same run, and
//! prints a Markdown table (saved with JSON under `bench/results/` for full
//! runs).
//!
//! This file is the run's skeleton only: arguments → setup (temp dir,
//! signals, open-files limit, memory warm-up) → the selected scenarios, in
//! the order of [`scenarios::SCENARIOS`] → the report. What is measured
//! lives in `scenarios/`, one module per scenario; the load generators and
//! server processes they share are the modules below.

#[macro_use]
mod progress;
mod alt_servers;
mod client;
mod ctx;
mod disk;
mod host;
mod latency;
mod load;
mod report;
mod scenarios;
mod servers;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Parser;

use ctx::{make_body, Ctx, Plan};
use report::{markdown, Report};

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
    /// Run only these scenarios (comma list).
    #[arg(long, value_delimiter = ',', value_parser = scenarios::names())]
    only: Vec<String>,
    /// Write results to bench/results/<date>.{json,md} (default for full runs
    /// of every scenario).
    #[arg(long)]
    save: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    host::raise_fd_limit();
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

async fn run(args: Args, work: &Path) -> Result<()> {
    let plan = Plan::new(args.smoke, args.quick, args.secs, args.reps);
    let root = host::workspace_root();
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
        let (n, secs) = host::warm_guest_memory(warm_limit);
        note!(
            "warmed {:.1} GiB of guest memory in {secs:.1} s",
            n as f64 / f64::from(1u32 << 30)
        );
    }
    let selected = scenarios::selected(&args.only);
    let bar = progress::start(selected.len() as u64);
    for scenario in selected {
        bar.set_message(scenario.name);
        (scenario.run)(&mut ctx).await?;
        // Whatever a scenario left behind (its servers are gone now).
        host::remove_contents(work);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let rows = std::mem::take(&mut ctx.rows);
    let report = Report {
        date: host::utc_now(),
        commit: host::git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: host::machine(work),
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
        if let Some(chart) = report::latency_vs_rate_svg(&report) {
            std::fs::write(dir.join(format!("{stem}-latency.svg")), chart)?;
        }
        note!(
            "saved bench/results/{stem}.{{json,md,svg}} (and {stem}-latency.svg with latency rows)"
        );
    }
    Ok(())
}
