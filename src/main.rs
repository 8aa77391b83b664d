//! The `chunkbus` binary: `chunkbus serve [settings]`, and the shell
//! clients `chunkbus produce` / `chunkbus consume`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use chunkbus::config::RawSettings;

/// chunkbus — a persistent event bus over HTTP.
#[derive(Debug, Parser)]
#[command(name = "chunkbus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server (see the settings below; sizes: bytes or KiB/MiB/GiB; durations: ms/s/m/h).
    Serve(Box<RawSettings>),
    /// Send stdin lines to a category, in order (throughput on stderr).
    Produce(chunkbus::cli::produce::ProduceArgs),
    /// Print a category's messages to stdout.
    Consume(chunkbus::cli::consume::ConsumeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chunkbus: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(raw) => {
            let base = *raw;
            let started = match base.clone().merge_file() {
                Ok(s) => s,
                Err(e) => {
                    init_logging("info");
                    return Err(e.into());
                }
            };
            let config = match started.clone().validate() {
                Ok(c) => c,
                Err(e) => {
                    init_logging("info");
                    return Err(e.into());
                }
            };
            let log = init_logging(&config.live.log_level);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("chunkbus")
                .build()
                .context("starting the async runtime")?;
            let reload = chunkbus::server::ReloadSource { base, started, log };
            runtime.block_on(async {
                // Installed before anything starts, so a SIGTERM during
                // startup (recovery, tier warm-up) shuts down cleanly too.
                let shutdown = shutdown_signal();
                chunkbus::server::run_reloading(config, shutdown, reload).await
            })?;
            Ok(())
        }
        Command::Produce(args) => {
            init_logging("info");
            client_runtime()?.block_on(chunkbus::cli::produce::run(args))
        }
        Command::Consume(args) => {
            init_logging("info");
            client_runtime()?.block_on(chunkbus::cli::consume::run(args))
        }
    }
}

/// Logs to stderr with `level` (tracing filter syntax), or `CHUNKBUS_LOG`
/// when set (it wins, at start). Returns what applies a new filter later
/// (config reload), unless `CHUNKBUS_LOG` pinned it.
fn init_logging(level: &str) -> Option<chunkbus::reload::LogReload> {
    use tracing_subscriber::prelude::*;
    let pinned = tracing_subscriber::EnvFilter::try_from_env("CHUNKBUS_LOG").ok();
    let is_pinned = pinned.is_some();
    let filter = pinned.unwrap_or_else(|| {
        tracing_subscriber::EnvFilter::try_new(level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    });
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_err()
    {
        return None;
    }
    if is_pinned {
        return None;
    }
    Some(Box::new(move |level: &str| {
        let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    }))
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Installs the SIGTERM and SIGINT handlers now (in the runtime) and
/// returns a future that resolves at the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot install signal handlers; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
