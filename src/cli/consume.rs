//! `chunkbus consume --category C [--server URL,…] [--follow] [--group G]`:
//! prints messages to stdout, in order per chunk owner. Without `--group`
//! it never acks; with it, it starts from G's stored positions and records
//! each batch once it is written to stdout (at-least-once: a crash between
//! the two prints that batch again).

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use chunkbus_client::{Consumer, ConsumerConfig, Positions};

use super::{rate, ServerArgs};
use crate::config::{parse_duration, parse_size};

/// Flags of `chunkbus consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Category to read.
    #[arg(long)]
    pub category: String,
    /// Servers to talk to.
    #[command(flatten)]
    pub servers: ServerArgs,
    /// Keep waiting for new messages; without it, exit 0 once everything
    /// that existed at start has been printed.
    #[arg(long)]
    pub follow: bool,
    /// Bytes per read request (at most 16MiB).
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    pub max_read: u64,
    /// Long-poll time at the end of the data (with --follow).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Consumer group: resume from and record its positions on the server.
    #[arg(long)]
    pub group: Option<String>,
    /// Print a throughput summary on stderr at the end.
    #[arg(long)]
    pub stats: bool,
}

/// Streams the category to stdout. A closed stdout (`| head`) ends it
/// quietly.
///
/// # Errors
/// Invalid flags or a permanent server error.
pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = args.servers.client()?;
    let mut consumer = Consumer::start(
        client,
        &args.category,
        ConsumerConfig::default()
            .max_read_bytes(args.max_read)
            .wait(args.wait)
            .follow(args.follow)
            .group(args.group.clone()),
        Positions::default(),
    )?;
    let start = Instant::now();
    let (mut bytes, mut msgs) = (0u64, 0u64);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    while let Some(batch) = consumer.next().await? {
        let written =
            out.write_all(&batch.data).and_then(
                |()| {
                    if args.follow {
                        out.flush()
                    } else {
                        Ok(())
                    }
                },
            );
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("writing stdout"),
        }
        consumer.ack(&batch).await?;
        bytes += batch.data.len() as u64;
        msgs += memchr::memchr_iter(b'\n', &batch.data).count() as u64;
    }
    match out.flush() {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => return Err(e).context("writing stdout"),
        _ => {}
    }
    if args.stats {
        eprintln!(
            "consumed {}",
            rate(bytes, msgs, start.elapsed().as_secs_f64())
        );
    }
    Ok(())
}
