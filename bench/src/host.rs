//! The machine a run happens on: the workspace root, the commit and date
//! for the report, a description of the CPU, memory and disk, warming the
//! guest's memory, the open-files limit, writing back dirty pages between
//! measurements, the CPU time a process has used, and emptying the work dir between scenarios. This module measures nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// Writes back every dirty page, so one measurement does not pay for the
/// writeback of another's data.
pub fn settle() {
    rustix::fs::sync();
}

/// [`settle`], then waits until the disk under `dir` answers a 4 KiB
/// write + fdatasync within 5 ms three times in a row (at most 20 s): after
/// gigabytes were written, this VM's disk stays slow for seconds after
/// `sync` returns (the host is still writing them back), and a latency run
/// started then measures that instead of the system under test.
pub fn settle_disk(dir: &Path) {
    use std::io::Write;
    settle();
    let probe = dir.join(".settle-probe");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut quick = 0;
    while quick < 3 && Instant::now() < deadline {
        let t = Instant::now();
        let ok = std::fs::File::create(&probe)
            .and_then(|mut f| f.write_all(&[0u8; 4096]).and_then(|()| f.sync_data()))
            .is_ok();
        if !ok {
            break;
        }
        if t.elapsed() < Duration::from_millis(5) {
            quick += 1;
        } else {
            quick = 0;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let _ = std::fs::remove_file(&probe);
}

/// CPU time (user + system) process `pid` (this process for `None`) has
/// used so far, from `/proc/<pid>/stat`; `None` when it cannot be read.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    stat_times(pid, 11)
}

/// Time the threads of process `pid` (this process for `None`) have
/// spent runnable but waiting for a CPU so far (the second field of
/// `/proc/<pid>/task/*/schedstat`, summed over live threads); `None` when
/// it cannot be read. The difference over a run divided by its length is
/// how many threads were, on average, queued for a core.
pub fn run_queue_wait(pid: Option<u32>) -> Option<Duration> {
    let dir = pid.map_or_else(
        || "/proc/self/task".to_owned(),
        |p| format!("/proc/{p}/task"),
    );
    let mut ns = 0u64;
    for task in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread ended meanwhile
        };
        ns += stat
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Duration::from_nanos(ns))
}

/// CPU time (user + system) of this process's children that have exited
/// and been waited for (`cutime` + `cstime`): the difference around a
/// child's run is that child's CPU.
pub fn children_cpu_time() -> Option<Duration> {
    stat_times(None, 13)
}

/// Two consecutive clock-tick fields of `/proc/<pid>/stat`, `skip` fields
/// after the state (utime and stime: 11; cutime and cstime: 13), summed.
fn stat_times(pid: Option<u32>, skip: usize) -> Option<Duration> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name start at field 3
    // (state); utime, stime, cutime, cstime are fields 14 to 17.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(skip);
    let a: u64 = fields.next()?.parse().ok()?;
    let b: u64 = fields.next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_secs_f64((a + b) as f64 / ticks as f64))
}
