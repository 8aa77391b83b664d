//! `powerfs`: a FUSE file system for tests that **forgets what was not made
//! durable**, in the style of LazyFS.
//!
//! It serves a directory tree whose volatile state (unsynced file data,
//! sizes and directory entries) lives in memory, over a disk image in a
//! backing directory that only `fsync`/`fdatasync` of files and `fsync` of
//! directories update, following Linux's rules ([`model`] states them).
//! [`Mounted::crash`] is the power cut: every unsynced byte and directory
//! change is dropped (optionally tearing the last unsynced write, or
//! letting random unsynced pages through), every later operation fails with
//! `EIO`, and [`Mounted::unmount`] + [`PowerFs::mount`] on the same image
//! gives a fresh mount (cold kernel caches) with what a disk would hold.
//!
//! It is mounted in-process ([`fuser::spawn_mount`], pure Rust; as root it
//! mounts directly, else through `fusermount3`) rather than as a separate
//! daemon: the test holds
//! the crash switch as a plain method call, so the crash happens at an exact
//! point of the test with no control protocol to get wrong, and the FUSE
//! threads die with the test process. Needs root (or `fusermount3`) and
//! `/dev/fuse`. The one rule that follows: never map (`mmap`) a file of the
//! mount in the process that serves it. A page fault on such a mapping
//! holds the process's mmap lock while it waits for the FUSE threads, and
//! they may need that lock to allocate: a deadlock (seen in CI as a hung
//! test). Run whatever maps files (chunkbus itself, the mount test's
//! mapping part) in another process.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use powerfs::{CrashOptions, PowerFs, Tear};
//! let (image, mnt) = (std::path::Path::new("/tmp/img"), std::path::Path::new("/tmp/mnt"));
//! let fs = PowerFs::mount(image, mnt)?;
//! // … run the program under test on `mnt` …
//! fs.crash(CrashOptions { seed: 1, tear: Tear::Page, keep_pages: 0.3 })?;
//! // … kill the program …
//! fs.unmount()?;
//! let fs = PowerFs::mount(image, mnt)?; // what a disk would hold
//! # fs.unmount()
//! # }
//! ```
//!
//! This crate never touches anything outside its image directory and its
//! mount point.

pub mod fuse;
pub mod model;

pub use fuse::{Mounted, PowerFs};
pub use model::{CrashOptions, Stats, Tear};
