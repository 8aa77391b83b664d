//! The FUSE front end: translates kernel requests into [`Model`]
//! operations, and mounts, crashes and unmounts. Never decides durability
//! itself — the model does.
//!
//! What fuser delivers and how it maps: `write`/`read` (the kernel page
//! cache above us is write-through: no `writeback_cache`, so every
//! `write(2)` and every dirty page of a shared mapping reaches [`Model::write`]
//! before the `fsync` that covers it), `fsync(datasync)` and `fsyncdir`
//! (durability points), `flush`/`release` (not durability points: `close`
//! syncs nothing), `setattr` (size, mode), `fallocate`, `create`/`mknod`,
//! `mkdir`, `link`, `unlink`, `rmdir`, `rename` (with `RENAME_NOREPLACE`
//! and `RENAME_EXCHANGE`). Symlinks, xattrs and locks are not supported.
//! `readdir` offsets are positions in the sorted listing, so a directory
//! changed between two `readdir` calls of one listing may show an entry
//! twice or skip one (as some real file systems do).

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno as FErrno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, WriteFlags,
};

use crate::model::{Attr, CrashOptions, Disk, Errno, Kind, Model, Stats};

/// Attribute and entry cache time given to the kernel. Only the kernel
/// changes the file system, so its caches cannot go stale while mounted; a
/// crash is followed by a new mount (cold caches).
const TTL: Duration = Duration::from_secs(1);

/// The file system served to the kernel.
#[derive(Debug)]
pub struct PowerFs {
    model: Arc<Mutex<Model>>,
    started: SystemTime,
}

/// A mounted [`PowerFs`]; unmounted on drop.
#[derive(Debug)]
pub struct Mounted {
    model: Arc<Mutex<Model>>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

fn lock(m: &Mutex<Model>) -> MutexGuard<'_, Model> {
    // A panic in one request must not wedge every later one.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ferr(e: Errno) -> FErrno {
    FErrno::from_i32(e.0)
}

fn name_str(name: &OsStr) -> Result<&str, FErrno> {
    name.to_str().ok_or(FErrno::EINVAL)
}

impl PowerFs {
    /// Mounts the image in `image` (created if empty) on `mountpoint`.
    ///
    /// # Errors
    /// The image cannot be read, or the mount failed (no `/dev/fuse`, not
    /// root, …).
    pub fn mount(image: &Path, mountpoint: &Path) -> io::Result<Mounted> {
        let model = Arc::new(Mutex::new(Model::load(Disk::open(image)?)?));
        let fs = Self {
            model: Arc::clone(&model),
            started: SystemTime::now(),
        };
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            fuser::MountOption::FSName("powerfs".into()),
            fuser::MountOption::RW,
            fuser::MountOption::NoAtime,
        ];
        cfg.n_threads = Some(2);
        let session = fuser::spawn_mount(fs, mountpoint, &cfg)?;
        Ok(Mounted {
            model,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: match a.kind {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
            },
            perm: u16::try_from(a.mode & 0o7777).unwrap_or(0o644),
            nlink: a.nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn entry(&self, m: &Model, ino: u64, reply: ReplyEntry) {
        match m.attr(ino) {
            Ok(a) => reply.entry(&TTL, &self.file_attr(&a), Generation(0)),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn make(&self, parent: INodeNo, name: &OsStr, kind: Kind, mode: u32, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mut m = lock(&self.model);
        match m.create(parent.0, name, kind, mode) {
            Ok(ino) => self.entry(&m, ino, reply),
            Err(e) => reply.error(ferr(e)),
        }
    }
}

impl Mounted {
    /// Where it is mounted.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Counters of the model (syncs seen, what the last crash dropped).
    #[must_use]
    pub fn stats(&self) -> Stats {
        lock(&self.model).stats()
    }

    /// Power loss: drops everything unsynced (see [`CrashOptions`]); from
    /// now on every operation on the mount fails with `EIO`. Kill the
    /// programs using it, then [`Mounted::unmount`] and mount the image
    /// again.
    ///
    /// # Errors
    /// Writing torn or kept bytes to the image failed.
    pub fn crash(&self, opts: CrashOptions) -> io::Result<Stats> {
        lock(&self.model).crash(opts)
    }

    /// Unmounts and waits for the FUSE threads.
    ///
    /// # Errors
    /// The unmount failed.
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(s) => session_ended(s.umount_and_join()),
            None => Ok(()),
        }
    }
}

/// The unmount aborts the kernel connection: a worker thread still reading
/// `/dev/fuse` then gets `ECONNABORTED` instead of `ENODEV`, which fuser
/// reports as an error although the session ended as asked.
fn session_ended(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
        r => r,
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let m = lock(&self.model);
        match m.lookup(parent.0, name) {
            Ok(ino) => self.entry(&m, ino, reply),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match lock(&self.model).attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &self.file_attr(&a)),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut m = lock(&self.model);
        let r = mode
            .map_or(Ok(()), |md| m.set_mode(ino.0, md))
            .and_then(|()| size.map_or(Ok(()), |s| m.set_size(ino.0, s)))
            .and_then(|()| m.attr(ino.0));
        match r {
            Ok(a) => reply.attr(&TTL, &self.file_attr(&a)),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(FErrno::EPERM);
        }
        self.make(parent, name, Kind::File, mode & !umask, reply);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.make(parent, name, Kind::Dir, mode & !umask, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match name_str(name) {
            Ok(n) => match lock(&self.model).remove(parent.0, n, false) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(ferr(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match name_str(name) {
            Ok(n) => match lock(&self.model).remove(parent.0, n, true) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(ferr(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (n, nn) = match (name_str(name), name_str(newname)) {
            (Ok(n), Ok(nn)) => (n, nn),
            _ => return reply.error(FErrno::EINVAL),
        };
        match lock(&self.model).rename(parent.0, n, newparent.0, nn, flags.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let nn = match name_str(newname) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mut m = lock(&self.model);
        match m.link(ino.0, newparent.0, nn) {
            Ok(()) => self.entry(&m, ino.0, reply),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Without FUSE_ATOMIC_O_TRUNC the kernel sends O_TRUNC as a setattr.
        match lock(&self.model).open(ino.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match lock(&self.model).read(ino.0, offset, u64::from(size)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match lock(&self.model).write(ino.0, offset, data) {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.model).release(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match lock(&self.model).fsync(ino.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match lock(&self.model).entries(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(ferr(e)),
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (name, child, kind)) in entries.into_iter().enumerate().skip(skip) {
            let ft = match kind {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
            };
            if reply.add(INodeNo(child), i as u64 + 1, ft, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match lock(&self.model).fsync(ino.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Plenty of room: disk-full is tested elsewhere.
        reply.statfs(1 << 24, 1 << 24, 1 << 24, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mut m = lock(&self.model);
        let r = m
            .create(parent.0, name, Kind::File, mode & !umask)
            .and_then(|ino| m.open(ino).and_then(|()| m.attr(ino)));
        match r {
            Ok(a) => reply.created(
                &TTL,
                &self.file_attr(&a),
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match lock(&self.model).fallocate(ino.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(ferr(e)),
        }
    }
}
