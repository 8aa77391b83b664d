//! The machine a run happens on: the workspace root, the commit and date
//! for the report, a description of the CPU, memory and disk, warming the
//! guest's memory, the open-files limit, and emptying the work dir between
//! scenarios. This module measures nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The workspace root (the parent of `bench/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `git <args>` in the workspace; its trimmed stdout on success.
pub fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The current UTC time, `date -u +%Y-%m-%dT%H:%M:%SZ`.
pub fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Cores, CPU model, RAM and the filesystem `work` is on, for the report.
pub fn machine(work: &Path) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb >> 20);
    let fs = Command::new("df")
        .args(["--output=source,fstype"])
        .arg(work)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} GiB RAM, disk {fs}")
}

/// Removes everything inside `dir`, keeping `dir`.
pub fn remove_contents(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Touches (and frees) most of the available memory once, before any
/// measurement. On this VM the first use of a guest page is several times
/// slower than any later use (the hypervisor backs it lazily), so without
/// this whichever measurement first grows the page cache into untouched
/// memory runs at about half speed (seen: the producer run right after the
/// raw-POST run at 0.55x of the same producer run first, on tmpfs).
/// Returns (bytes touched, seconds).
pub fn warm_guest_memory(limit: u64) -> (u64, f64) {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    // Leave room for the servers and the kernel.
    let n = available.saturating_sub(4 << 30).min(limit);
    let t = Instant::now();
    let mut touched = 0u64;
    // 1 GiB at a time so the peak stays n and a failure costs little.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    while touched < n {
        let len = (n - touched).min(1 << 30) as usize;
        blocks.push(vec![1u8; len]);
        touched += len as u64;
    }
    drop(blocks);
    (touched, t.elapsed().as_secs_f64())
}

/// Raises the soft open-files limit to the hard one. The servers inherit
/// it; 10,000 idle connections need it.
pub fn raise_fd_limit() {
    let lim = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY.
    let (cur, max) = (
        lim.current.unwrap_or(u64::MAX),
        lim.maximum.unwrap_or(u64::MAX),
    );
    if cur < max {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
}
