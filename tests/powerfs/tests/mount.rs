//! Mounts powerfs for real and checks, through the kernel, that what was
//! synced survives a crash and what was not is gone — including bytes
//! stored and read through a shared mapping. Prints `SKIP` and passes when
//! `/dev/fuse` is missing.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use powerfs::{CrashOptions, PowerFs, Tear};

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        true
    } else {
        println!("SKIP: /dev/fuse is missing, powerfs mount test not run");
        false
    }
}

#[test]
fn crash_keeps_exactly_the_synced_state() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (image, mnt) = (tmp.path().join("image"), tmp.path().join("mnt"));
    fs::create_dir_all(&mnt).unwrap();
    let m = PowerFs::mount(&image, &mnt).unwrap();

    // Durable: created, written, fdatasync'd, directory fsynced.
    fs::create_dir(mnt.join("d")).unwrap();
    File::open(&mnt).unwrap().sync_all().unwrap();
    let mut f = File::create(mnt.join("d/durable")).unwrap();
    f.write_all(b"synced").unwrap();
    f.sync_data().unwrap();
    File::open(mnt.join("d")).unwrap().sync_all().unwrap();
    // Appended after the sync: lost.
    f.write_all(b" + unsynced").unwrap();
    // Created, data synced, but the directory entry never synced: lost.
    let mut g = File::create(mnt.join("d/no-dirsync")).unwrap();
    g.write_all(b"x").unwrap();
    g.sync_all().unwrap();
    // Renamed without a directory sync: keeps its old name.
    fs::rename(mnt.join("d/durable"), mnt.join("d/renamed")).unwrap();
    // A mapped file: stores through the mapping, half of them msync'd,
    // from another process. A FUSE server must never fault in pages of its
    // own mount: a page fault holds the process's mmap lock while it waits
    // for the server, whose threads may need that lock to allocate (seen as
    // a hang: fault in `folio_wait_bit`, server thread in `mprotect`).
    map_in_child(&mnt.join("mapped"));
    assert_eq!(
        fs::read(mnt.join("d/renamed")).unwrap(),
        b"synced + unsynced"
    );
    drop((f, g));

    let stats = m
        .crash(CrashOptions {
            seed: 1,
            tear: Tear::None,
            keep_pages: 0.0,
        })
        .unwrap();
    assert!(stats.dropped_bytes >= 4096 + 11, "{stats:?}");
    assert!(
        fs::read(mnt.join("d/renamed")).is_err(),
        "EIO after the crash"
    );
    m.unmount().unwrap();

    let m = PowerFs::mount(&image, &mnt).unwrap();
    assert_eq!(fs::read(mnt.join("d/durable")).unwrap(), b"synced");
    assert!(!mnt.join("d/renamed").exists());
    assert!(!mnt.join("d/no-dirsync").exists());
    let mapped = fs::read(mnt.join("mapped")).unwrap();
    assert_eq!(mapped.len(), 8192);
    assert!(mapped[..4096].iter().all(|b| *b == 7));
    assert!(mapped[4096..].iter().all(|b| *b == 0));
    m.unmount().unwrap();
}

/// Environment variable naming the file [`mapped_child`] maps.
const CHILD_ENV: &str = "POWERFS_MAPPED_CHILD";

/// Runs [`mapped_child`] in a new process of this test binary on `path`,
/// failing (never hanging) if it does not finish within 60 s.
fn map_in_child(path: &Path) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "mapped_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the mapping child failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the mapping child did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The part of `crash_keeps_exactly_the_synced_state` that maps a file of
/// the mount; does nothing unless started by [`map_in_child`].
#[test]
fn mapped_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let h = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    File::open(Path::new(&path).parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
    h.set_len(8192).unwrap();
    h.sync_data().unwrap();
    // SAFETY: the file is ours and nothing else resizes it while mapped.
    #[allow(unsafe_code)]
    let mut map = unsafe { memmap2::MmapMut::map_mut(&h) }.unwrap();
    map[..4096].fill(7);
    map.flush().unwrap(); // msync(MS_SYNC): the kernel writes back, then fsyncs
    map[4096..].fill(9);
    // pwrite on another page, read back through the mapping and read(2).
    h.write_all_at(b"pw", 5000).unwrap();
    assert_eq!(&map[5000..5002], b"pw");
    let mut buf = [0u8; 2];
    h.read_exact_at(&mut buf, 5000).unwrap();
    assert_eq!(&buf, b"pw");
}
