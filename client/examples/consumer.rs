//! Prints a category's messages and keeps its position in a file, so a
//! restart continues where the last acknowledged batch ended.
//!
//! ```sh
//! cargo run -p chunkbus-client --example consumer -- http://127.0.0.1:8080 events /tmp/events.pos
//! ```
//!
//! Here the position file is written after the output is flushed: a crash
//! in between re-prints that one batch (at-least-once). To get exactly-once,
//! store the positions in the same transaction as the results.

use std::io::Write;

use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let category = args.next().unwrap_or_else(|| "events".into());
    let pos_file = args.next().unwrap_or_else(|| "events.pos".into());

    let from: Positions = match std::fs::read(&pos_file) {
        Ok(json) => serde_json::from_slice(&json)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Positions::default(),
        Err(e) => return Err(e.into()),
    };
    let client = Client::with_servers(server.split(','))?;
    let mut consumer = Consumer::start(client, &category, ConsumerConfig::default(), from)?;
    let mut out = std::io::stdout().lock();
    while let Some(batch) = consumer.next().await? {
        for msg in batch.messages() {
            out.write_all(msg)?;
        }
        out.flush()?;
        consumer.ack(&batch).await?;
        // Write-then-rename: the file always holds one complete position set.
        let tmp = format!("{pos_file}.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&consumer.positions())?)?;
        std::fs::rename(&tmp, &pos_file)?;
    }
    Ok(())
}
