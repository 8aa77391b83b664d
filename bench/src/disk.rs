//! Disk ceilings measured in the same run, on the same filesystem as the
//! servers' data: what any broker could at best do here.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;

/// Sequential 1 MiB writes with fdatasync every `sync_every`, for `dur`.
/// Returns bytes per second.
pub fn write_with_periodic_sync(
    dir: &Path,
    block: &[u8],
    dur: Duration,
    sync_every: Duration,
) -> Result<f64> {
    let path = dir.join("raw-periodic");
    let mut f = File::create(&path)?;
    let start = Instant::now();
    let mut last_sync = start;
    let mut bytes = 0u64;
    while start.elapsed() < dur {
        f.write_all(block)?;
        bytes += block.len() as u64;
        if last_sync.elapsed() >= sync_every {
            f.sync_data()?;
            last_sync = Instant::now();
        }
    }
    f.sync_data()?;
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(bytes as f64 / secs)
}

/// Write + fdatasync of each block, for `dur`. Returns (bytes per second,
/// latency histogram in µs per write+sync).
pub fn write_sync_each(dir: &Path, block: &[u8], dur: Duration) -> Result<(f64, Histogram<u64>)> {
    let path = dir.join("raw-sync-each");
    let mut f = File::create(&path)?;
    let mut hist = Histogram::<u64>::new(3)?;
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < dur {
        let t = Instant::now();
        f.write_all(block)?;
        f.sync_data()?;
        hist.record(t.elapsed().as_micros() as u64)?;
        bytes += block.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok((bytes as f64 / secs, hist))
}

/// `writers` threads, each doing [`write_sync_each`] on its own file at
/// once, for `dur`: what concurrent synchronous writers get from this disk
/// with no broker in between. Returns (total bytes per second, latency
/// histogram in µs per write+sync over all writers).
pub fn write_sync_each_parallel(
    dir: &Path,
    block: &[u8],
    dur: Duration,
    writers: usize,
) -> Result<(f64, Histogram<u64>)> {
    let results: Vec<Result<(f64, Histogram<u64>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|i| {
                let sub = dir.join(format!("raw-parallel-{i}"));
                scope.spawn(move || -> Result<(f64, Histogram<u64>)> {
                    std::fs::create_dir_all(&sub)?;
                    let r = write_sync_each(&sub, block, dur);
                    let _ = std::fs::remove_dir_all(&sub);
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("raw writer thread panicked")))
            })
            .collect()
    });
    let mut total = 0.0;
    let mut hist = Histogram::<u64>::new(3)?;
    for r in results {
        let (rate, h) = r?;
        total += rate;
        hist.add(&h)?;
    }
    Ok((total, hist))
}
