//! Sends numbered JSON events to a category and prints where each batch
//! was stored.
//!
//! ```sh
//! make run   # in another terminal
//! cargo run -p chunkbus-client --example producer -- http://127.0.0.1:8080 events 100000
//! ```

use chunkbus_client::{Client, Producer, ProducerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let servers = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let category = args.next().unwrap_or_else(|| "events".into());
    let count: u64 = args.next().map_or(Ok(100_000), |s| s.parse())?;

    // A comma-separated list fails over to the next address.
    let client = Client::with_servers(servers.split(','))?;
    let producer = Producer::new(client, ProducerConfig::default());
    let mut acks = producer.subscribe_acks(1024);
    let printer = tokio::spawn(async move {
        loop {
            let ack = match acks.recv().await {
                Ok(ack) => ack,
                Err(chunkbus_client::AckRecvError::Lagged(n)) => {
                    eprintln!("{n} acks dropped: this printer fell behind");
                    continue;
                }
                Err(_) => break, // the producer is closed
            };
            println!(
                "messages #{}..#{} stored in {} at offset {} ({} bytes)",
                ack.first_seq,
                ack.first_seq + ack.count - 1,
                ack.chunk,
                ack.offset,
                ack.size
            );
        }
    });
    let events = producer.category(&category)?;
    for n in 0..count {
        // Queued (waits only for buffer memory); `send` would wait for
        // each message to be stored.
        events
            .enqueue(format!(r#"{{"n":{n},"kind":"example"}}"#))
            .await?;
    }
    producer.close().await?;
    drop(producer);
    drop(events);
    printer.await?;
    Ok(())
}
