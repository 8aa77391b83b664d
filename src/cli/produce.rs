//! `chunkbus produce --category C [--server URL,…] [--sync]`: sends stdin
//! lines in order, each once (an idempotent producer, unless
//! `--no-idempotence`), shows throughput on stderr.

use std::io::{IsTerminal, Read};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chunkbus_client::{Producer, ProducerConfig, WriteOptions};

use super::{rate, ServerArgs};
use crate::config::{parse_duration, parse_size};

/// Flags of `chunkbus produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Category to write to.
    #[arg(long)]
    pub category: String,
    /// Servers to talk to.
    #[command(flatten)]
    pub servers: ServerArgs,
    /// Reply only after each batch is fdatasync'd on the server.
    #[arg(long)]
    pub sync: bool,
    /// Reply only after this many other servers hold each batch.
    #[arg(long, default_value_t = 0)]
    pub min_sync_replicas: u32,
    /// Request body size (must not exceed the server's max_batch_size).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub batch_size: u64,
    /// Longest message (newline included), as the server's max_message_size.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub max_message_size: u64,
    /// How long a partial batch waits for more lines.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// Memory for buffered and in-flight lines.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub buffer: u64,
    /// How long a batch is retried before the command fails.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub delivery_timeout: Duration,
    /// Send plain writes instead of idempotent ones (a batch whose answer
    /// is lost then fails the command instead of being sent again).
    #[arg(long)]
    pub no_idempotence: bool,
}

/// Reads stdin to the end, sending every line; a last line without a
/// newline gets one. Blank lines are messages too (an empty message).
///
/// # Errors
/// Invalid flags, an unreadable stdin, an overlong line, or a batch the
/// server did not store.
pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let client = args.servers.client()?;
    let batch = usize::try_from(args.batch_size).context("--batch-size")?;
    let producer = Producer::new(
        client,
        ProducerConfig::default()
            .max_batch_bytes(batch)
            .max_message_bytes(
                usize::try_from(args.max_message_size)
                    .context("--max-message-size")?
                    .min(batch),
            )
            .linger(args.linger)
            .buffer_bytes(usize::try_from(args.buffer).context("--buffer")?)
            .delivery_timeout(args.delivery_timeout)
            .idempotent(!args.no_idempotence)
            .write(WriteOptions {
                sync: args.sync,
                min_sync_replicas: args.min_sync_replicas,
            }),
    );
    let lane = producer.category(&args.category)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    // stdin is blocking: read it on its own thread, in large blocks.
    std::thread::spawn(move || read_stdin(&tx));
    let start = Instant::now();
    let show = std::io::stderr().is_terminal();
    let (mut bytes, mut msgs, mut last_shown) = (0u64, 0u64, Instant::now());
    let mut carry: Vec<u8> = Vec::new();
    while let Some(block) = rx.recv().await {
        let mut block = block.context("reading stdin")?;
        if !carry.is_empty() {
            carry.append(&mut block);
            block = std::mem::take(&mut carry);
        }
        let Some(last_nl) = memchr::memrchr(b'\n', &block) else {
            carry = block;
            check_carry(&carry, args.max_message_size)?;
            continue;
        };
        carry.extend_from_slice(&block[last_nl + 1..]);
        check_carry(&carry, args.max_message_size)?;
        let lines = &block[..=last_nl];
        lane.send_lines(lines)
            .await
            .with_context(|| format!("after {msgs} lines"))?;
        bytes += lines.len() as u64;
        msgs += memchr::memchr_iter(b'\n', lines).count() as u64;
        if show && last_shown.elapsed() >= Duration::from_secs(1) {
            eprint!(
                "\rproduced {}   ",
                rate(bytes, msgs, start.elapsed().as_secs_f64())
            );
            last_shown = Instant::now();
        }
    }
    if !carry.is_empty() {
        carry.push(b'\n');
        lane.send_lines(&carry)
            .await
            .with_context(|| format!("after {msgs} lines"))?;
        bytes += carry.len() as u64;
        msgs += 1;
    }
    producer.close().await?;
    if show {
        eprint!("\r");
    }
    eprintln!(
        "produced {}",
        rate(bytes, msgs, start.elapsed().as_secs_f64())
    );
    Ok(())
}

/// A line that has not ended yet must still be able to become a message.
fn check_carry(carry: &[u8], max: u64) -> anyhow::Result<()> {
    if carry.len() as u64 >= max {
        bail!(
            "a line is longer than --max-message-size={max} bytes (newline included); \
             the server would refuse it"
        );
    }
    Ok(())
}

fn read_stdin(tx: &tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // One read per block: whatever is available now (a pipe gives up to
        // 64 KiB), so lines from a slow writer are not held back.
        let n = match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
            return;
        }
    }
}
