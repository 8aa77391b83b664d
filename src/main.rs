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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHUNKBUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
            let config = (*raw).merge_file()?.validate()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("chunkbus")
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(chunkbus::server::run(config, shutdown_signal()))?;
            Ok(())
        }
        Command::Produce(args) => client_runtime()?.block_on(chunkbus::cli::produce::run(args)),
        Command::Consume(args) => client_runtime()?.block_on(chunkbus::cli::consume::run(args)),
    }
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler; use SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
