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
