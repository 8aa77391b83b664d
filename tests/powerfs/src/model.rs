//! The in-memory model of a file system whose unsynced state dies with the
//! power: what `write`, `fsync`, `rename`… do to the *volatile* state (what
//! programs see) and to the *durable* state (the [`Disk`] image, what a
//! machine finds after a crash). Pure bookkeeping plus file I/O on the
//! image; no FUSE here, so the fsync rules are unit-tested directly.
//!
//! # The rules (Linux, strictest reading of fsync(2))
//! * `write`, `fallocate` and size changes (`truncate`, `O_TRUNC`) change
//!   only the volatile file. Its data and size reach the disk on
//!   `fdatasync` or `fsync` of that file (any descriptor), and only then.
//!   `fsync` additionally records the file's mode. Both cover the whole file
//!   (the kernel's `fsync_range` arguments do not reach FUSE).
//! * Creating, renaming, linking and unlinking change only the volatile
//!   directory. A directory's entries (names → inodes) reach the disk when
//!   *that directory* is fsynced — not when the file is. A rename between
//!   two directories needs both synced; syncing only the target leaves the
//!   file durable under both names, as a real journal may.
//! * A directory that is durable in its parent but whose own entries were
//!   never synced is durable and empty.
//! * `sync_file_range`, `syncfs` and `sync` are not delivered to a FUSE
//!   daemon (or not by fuser), so they make nothing durable here; on Linux
//!   `sync_file_range` is never a durability point anyway.
//! * Timestamps, owners and link counts are not modelled durably.
//!
//! A crash ([`Model::crash`]) drops the volatile state. Optionally the last
//! unsynced `write` is torn (a prefix of it, cut at a random byte or 4 KiB
//! boundary, reaches the disk) and unsynced pages are written back at
//! random (each 4 KiB page of unsynced data independently, as writeback in
//! any order would) — but only inside the durable size of their file: a
//! size change is metadata and needs an fsync.
//!
//! This module never touches anything outside its image directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Inode number of the root directory (FUSE's `FUSE_ROOT_ID`).
pub const ROOT: u64 = 1;

/// Page size used for page-granular tearing and writeback.
pub const PAGE: u64 = 4096;

/// What kind of inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// Why an operation failed, as an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("errno {0}")]
pub struct Errno(pub i32);

impl Errno {
    fn io(e: &io::Error) -> Self {
        Self(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// Result of a model operation.
pub type Result<T> = std::result::Result<T, Errno>;

/// How the last unsynced write is torn at a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tear {
    /// Not at all: every unsynced write is lost (unless `keep_pages` keeps it).
    #[default]
    None,
    /// A prefix cut at a random byte reaches the disk.
    Byte,
    /// A prefix cut at a random 4 KiB file-offset boundary reaches the disk.
    Page,
}

/// What survives of the unsynced state at a crash.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CrashOptions {
    /// Seed of the random choices (cut points, kept pages).
    pub seed: u64,
    /// How the last unsynced write is torn.
    pub tear: Tear,
    /// Probability (0.0–1.0) that each unsynced 4 KiB page of file data was
    /// written back anyway (within the file's durable size).
    pub keep_pages: f64,
}

/// Counters of what the model did, for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// `fsync`/`fdatasync` of files.
    pub file_syncs: u64,
    /// fsyncs of directories.
    pub dir_syncs: u64,
    /// Unsynced bytes dropped by the last crash.
    pub dropped_bytes: u64,
    /// Directories whose unsynced entries the last crash dropped.
    pub dropped_dirs: u64,
}

/// Attributes of an inode as programs see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Number of names.
    pub nlink: u32,
}

/// Durable record of one inode in the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DurableNode {
    kind: Kind,
    mode: u32,
    /// Directory entries (empty for files).
    #[serde(default)]
    entries: BTreeMap<String, u64>,
}

/// The durable namespace, stored as `namespace.json` in the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Namespace {
    next_ino: u64,
    nodes: BTreeMap<u64, DurableNode>,
}

/// The disk: a directory holding `namespace.json` (durable directory
/// entries and modes) and `data/<ino>` (durable bytes and size of each
/// file). Its own files are written without fsync: the machine running the
/// test does not lose power, only the simulated disk does.
#[derive(Debug)]
pub struct Disk {
    root: PathBuf,
    ns: Namespace,
    files: HashMap<u64, File>,
}

impl Disk {
    /// Opens (or creates, empty) the image in `root`, dropping inodes that
    /// no durable name reaches (files created but never linked durably).
    ///
    /// # Errors
    /// I/O errors on the image.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("data"))?;
        let ns_path = root.join("namespace.json");
        let mut ns = match fs::read(&ns_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(io::Error::other)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Namespace {
                next_ino: ROOT + 1,
                nodes: BTreeMap::from([(
                    ROOT,
                    DurableNode {
                        kind: Kind::Dir,
                        mode: 0o755,
                        entries: BTreeMap::new(),
                    },
                )]),
            },
            Err(e) => return Err(e),
        };
        // Reachable from the root; everything else is garbage after a crash.
        let mut seen = HashSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(d) = stack.pop() {
            let kids: Vec<u64> = ns
                .nodes
                .get(&d)
                .map(|n| n.entries.values().copied().collect())
                .unwrap_or_default();
            for k in kids {
                if seen.insert(k) {
                    stack.push(k);
                }
            }
        }
        ns.nodes.retain(|ino, _| seen.contains(ino));
        for e in fs::read_dir(root.join("data"))? {
            let e = e?;
            let keep = e
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|ino| seen.contains(&ino));
            if !keep {
                fs::remove_file(e.path())?;
            }
        }
        let max = ns.nodes.keys().max().copied().unwrap_or(ROOT);
        ns.next_ino = ns.next_ino.max(max + 1);
        let disk = Self {
            root: root.to_path_buf(),
            ns,
            files: HashMap::new(),
        };
        disk.save()?;
        Ok(disk)
    }

    fn save(&self) -> io::Result<()> {
        let tmp = self.root.join("namespace.json.tmp");
        fs::write(
            &tmp,
            serde_json::to_vec(&self.ns).map_err(io::Error::other)?,
        )?;
        fs::rename(tmp, self.root.join("namespace.json"))
    }

    fn file(&mut self, ino: u64) -> io::Result<&File> {
        if !self.files.contains_key(&ino) {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.root.join("data").join(ino.to_string()))?;
            self.files.insert(ino, f);
        }
        self.files
            .get(&ino)
            .ok_or_else(|| io::Error::other("file handle vanished"))
    }

    fn len(&mut self, ino: u64) -> io::Result<u64> {
        let p = self.root.join("data").join(ino.to_string());
        match fs::metadata(p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// Volatile state of one inode.
#[derive(Debug)]
struct Node {
    kind: Kind,
    mode: u32,
    nlink: u32,
    /// Parent directory (directories only; for `..`).
    parent: u64,
    entries: BTreeMap<String, u64>,
    /// Volatile size.
    size: u64,
    /// Bytes below this come from the disk image where not dirty; above
    /// it (up to `size`) they are zero unless dirty. It is the durable size,
    /// lowered by truncation since the last sync.
    base_len: u64,
    /// Durable size (length of the image file).
    durable_size: u64,
    /// Written but unsynced bytes: non-overlapping extents by offset.
    dirty: BTreeMap<u64, Vec<u8>>,
    /// Open file handles (and mappings) in the kernel.
    open: u32,
}

impl Node {
    fn new(kind: Kind, mode: u32, parent: u64) -> Self {
        Self {
            kind,
            mode,
            nlink: 1,
            parent,
            entries: BTreeMap::new(),
            size: 0,
            base_len: 0,
            durable_size: 0,
            dirty: BTreeMap::new(),
            open: 0,
        }
    }
}

/// The file system: volatile inodes over a durable [`Disk`].
#[derive(Debug)]
pub struct Model {
    disk: Disk,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// The last write while it is unsynced: (inode, offset, length).
    last_write: Option<(u64, u64, u64)>,
    crashed: bool,
    stats: Stats,
}

/// Small deterministic PRNG (SplitMix64) for crash choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // 53 random bits, exactly representable.
        #[expect(clippy::cast_precision_loss, reason = "53-bit value")]
        let v = (self.next_u64() >> 11) as f64;
        v / (1u64 << 53) as f64
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Errno(libc::EINVAL));
    }
    if name.len() > 255 {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    Ok(())
}

impl Model {
    /// The volatile state as it is on `disk` (fresh after a mount or crash).
    ///
    /// # Errors
    /// I/O errors reading the image.
    pub fn load(mut disk: Disk) -> io::Result<Self> {
        let mut nodes = HashMap::new();
        let durable: Vec<(u64, DurableNode)> =
            disk.ns.nodes.iter().map(|(k, v)| (*k, v.clone())).collect();
        for (ino, d) in &durable {
            let size = if d.kind == Kind::File {
                disk.len(*ino)?
            } else {
                0
            };
            let mut n = Node::new(d.kind, d.mode, ROOT);
            n.nlink = 0;
            n.entries = d.entries.clone();
            n.size = size;
            n.base_len = size;
            n.durable_size = size;
            nodes.insert(*ino, n);
        }
        // Link counts and parents from the entries.
        for (dir, d) in &durable {
            for child in d.entries.values() {
                if let Some(c) = nodes.get_mut(child) {
                    c.nlink += 1;
                    if c.kind == Kind::Dir {
                        c.parent = *dir;
                    }
                }
            }
        }
        if let Some(r) = nodes.get_mut(&ROOT) {
            r.nlink = 1;
        }
        let next_ino = disk.ns.next_ino;
        Ok(Self {
            disk,
            nodes,
            next_ino,
            last_write: None,
            crashed: false,
            stats: Stats::default(),
        })
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn alive(&self) -> Result<()> {
        if self.crashed {
            Err(Errno(libc::EIO))
        } else {
            Ok(())
        }
    }

    fn node(&self, ino: u64) -> Result<&Node> {
        self.alive()?;
        self.nodes.get(&ino).ok_or(Errno(libc::ENOENT))
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node> {
        self.alive()?;
        self.nodes.get_mut(&ino).ok_or(Errno(libc::ENOENT))
    }

    fn dir(&self, ino: u64) -> Result<&Node> {
        let n = self.node(ino)?;
        if n.kind == Kind::Dir {
            Ok(n)
        } else {
            Err(Errno(libc::ENOTDIR))
        }
    }

    /// Attributes of `ino`.
    ///
    /// # Errors
    /// `ENOENT`, or `EIO` after a crash.
    pub fn attr(&self, ino: u64) -> Result<Attr> {
        let n = self.node(ino)?;
        Ok(Attr {
            ino,
            kind: n.kind,
            size: n.size,
            mode: n.mode,
            nlink: if n.kind == Kind::Dir { 2 } else { n.nlink },
        })
    }

    /// The inode named `name` in `parent`.
    ///
    /// # Errors
    /// `ENOENT`, `ENOTDIR`, `EIO` after a crash.
    pub fn lookup(&self, parent: u64, name: &str) -> Result<u64> {
        let d = self.dir(parent)?;
        match name {
            "." => Ok(parent),
            ".." => Ok(d.parent),
            _ => d.entries.get(name).copied().ok_or(Errno(libc::ENOENT)),
        }
    }

    /// Entries of directory `ino`, sorted by name, with `.` and `..` first.
    ///
    /// # Errors
    /// `ENOENT`, `ENOTDIR`, `EIO` after a crash.
    pub fn entries(&self, ino: u64) -> Result<Vec<(String, u64, Kind)>> {
        let d = self.dir(ino)?;
        let mut out = vec![
            (".".to_owned(), ino, Kind::Dir),
            ("..".to_owned(), d.parent, Kind::Dir),
        ];
        for (name, child) in &d.entries {
            let kind = self.nodes.get(child).map_or(Kind::File, |c| c.kind);
            out.push((name.clone(), *child, kind));
        }
        Ok(out)
    }

    /// Creates a file or directory `name` in `parent` (volatile until
    /// `parent` is fsynced).
    ///
    /// # Errors
    /// `EEXIST`, `ENOENT`, `ENOTDIR`, `EINVAL`, `EIO` after a crash.
    pub fn create(&mut self, parent: u64, name: &str, kind: Kind, mode: u32) -> Result<u64> {
        check_name(name)?;
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno(libc::EEXIST));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes
            .insert(ino, Node::new(kind, mode & 0o7777, parent));
        self.node_mut(parent)?.entries.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Adds the name `name` in `parent` for file `ino` (`link(2)`).
    ///
    /// # Errors
    /// `EEXIST`, `EPERM` for directories, `ENOENT`, `EIO` after a crash.
    pub fn link(&mut self, ino: u64, parent: u64, name: &str) -> Result<()> {
        check_name(name)?;
        if self.node(ino)?.kind == Kind::Dir {
            return Err(Errno(libc::EPERM));
        }
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno(libc::EEXIST));
        }
        self.node_mut(parent)?.entries.insert(name.to_owned(), ino);
        self.node_mut(ino)?.nlink += 1;
        Ok(())
    }

    fn drop_name(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
            if n.nlink == 0 && n.open == 0 {
                n.dirty.clear();
            }
        }
    }

    /// Removes the name `name` from `parent` (`unlink(2)`, or `rmdir(2)`
    /// when `dir`).
    ///
    /// # Errors
    /// `ENOENT`, `EISDIR`/`ENOTDIR`, `ENOTEMPTY`, `EIO` after a crash.
    pub fn remove(&mut self, parent: u64, name: &str, dir: bool) -> Result<()> {
        let ino = self.lookup(parent, name)?;
        let n = self.node(ino)?;
        match (n.kind, dir) {
            (Kind::Dir, false) => return Err(Errno(libc::EISDIR)),
            (Kind::File, true) => return Err(Errno(libc::ENOTDIR)),
            (Kind::Dir, true) if !n.entries.is_empty() => return Err(Errno(libc::ENOTEMPTY)),
            _ => {}
        }
        self.node_mut(parent)?.entries.remove(name);
        self.drop_name(ino);
        Ok(())
    }

    /// `rename(2)` (`flags`: 0, `RENAME_NOREPLACE` or `RENAME_EXCHANGE`).
    ///
    /// # Errors
    /// As `rename(2)`, and `EIO` after a crash.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        flags: u32,
    ) -> Result<()> {
        check_name(new_name)?;
        let ino = self.lookup(parent, name)?;
        self.dir(new_parent)?;
        let target = self.dir(new_parent)?.entries.get(new_name).copied();
        if flags & libc::RENAME_EXCHANGE != 0 {
            let other = target.ok_or(Errno(libc::ENOENT))?;
            self.node_mut(parent)?
                .entries
                .insert(name.to_owned(), other);
            self.node_mut(new_parent)?
                .entries
                .insert(new_name.to_owned(), ino);
            for (i, p) in [(ino, new_parent), (other, parent)] {
                let n = self.node_mut(i)?;
                if n.kind == Kind::Dir {
                    n.parent = p;
                }
            }
            return Ok(());
        }
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return Err(Errno(libc::EINVAL));
        }
        if let Some(t) = target {
            if t == ino {
                return Ok(());
            }
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(Errno(libc::EEXIST));
            }
            let (tk, src_kind) = (self.node(t)?.kind, self.node(ino)?.kind);
            match (src_kind, tk) {
                (Kind::File, Kind::Dir) => return Err(Errno(libc::EISDIR)),
                (Kind::Dir, Kind::File) => return Err(Errno(libc::ENOTDIR)),
                (Kind::Dir, Kind::Dir) if !self.node(t)?.entries.is_empty() => {
                    return Err(Errno(libc::ENOTEMPTY))
                }
                _ => {}
            }
            self.drop_name(t);
        }
        self.node_mut(parent)?.entries.remove(name);
        self.node_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        let n = self.node_mut(ino)?;
        if n.kind == Kind::Dir {
            n.parent = new_parent;
        }
        Ok(())
    }

    /// Sets the permission bits (volatile until `fsync`).
    ///
    /// # Errors
    /// `ENOENT`, `EIO` after a crash.
    pub fn set_mode(&mut self, ino: u64, mode: u32) -> Result<()> {
        self.node_mut(ino)?.mode = mode & 0o7777;
        Ok(())
    }

    /// Marks a kernel open (or mapping) of `ino`.
    ///
    /// # Errors
    /// `ENOENT`, `EIO` after a crash.
    pub fn open(&mut self, ino: u64) -> Result<()> {
        self.node_mut(ino)?.open += 1;
        Ok(())
    }

    /// Marks the release of an open; the unsynced data of a file with no
    /// name left and no open is dropped (nothing can sync it any more).
    pub fn release(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.open = n.open.saturating_sub(1);
            if n.open == 0 && n.nlink == 0 {
                n.dirty.clear();
            }
        }
    }

    /// Reads up to `len` bytes at `off` of the volatile file.
    ///
    /// # Errors
    /// `EISDIR`, `ENOENT`, I/O errors of the image, `EIO` after a crash.
    pub fn read(&mut self, ino: u64, off: u64, len: u64) -> Result<Vec<u8>> {
        let n = self.node(ino)?;
        if n.kind == Kind::Dir {
            return Err(Errno(libc::EISDIR));
        }
        let end = off.saturating_add(len).min(n.size);
        if off >= end {
            return Ok(Vec::new());
        }
        let base_end = n.base_len.min(end);
        let size = usize::try_from(end - off).map_err(|_| Errno(libc::EINVAL))?;
        let mut buf = vec![0u8; size];
        if off < base_end {
            let f = self.disk.file(ino).map_err(|e| Errno::io(&e))?;
            let want = usize::try_from(base_end - off).map_err(|_| Errno(libc::EINVAL))?;
            let mut got = 0;
            while got < want {
                let r = f
                    .read_at(&mut buf[got..want], off + got as u64)
                    .map_err(|e| Errno::io(&e))?;
                if r == 0 {
                    break; // image shorter than recorded: zeros
                }
                got += r;
            }
        }
        let n = self.node(ino)?;
        for (o, d) in n
            .dirty
            .range(..end)
            .filter(|(o, d)| **o + d.len() as u64 > off)
        {
            let from = (*o).max(off);
            let to = (*o + d.len() as u64).min(end);
            let (src, dst) = (
                usize::try_from(from - o).map_err(|_| Errno(libc::EINVAL))?,
                usize::try_from(from - off).map_err(|_| Errno(libc::EINVAL))?,
            );
            let len = usize::try_from(to - from).map_err(|_| Errno(libc::EINVAL))?;
            buf[dst..dst + len].copy_from_slice(&d[src..src + len]);
        }
        Ok(buf)
    }

    /// Writes `data` at `off` into the volatile file (extending it).
    ///
    /// # Errors
    /// `EISDIR`, `ENOENT`, `EIO` after a crash.
    pub fn write(&mut self, ino: u64, off: u64, data: &[u8]) -> Result<()> {
        let n = self.node_mut(ino)?;
        if n.kind == Kind::Dir {
            return Err(Errno(libc::EISDIR));
        }
        if data.is_empty() {
            return Ok(());
        }
        let end = off + data.len() as u64;
        // Merge with every overlapping or adjacent extent, growing the first
        // one in place when it starts at or before `off` (appends are the
        // common case and must not copy the whole extent each time).
        let touching: Vec<u64> = n
            .dirty
            .range(..=end)
            .filter(|(o, d)| **o + d.len() as u64 >= off)
            .map(|(o, _)| *o)
            .collect();
        let merged_end = touching
            .iter()
            .filter_map(|o| n.dirty.get(o).map(|d| *o + d.len() as u64))
            .fold(end, u64::max);
        let (start, mut buf) = match touching.first() {
            Some(&o) if o <= off => (o, n.dirty.remove(&o).unwrap_or_default()),
            _ => (off, Vec::new()),
        };
        let len = usize::try_from(merged_end - start).map_err(|_| Errno(libc::EFBIG))?;
        buf.resize(len, 0);
        for o in touching {
            if o == start {
                continue;
            }
            if let Some(d) = n.dirty.remove(&o) {
                let at = usize::try_from(o - start).map_err(|_| Errno(libc::EFBIG))?;
                buf[at..at + d.len()].copy_from_slice(&d);
            }
        }
        let at = usize::try_from(off - start).map_err(|_| Errno(libc::EFBIG))?;
        buf[at..at + data.len()].copy_from_slice(data);
        n.dirty.insert(start, buf);
        n.size = n.size.max(end);
        self.last_write = Some((ino, off, data.len() as u64));
        Ok(())
    }

    /// Changes the volatile size (`truncate(2)`): bytes past it are gone,
    /// bytes it adds read as zeros.
    ///
    /// # Errors
    /// `EISDIR`, `ENOENT`, `EIO` after a crash.
    pub fn set_size(&mut self, ino: u64, size: u64) -> Result<()> {
        let n = self.node_mut(ino)?;
        if n.kind == Kind::Dir {
            return Err(Errno(libc::EISDIR));
        }
        if size < n.size {
            let cut: Vec<u64> = n.dirty.range(..).map(|(o, _)| *o).collect();
            for o in cut {
                if o >= size {
                    n.dirty.remove(&o);
                } else if let Some(d) = n.dirty.get_mut(&o) {
                    let keep = usize::try_from(size - o).unwrap_or(usize::MAX);
                    d.truncate(keep);
                }
            }
            n.base_len = n.base_len.min(size);
        }
        n.size = size;
        Ok(())
    }

    /// `fallocate(2)`: mode 0 extends the size to cover the range (blocks
    /// are not modelled), `FALLOC_FL_KEEP_SIZE` does nothing; other modes
    /// are refused with `EOPNOTSUPP`.
    ///
    /// # Errors
    /// `EOPNOTSUPP`, `EISDIR`, `ENOENT`, `EIO` after a crash.
    pub fn fallocate(&mut self, ino: u64, off: u64, len: u64, mode: i32) -> Result<()> {
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let size = self.node(ino)?.size;
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && off + len > size {
            self.set_size(ino, off + len)?;
        }
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file (its data and size; with `fsync` also
    /// its mode), or `fsync` of a directory (its entries).
    ///
    /// # Errors
    /// `ENOENT`, image I/O errors, `EIO` after a crash.
    pub fn fsync(&mut self, ino: u64, datasync: bool) -> Result<()> {
        let kind = self.node(ino)?.kind;
        match kind {
            Kind::File => self.sync_file(ino, datasync),
            Kind::Dir => self.sync_dir(ino),
        }
    }

    fn sync_file(&mut self, ino: u64, datasync: bool) -> Result<()> {
        self.stats.file_syncs += 1;
        let n = self.nodes.get_mut(&ino).ok_or(Errno(libc::ENOENT))?;
        let (size, base_len, durable) = (n.size, n.base_len, n.durable_size);
        let dirty = std::mem::take(&mut n.dirty);
        n.base_len = size;
        n.durable_size = size;
        let mode = n.mode;
        let f = self.disk.file(ino).map_err(|e| Errno::io(&e))?;
        if base_len < durable {
            f.set_len(base_len).map_err(|e| Errno::io(&e))?;
        }
        f.set_len(size).map_err(|e| Errno::io(&e))?;
        for (o, d) in &dirty {
            f.write_all_at(d, *o).map_err(|e| Errno::io(&e))?;
        }
        if self.last_write.is_some_and(|(i, _, _)| i == ino) {
            self.last_write = None;
        }
        if !datasync {
            if let Some(d) = self.disk.ns.nodes.get_mut(&ino) {
                if d.mode != mode {
                    d.mode = mode;
                    self.disk.save().map_err(|e| Errno::io(&e))?;
                }
            }
        }
        Ok(())
    }

    fn sync_dir(&mut self, ino: u64) -> Result<()> {
        self.stats.dir_syncs += 1;
        let n = self.nodes.get(&ino).ok_or(Errno(libc::ENOENT))?;
        let entries = n.entries.clone();
        let mode = n.mode;
        for child in entries.values() {
            if !self.disk.ns.nodes.contains_key(child) {
                let c = self.nodes.get(child).ok_or(Errno(libc::ENOENT))?;
                // A directory that becomes durable here is durable and
                // empty until it is fsynced itself.
                self.disk.ns.nodes.insert(
                    *child,
                    DurableNode {
                        kind: c.kind,
                        mode: c.mode,
                        entries: BTreeMap::new(),
                    },
                );
            }
        }
        let d = self.disk.ns.nodes.entry(ino).or_insert(DurableNode {
            kind: Kind::Dir,
            mode,
            entries: BTreeMap::new(),
        });
        d.entries = entries;
        d.mode = mode;
        self.disk.ns.next_ino = self.disk.ns.next_ino.max(self.next_ino);
        self.disk.save().map_err(|e| Errno::io(&e))
    }

    /// Power loss: everything unsynced is gone (but for what `opts` lets
    /// reach the disk), and every later operation fails with `EIO`. Mount
    /// the image again ([`Disk::open`] + [`Model::load`]) to go on.
    ///
    /// # Errors
    /// I/O errors writing the torn or kept bytes to the image.
    pub fn crash(&mut self, opts: CrashOptions) -> io::Result<Stats> {
        if self.crashed {
            return Ok(self.stats);
        }
        self.crashed = true;
        let mut rng = Rng::new(opts.seed);
        let mut dropped = 0u64;
        let mut dropped_dirs = 0u64;
        // The torn write: a prefix of the last unsynced write.
        let torn = match (opts.tear, self.last_write) {
            (Tear::None, _) | (_, None) => None,
            (Tear::Byte, Some((ino, off, len))) => Some((ino, off, rng.below(len))),
            (Tear::Page, Some((ino, off, len))) => {
                let end = off + len;
                let first = off.div_ceil(PAGE) * PAGE;
                let cuts: Vec<u64> = (0..)
                    .map(|i| first + i * PAGE)
                    .take_while(|c| *c < end)
                    .collect();
                let cut = if cuts.is_empty() {
                    off
                } else {
                    cuts[usize::try_from(rng.below(cuts.len() as u64)).unwrap_or(0)]
                };
                Some((ino, off, cut - off))
            }
        };
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let Some(n) = self.nodes.get(&ino) else {
                continue;
            };
            if n.kind == Kind::Dir {
                let durable = self.disk.ns.nodes.get(&ino).map(|d| &d.entries);
                if durable != Some(&n.entries) && durable.is_some() {
                    dropped_dirs += 1;
                }
                continue;
            }
            let durable_size = n.durable_size;
            let mut keep: Vec<(u64, Vec<u8>)> = Vec::new();
            for (o, d) in &n.dirty {
                dropped += d.len() as u64;
                if let Some((tino, toff, tlen)) = torn {
                    if tino == ino {
                        // The part of this extent inside the torn prefix.
                        let from = (*o).max(toff);
                        let to = (*o + d.len() as u64).min(toff + tlen);
                        if from < to {
                            let s = usize::try_from(from - o).map_err(io::Error::other)?;
                            let e = usize::try_from(to - o).map_err(io::Error::other)?;
                            keep.push((from, d[s..e].to_vec()));
                        }
                    }
                }
                if opts.keep_pages > 0.0 {
                    let mut p = *o / PAGE * PAGE;
                    let end = *o + d.len() as u64;
                    while p < end {
                        if rng.unit() < opts.keep_pages {
                            let from = p.max(*o);
                            let to = (p + PAGE).min(end);
                            let s = usize::try_from(from - o).map_err(io::Error::other)?;
                            let e = usize::try_from(to - o).map_err(io::Error::other)?;
                            keep.push((from, d[s..e].to_vec()));
                        }
                        p += PAGE;
                    }
                }
            }
            if keep.is_empty() {
                continue;
            }
            let f = self.disk.file(ino)?;
            for (o, d) in keep {
                // Only inside the durable size: growing it needs an fsync.
                if o >= durable_size {
                    continue;
                }
                let n = usize::try_from((durable_size - o).min(d.len() as u64))
                    .map_err(io::Error::other)?;
                f.write_all_at(&d[..n], o)?;
            }
        }
        self.stats.dropped_bytes = dropped;
        self.stats.dropped_dirs = dropped_dirs;
        self.nodes.clear();
        self.disk.files.clear();
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fresh() -> (tempfile::TempDir, Model) {
        let d = tempfile::tempdir().unwrap();
        let m = Model::load(Disk::open(d.path()).unwrap()).unwrap();
        (d, m)
    }

    /// Crash with `opts`, then mount the image again.
    fn reboot(d: &tempfile::TempDir, m: &mut Model, opts: CrashOptions) -> Model {
        m.crash(opts).unwrap();
        Model::load(Disk::open(d.path()).unwrap()).unwrap()
    }

    fn crash(d: &tempfile::TempDir, m: &mut Model) -> Model {
        reboot(d, m, CrashOptions::default())
    }

    fn read_all(m: &mut Model, ino: u64) -> Vec<u8> {
        let size = m.attr(ino).unwrap().size;
        m.read(ino, 0, size).unwrap()
    }

    #[test]
    fn unsynced_create_is_lost_even_if_file_fsynced() {
        let (d, mut m) = fresh();
        let f = m.create(ROOT, "a", Kind::File, 0o644).unwrap();
        m.write(f, 0, b"hello").unwrap();
        m.fsync(f, false).unwrap();
        let mut m = crash(&d, &mut m);
        assert_eq!(m.lookup(ROOT, "a"), Err(Errno(libc::ENOENT)));
        // …and the data of that never-linked inode is garbage-collected.
        let g = m.create(ROOT, "b", Kind::File, 0o644).unwrap();
        assert_eq!(read_all(&mut m, g), b"");
    }

    #[test]
    fn dir_fsync_without_file_fsync_gives_empty_file() {
        let (d, mut m) = fresh();
        let f = m.create(ROOT, "a", Kind::File, 0o644).unwrap();
        m.write(f, 0, b"hello").unwrap();
        m.fsync(ROOT, false).unwrap();
        let mut m = crash(&d, &mut m);
        let f = m.lookup(ROOT, "a").unwrap();
        assert_eq!(read_all(&mut m, f), b"");
    }

    #[test]
    fn fdatasync_makes_data_and_size_durable_later_writes_lost() {
        let (d, mut m) = fresh();
        let f = m.create(ROOT, "a", Kind::File, 0o644).unwrap();
        m.fsync(ROOT, false).unwrap();
        m.write(f, 0, b"hello").unwrap();
        m.fsync(f, true).unwrap();
        m.write(f, 5, b" world").unwrap();
        m.write(f, 0, b"J").unwrap();
        assert_eq!(read_all(&mut m, f), b"Jello world");
        let mut m = crash(&d, &mut m);
        let f = m.lookup(ROOT, "a").unwrap();
        assert_eq!(read_all(&mut m, f), b"hello");
    }

    #[test]
    fn unsynced_size_changes_are_lost() {
        let (d, mut m) = fresh();
        let f = m.create(ROOT, "a", Kind::File, 0o644).unwrap();
        m.fsync(ROOT, false).unwrap();
        m.write(f, 0, b"0123456789").unwrap();
        m.fsync(f, true).unwrap();
        m.set_size(f, 3).unwrap();
        m.set_size(f, 6).unwrap();
        assert_eq!(read_all(&mut m, f), b"012\0\0\0");
        m.fallocate(f, 0, 100, 0).unwrap();
        assert_eq!(m.attr(f).unwrap().size, 100);
        let mut m = crash(&d, &mut m);
        let f = m.lookup(ROOT, "a").unwrap();
        assert_eq!(read_all(&mut m, f), b"0123456789");
        // Truncate then sync: the cut bytes read as zeros after growth.
        m.set_size(f, 2).unwrap();
        m.set_size(f, 4).unwrap();
        m.fsync(f, true).unwrap();
        let mut m = crash(&d, &mut m);
        let f = m.lookup(ROOT, "a").unwrap();
        assert_eq!(read_all(&mut m, f), b"01\0\0");
    }

    #[test]
    fn rename_needs_dir_fsync_both_sides() {
        let (d, mut m) = fresh();
        let a = m.create(ROOT, "a", Kind::Dir, 0o755).unwrap();
        let b = m.create(ROOT, "b", Kind::Dir, 0o755).unwrap();
        m.fsync(ROOT, false).unwrap();
        let f = m.create(a, "x", Kind::File, 0o644).unwrap();
        m.write(f, 0, b"data").unwrap();
        m.fsync(f, true).unwrap();
        m.fsync(a, false).unwrap();
        m.rename(a, "x", b, "y", 0).unwrap();
        // Unsynced rename: the old name only.
        let mut m2 = crash(&d, &mut m);
        assert!(m2.lookup(a, "x").is_ok());
        assert!(m2.lookup(b, "y").is_err());
        // Only the target synced: both names (one inode, as a journal may).
        m2.rename(a, "x", b, "y", 0).unwrap();
        m2.fsync(b, false).unwrap();
        let mut m3 = crash(&d, &mut m2);
        let x = m3.lookup(a, "x").unwrap();
        let y = m3.lookup(b, "y").unwrap();
        assert_eq!(x, y);
        assert_eq!(read_all(&mut m3, y), b"data");
        assert_eq!(m3.attr(y).unwrap().nlink, 2);
    }

    #[test]
    fn atomic_replace_recipe_survives_and_unsynced_unlink_comes_back() {
        let (d, mut m) = fresh();
        let old = m.create(ROOT, "f", Kind::File, 0o644).unwrap();
        m.write(old, 0, b"old").unwrap();
        m.fsync(old, true).unwrap();
        m.fsync(ROOT, false).unwrap();
        // write tmp, fsync, rename over, but no directory fsync:
        let tmp = m.create(ROOT, "f.tmp", Kind::File, 0o644).unwrap();
        m.write(tmp, 0, b"new").unwrap();
        m.fsync(tmp, false).unwrap();
        m.rename(ROOT, "f.tmp", ROOT, "f", 0).unwrap();
        let mut m = crash(&d, &mut m);
        let f = m.lookup(ROOT, "f").unwrap();
        assert_eq!(read_all(&mut m, f), b"old");
        assert!(m.lookup(ROOT, "f.tmp").is_err());
        // With the directory fsync it is the new contents.
        let tmp = m.create(ROOT, "f.tmp", Kind::File, 0o644).unwrap();
        m.write(tmp, 0, b"new").unwrap();
        m.fsync(tmp, false).unwrap();
        m.rename(ROOT, "f.tmp", ROOT, "f", 0).unwrap();
        m.fsync(ROOT, false).unwrap();
        m.remove(ROOT, "f", false).unwrap(); // unsynced unlink
        let mut m = crash(&d, &mut m);
        let f = m.lookup(ROOT, "f").unwrap();
        assert_eq!(read_all(&mut m, f), b"new");
    }

    #[test]
    fn new_dir_is_durable_but_empty_until_synced_itself() {
        let (d, mut m) = fresh();
        let a = m.create(ROOT, "a", Kind::Dir, 0o755).unwrap();
        m.create(a, "x", Kind::File, 0o644).unwrap();
        m.fsync(ROOT, false).unwrap();
        let mut m = crash(&d, &mut m);
        let a = m.lookup(ROOT, "a").unwrap();
        assert_eq!(m.entries(a).unwrap().len(), 2); // . and ..
                                                    // A synced directory under an unsynced one is unreachable.
        let b = m.create(a, "b", Kind::Dir, 0o755).unwrap();
        m.create(b, "y", Kind::File, 0o644).unwrap();
        m.fsync(b, false).unwrap();
        let m = crash(&d, &mut m);
        let a = m.lookup(ROOT, "a").unwrap();
        assert!(m.lookup(a, "b").is_err());
    }

    #[test]
    fn reads_see_volatile_state_and_crash_blocks_everything() {
        let (_d, mut m) = fresh();
        let f = m.create(ROOT, "a", Kind::File, 0o644).unwrap();
        m.write(f, 4, b"xy").unwrap();
        m.write(f, 2, b"ab").unwrap();
        m.write(f, 5, b"Z").unwrap();
        assert_eq!(read_all(&mut m, f), b"\0\0abxZ");
        assert_eq!(m.read(f, 3, 2).unwrap(), b"bx");
        m.crash(CrashOptions::default()).unwrap();
        assert_eq!(m.attr(f), Err(Errno(libc::EIO)));
        assert_eq!(m.write(f, 0, b"x"), Err(Errno(libc::EIO)));
        assert_eq!(m.fsync(f, true), Err(Errno(libc::EIO)));
    }

    #[test]
    fn tear_keeps_a_prefix_of_the_last_write_inside_the_durable_size() {
        for (tear, seed) in [(Tear::Byte, 1), (Tear::Byte, 7), (Tear::Page, 3)] {
            let (d, mut m) = fresh();
            let f = m.create(ROOT, "a", Kind::File, 0o644).unwrap();
            m.fsync(ROOT, false).unwrap();
            m.fallocate(f, 0, 3 * PAGE, 0).unwrap();
            m.fsync(f, true).unwrap();
            m.write(f, 0, &[1; 10]).unwrap();
            m.write(f, 100, &[2u8; 2 * PAGE as usize]).unwrap();
            let opts = CrashOptions {
                seed,
                tear,
                keep_pages: 0.0,
            };
            let mut m = reboot(&d, &mut m, opts);
            let f = m.lookup(ROOT, "a").unwrap();
            let got = read_all(&mut m, f);
            assert_eq!(got.len(), 3 * PAGE as usize);
            assert!(got[..100].iter().all(|b| *b == 0), "earlier write lost");
            let kept = got[100..].iter().take_while(|b| **b == 2).count() as u64;
            assert!(got[100 + kept as usize..].iter().all(|b| *b == 0));
            assert!(kept < 2 * PAGE);
            if tear == Tear::Page {
                assert_eq!((100 + kept) % PAGE, 0, "cut at a page boundary");
            }
        }
    }

    #[test]
    fn kept_pages_never_grow_a_file() {
        let (d, mut m) = fresh();
        let f = m.create(ROOT, "a", Kind::File, 0o644).unwrap();
        m.fsync(ROOT, false).unwrap();
        m.write(f, 0, &[1u8; 100]).unwrap();
        m.fsync(f, true).unwrap();
        m.write(f, 0, &[3u8; 3 * PAGE as usize]).unwrap();
        let opts = CrashOptions {
            seed: 5,
            tear: Tear::None,
            keep_pages: 1.0,
        };
        let mut m = reboot(&d, &mut m, opts);
        let f = m.lookup(ROOT, "a").unwrap();
        assert_eq!(read_all(&mut m, f), vec![3u8; 100]);
    }

    #[test]
    fn unlinked_open_file_is_forgotten_and_exchange_swaps() {
        let (d, mut m) = fresh();
        let a = m.create(ROOT, "a", Kind::File, 0o644).unwrap();
        let b = m.create(ROOT, "b", Kind::File, 0o644).unwrap();
        m.write(a, 0, b"A").unwrap();
        m.write(b, 0, b"B").unwrap();
        m.fsync(a, true).unwrap();
        m.fsync(b, true).unwrap();
        m.rename(ROOT, "a", ROOT, "b", libc::RENAME_EXCHANGE)
            .unwrap();
        m.fsync(ROOT, false).unwrap();
        assert_eq!(
            m.rename(ROOT, "a", ROOT, "b", libc::RENAME_NOREPLACE),
            Err(Errno(libc::EEXIST))
        );
        let mut m = crash(&d, &mut m);
        let a = m.lookup(ROOT, "a").unwrap();
        assert_eq!(read_all(&mut m, a), b"B");
    }
}
