//! Filesystem durability helpers used by every write path: preallocation,
//! `fdatasync` (behind a fault-injection hook), directory fsync and atomic
//! file replacement.
//!
//! Keeping them in one place means every durable write follows the same
//! recipe and tests can fail the n-th sync to exercise error paths. This
//! module never decides *when* to sync; callers do.
#![expect(
    unsafe_code,
    reason = "posix_fallocate and sync_file_range have no safe std wrapper"
)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Injects sync failures for tests: after `n` successful syncs every further
/// sync fails with `EIO`. The default hook never fails.
#[derive(Debug, Clone, Default)]
pub struct FaultHook(Option<Arc<AtomicI64>>);

impl FaultHook {
    /// A hook that lets `n` syncs succeed, then fails all later ones.
    #[must_use]
    pub fn fail_syncs_after(n: i64) -> Self {
        Self(Some(Arc::new(AtomicI64::new(n))))
    }

    fn check(&self) -> io::Result<()> {
        match &self.0 {
            Some(left) if left.fetch_sub(1, Ordering::SeqCst) <= 0 => {
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
            _ => Ok(()),
        }
    }
}

/// `fdatasync(file)`, unless the hook injects a failure.
///
/// # Errors
/// The OS error, or the injected `EIO`.
pub fn sync_data(file: &File, hook: &FaultHook) -> io::Result<()> {
    hook.check()?;
    let t = std::time::Instant::now();
    let r = file.sync_data();
    FSYNC_SECONDS.observe(t.elapsed().as_secs_f64());
    r
}

/// Latency of every `fdatasync` of chunk, index and state files
/// (`chunkbus_fsync_seconds` in `/metrics`): 50 µs … ~3 s.
pub static FSYNC_SECONDS: std::sync::LazyLock<prometheus_client::metrics::histogram::Histogram> =
    std::sync::LazyLock::new(|| {
        prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(50e-6, 2.0, 16),
        )
    });

/// fsyncs a directory so entries created, renamed or removed in it are durable.
///
/// # Errors
/// Opening or syncing the directory failed.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Allocates real blocks for `[off, off + len)` of `file` (extending it if
/// that ends past its end), so later stores through a mapping cannot hit a
/// hole. A full disk gives `ENOSPC` here instead of `SIGBUS` later.
///
/// # Errors
/// `ENOSPC`/`EDQUOT` when the disk is full, or another OS error.
pub fn preallocate(file: &File, off: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    if len == 0 {
        return Ok(());
    }
    // SAFETY: posix_fallocate only reads its integer arguments; the fd is
    // valid for the duration of the call because `file` is borrowed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Starts writeback of `[off, off + len)` of `file` without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so a later fdatasync finds
/// most pages already on their way to disk. Not a durability point.
///
/// # Errors
/// The OS error.
pub fn start_writeback(file: &File, off: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(len)) = (libc::off64_t::try_from(off), libc::off64_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: sync_file_range only reads its integer arguments; the fd is
    // valid for the duration of the call because `file` is borrowed.
    let rc =
        unsafe { libc::sync_file_range(file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `err` means the filesystem is out of space (or quota).
#[must_use]
pub fn is_disk_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Replaces `path` with `contents` atomically and durably: write a temp file
/// in the same directory, fsync it, rename it over `path`, fsync the
/// directory. A crash leaves either the old or the new contents.
///
/// # Errors
/// Any I/O error; the temp file is removed on failure.
pub fn rewrite_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "path has no parent directory")
    })?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` (and parents) if missing, fsyncing the parent of each new
/// directory so it survives a machine crash.
///
/// # Errors
/// Any I/O error.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            create_dir_durable(parent)?;
        }
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => fsync_dir(p),
        _ => fsync_dir(Path::new(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_atomic_replaces_contents() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        rewrite_atomic(&p, b"one").unwrap();
        rewrite_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn fault_hook_counts_down() {
        let d = tempfile::tempdir().unwrap();
        let f = File::create(d.path().join("f")).unwrap();
        let hook = FaultHook::fail_syncs_after(1);
        sync_data(&f, &hook).unwrap();
        assert_eq!(
            sync_data(&f, &hook).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        sync_data(&f, &FaultHook::default()).unwrap();
    }

    #[test]
    fn preallocate_allocates_blocks() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let f = File::create(d.path().join("f")).unwrap();
        preallocate(&f, 0, 1 << 20).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!(m.len(), 1 << 20);
        assert!(m.blocks() * 512 >= 1 << 20);
        // A further step extends the file and allocates only the new range.
        preallocate(&f, 1 << 20, 256 << 10).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!(m.len(), (1 << 20) + (256 << 10));
        assert!(m.blocks() * 512 >= (1 << 20) + (256 << 10));
    }
}
