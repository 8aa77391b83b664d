//! Consumer groups: each group's acknowledged position per chunk of a
//! category, stored durably (appended and fdatasync'd) before an ack is
//! answered, and only ever moving forward.
//!
//! Layout: `<data_dir>/.chunkbus/groups/<category>/<group>.pos`, one
//! position log per group (format in [`log`] and `docs/formats.md`).

pub mod log;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::fsutil::{self, FaultHook};
use crate::names::{Category, ChunkName, GroupName};

/// A log is compacted (rewritten with one record per chunk) past this size.
const COMPACT_AT: u64 = 256 << 10;
const EXT: &str = "pos";

/// What a group operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The ack is behind the stored position (a duplicate or stale ack).
    #[error(
        "consumer {group} is already at offset {stored} of {chunk}; acks only move forward \
         (acked {offset})"
    )]
    Behind {
        /// Group.
        group: String,
        /// Chunk.
        chunk: String,
        /// The stored position.
        stored: u64,
        /// The refused offset.
        offset: u64,
    },
    /// A conditional ack (`from`) found the group somewhere else: another
    /// member has already acked (part of) this range, or the group is past
    /// this chunk.
    #[error(
        "consumer {group} is at offset {stored} of {chunk}, not at {from}; another member has \
         acked this range (ack from {from} to {offset} refused)"
    )]
    NotAt {
        /// Group.
        group: String,
        /// Chunk.
        chunk: String,
        /// The stored position in this chunk (0 when none).
        stored: u64,
        /// The position the ack expected.
        from: u64,
        /// The refused offset.
        offset: u64,
    },
    /// A conditional ack (`from`) of a chunk older than one where the group
    /// already has a position: the group is past it.
    #[error(
        "consumer {group} is already at {newer}, past {chunk}; another member has acked it \
         (ack from {from} to {offset} refused)"
    )]
    PastChunk {
        /// Group.
        group: String,
        /// Chunk acked.
        chunk: String,
        /// The newer chunk of the same owner with a stored position.
        newer: String,
        /// The position the ack expected.
        from: u64,
        /// The refused offset.
        offset: u64,
    },
    /// No such group in the category.
    #[error("unknown consumer {group} in category {category}")]
    UnknownGroup {
        /// Category.
        category: String,
        /// Group.
        group: String,
    },
    /// Reading or writing a position log failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A chunk ack under `retention = "acked"` while a group has not
    /// finished the chunk.
    #[error(
        "retention is \"acked\" and consumer group {group} is at offset {at} of {end} in {chunk}; \
         the chunk is deleted once every group has acked it"
    )]
    Unfinished {
        /// The first group found behind.
        group: String,
        /// The chunk.
        chunk: String,
        /// The group's position in it.
        at: u64,
        /// The chunk's final size.
        end: u64,
    },
}

impl crate::error::DomainError for GroupError {
    /// A stale ack or an unfinished group is a `Conflict`, an unknown group
    /// `NotFound`, a full disk `DiskFull`; other I/O failures `Internal`.
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::Behind { .. }
            | Self::NotAt { .. }
            | Self::PastChunk { .. }
            | Self::Unfinished { .. } => ErrorKind::Conflict,
            Self::UnknownGroup { .. } => ErrorKind::NotFound,
            Self::Io { source, .. } if crate::fsutil::is_disk_full(source) => ErrorKind::DiskFull,
            Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> GroupError + 'a {
    move |source| GroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// All consumer groups of this server.
#[derive(Debug)]
pub struct GroupStore {
    root: PathBuf,
    hook: FaultHook,
    groups: Mutex<BTreeMap<(Category, GroupName), Arc<Group>>>,
}

/// One group of one category.
#[derive(Debug)]
struct Group {
    /// Durable positions (updated after the record is on disk).
    positions: RwLock<BTreeMap<ChunkName, u64>>,
    /// The log; its lock serializes acks.
    log: tokio::sync::Mutex<LogState>,
}

#[derive(Debug)]
enum LogState {
    /// Not created yet (created durably on the first ack).
    Pending(PathBuf),
    Open(GroupLog),
    /// Deleted: a later ack starts a new group.
    Deleted,
}

#[derive(Debug)]
struct GroupLog {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
}

/// Outcome of an accepted ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// The position moved forward and is on disk.
    Moved,
    /// The same position was already stored (idempotent repeat).
    Unchanged,
}

impl GroupStore {
    /// Loads every group under `<state_dir>/groups`, cutting torn log tails.
    ///
    /// # Errors
    /// A directory or log that cannot be read or repaired.
    pub fn open(state_dir: &Path, hook: FaultHook) -> Result<Self, GroupError> {
        let root = state_dir.join("groups");
        fsutil::create_dir_durable(&root).map_err(io("create", &root))?;
        let mut groups = BTreeMap::new();
        for cat_entry in fs::read_dir(&root).map_err(io("list", &root))? {
            let cat_entry = cat_entry.map_err(io("list", &root))?;
            let Some(category) = cat_entry
                .file_name()
                .to_str()
                .and_then(|n| Category::parse(n).ok())
            else {
                tracing::warn!(path = %cat_entry.path().display(), "ignoring unexpected entry in groups dir");
                continue;
            };
            let dir = cat_entry.path();
            for entry in fs::read_dir(&dir).map_err(io("list", &dir))? {
                let path = entry.map_err(io("list", &dir))?.path();
                let group = path
                    .extension()
                    .filter(|e| *e == EXT)
                    .and_then(|_| path.file_stem())
                    .and_then(|s| s.to_str())
                    .and_then(|s| GroupName::parse(s).ok());
                let Some(group) = group else {
                    if path.extension().is_some_and(|e| e == "tmp") {
                        let _ = fs::remove_file(&path); // an interrupted compaction
                    }
                    continue;
                };
                let (positions, log) = load(&path)?;
                groups.insert(
                    (category.clone(), group),
                    Arc::new(Group {
                        positions: RwLock::new(positions),
                        log: tokio::sync::Mutex::new(LogState::Open(log)),
                    }),
                );
            }
        }
        Ok(Self {
            root,
            hook,
            groups: Mutex::new(groups),
        })
    }

    /// Stores `group`'s position in `chunk` as `offset` (already validated
    /// as a message boundary of that chunk) durably. Registers the group on
    /// its first ack.
    ///
    /// # Errors
    /// [`GroupError::Behind`] when `offset` is below the stored position;
    /// [`GroupError::Io`] when it could not be made durable.
    pub async fn ack(
        &self,
        category: &Category,
        group: &GroupName,
        chunk: &ChunkName,
        offset: u64,
    ) -> Result<Acked, GroupError> {
        self.ack_if(category, group, chunk, None, offset).await
    }

    /// Like [`GroupStore::ack`], conditional on where the group is when
    /// `from` is given (compare-and-set): the stored position in `chunk`
    /// (0 when none) must be exactly `from`, and with no position in
    /// `chunk`, the group must have none in a newer chunk of the same
    /// owner either. So of two members that processed the same batch
    /// (`from` → `offset`), exactly one is accepted.
    ///
    /// # Errors
    /// As [`GroupStore::ack`]; [`GroupError::NotAt`] /
    /// [`GroupError::PastChunk`] when the condition fails.
    pub async fn ack_if(
        &self,
        category: &Category,
        group: &GroupName,
        chunk: &ChunkName,
        from: Option<u64>,
        offset: u64,
    ) -> Result<Acked, GroupError> {
        loop {
            let g = self.group_or_new(category, group);
            let mut state = g.log.lock().await;
            if let LogState::Pending(path) = &*state {
                let log = create_log(path.clone()).await?;
                *state = LogState::Open(log);
            }
            let LogState::Open(open) = &mut *state else {
                // Deleted meanwhile: start a fresh group.
                drop(state);
                self.forget_if(category, group, &g);
                continue;
            };
            let stored = g.positions.read().get(chunk).copied();
            if let Some(from) = from {
                if stored.unwrap_or(0) != from {
                    return Err(GroupError::NotAt {
                        group: group.to_string(),
                        chunk: chunk.to_string(),
                        stored: stored.unwrap_or(0),
                        from,
                        offset,
                    });
                }
                if stored.is_none() {
                    let newer = g
                        .positions
                        .read()
                        .keys()
                        .find(|c| c.owner() == chunk.owner() && c.index() > chunk.index())
                        .cloned();
                    if let Some(newer) = newer {
                        return Err(GroupError::PastChunk {
                            group: group.to_string(),
                            chunk: chunk.to_string(),
                            newer: newer.to_string(),
                            from,
                            offset,
                        });
                    }
                }
            }
            match stored {
                Some(s) if s > offset => {
                    return Err(GroupError::Behind {
                        group: group.to_string(),
                        chunk: chunk.to_string(),
                        stored: s,
                        offset,
                    })
                }
                Some(s) if s == offset => return Ok(Acked::Unchanged),
                _ => {}
            }
            let record = log::encode(chunk, offset);
            let record_len = record.len() as u64;
            let path = open.path.clone();
            let hook = self.hook.clone();
            let file = Arc::clone(&open.file);
            blocking(&open.path, "append to", move || {
                (&*file)
                    .write_all(&record)
                    .map_err(io("append to", &path))?;
                fsutil::sync_data(&file, &hook).map_err(io("fdatasync", &path))
            })
            .await?;
            open.len += record_len;
            g.positions.write().insert(chunk.clone(), offset);
            if open.len > COMPACT_AT {
                let positions = g.positions.read().clone();
                compact(open, &positions).await?;
            }
            return Ok(Acked::Moved);
        }
    }

    /// Every group of `category` with its positions.
    #[must_use]
    pub fn groups(&self, category: &Category) -> Vec<(GroupName, BTreeMap<ChunkName, u64>)> {
        self.groups
            .lock()
            .iter()
            .filter(|((c, _), _)| c == category)
            .map(|((_, g), group)| (g.clone(), group.positions.read().clone()))
            // A group exists once it has stored a position.
            .filter(|(_, p)| !p.is_empty())
            .collect()
    }

    /// The names of every group that has stored a position, in any
    /// category.
    #[must_use]
    pub fn names(&self) -> std::collections::BTreeSet<GroupName> {
        self.groups
            .lock()
            .iter()
            .filter(|(_, group)| !group.positions.read().is_empty())
            .map(|((_, g), _)| g.clone())
            .collect()
    }

    /// Every group of every category with its positions (for peers).
    #[must_use]
    pub fn all(&self) -> Vec<(Category, GroupName, BTreeMap<ChunkName, u64>)> {
        self.groups
            .lock()
            .iter()
            .map(|((c, g), group)| (c.clone(), g.clone(), group.positions.read().clone()))
            .filter(|(_, _, p)| !p.is_empty())
            .collect()
    }

    /// The stored positions of one group, if it has any.
    #[must_use]
    pub fn positions_of(
        &self,
        category: &Category,
        group: &GroupName,
    ) -> Option<BTreeMap<ChunkName, u64>> {
        let g = self
            .groups
            .lock()
            .get(&(category.clone(), group.clone()))
            .cloned()?;
        let p = g.positions.read().clone();
        (!p.is_empty()).then_some(p)
    }

    /// Deletes a group and its log.
    ///
    /// # Errors
    /// [`GroupError::UnknownGroup`], or the log could not be removed.
    pub async fn delete(&self, category: &Category, group: &GroupName) -> Result<(), GroupError> {
        let g = self
            .groups
            .lock()
            .get(&(category.clone(), group.clone()))
            .cloned()
            .ok_or_else(|| GroupError::UnknownGroup {
                category: category.to_string(),
                group: group.to_string(),
            })?;
        let mut state = g.log.lock().await;
        if let LogState::Open(open) = std::mem::replace(&mut *state, LogState::Deleted) {
            fs::remove_file(&open.path).map_err(io("remove", &open.path))?;
            if let Some(dir) = open.path.parent() {
                fsutil::fsync_dir(dir).map_err(io("fsync", dir))?;
            }
        }
        drop(state);
        self.forget_if(category, group, &g);
        tracing::info!(%category, %group, "consumer group deleted");
        Ok(())
    }

    fn forget_if(&self, category: &Category, group: &GroupName, g: &Arc<Group>) {
        let mut groups = self.groups.lock();
        let key = (category.clone(), group.clone());
        if groups.get(&key).is_some_and(|cur| Arc::ptr_eq(cur, g)) {
            groups.remove(&key);
        }
    }

    fn group_or_new(&self, category: &Category, group: &GroupName) -> Arc<Group> {
        let mut groups = self.groups.lock();
        Arc::clone(
            groups
                .entry((category.clone(), group.clone()))
                .or_insert_with(|| {
                    let path = self
                        .root
                        .join(category.as_str())
                        .join(format!("{}.{EXT}", group.as_str()));
                    Arc::new(Group {
                        positions: RwLock::new(BTreeMap::new()),
                        log: tokio::sync::Mutex::new(LogState::Pending(path)),
                    })
                }),
        )
    }
}

/// Creates a group's log file durably (file and directory entries).
async fn create_log(path: PathBuf) -> Result<GroupLog, GroupError> {
    let p = path.clone();
    blocking(&path, "create", move || {
        let dir = p.parent().unwrap_or_else(|| Path::new("."));
        fsutil::create_dir_durable(dir).map_err(io("create", dir))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io("create", &p))?;
        fsutil::fsync_dir(dir).map_err(io("fsync", dir))?;
        Ok(GroupLog {
            path: p,
            file: Arc::new(file),
            len: 0,
        })
    })
    .await
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    path: &Path,
    op: &'static str,
    f: impl FnOnce() -> Result<T, GroupError> + Send + 'static,
) -> Result<T, GroupError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GroupError::Io {
            op,
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?
}

fn load(path: &Path) -> Result<(BTreeMap<ChunkName, u64>, GroupLog), GroupError> {
    let bytes = fs::read(path).map_err(io("read", path))?;
    let (positions, valid) = log::decode(&bytes);
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io("open", path))?;
    if valid < bytes.len() {
        tracing::warn!(path = %path.display(), cut = bytes.len() - valid, "cutting a torn consumer position record");
        file.set_len(valid as u64).map_err(io("truncate", path))?;
        file.sync_data().map_err(io("fdatasync", path))?;
    }
    Ok((
        positions,
        GroupLog {
            path: path.to_path_buf(),
            file: Arc::new(file),
            len: valid as u64,
        },
    ))
}

async fn compact(
    open: &mut GroupLog,
    positions: &BTreeMap<ChunkName, u64>,
) -> Result<(), GroupError> {
    let path = open.path.clone();
    let contents = log::encode_all(positions);
    let len = contents.len() as u64;
    let file = blocking(&open.path, "compact", move || {
        fsutil::rewrite_atomic(&path, &contents).map_err(io("compact", &path))?;
        OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io("open", &path))
    })
    .await?;
    open.file = Arc::new(file);
    open.len = len;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_conditional_ack_moves_only_from_where_the_group_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::open(dir.path(), FaultHook::default()).unwrap();
        let cat = Category::parse("c").unwrap();
        let g = GroupName::parse("g").unwrap();
        let c1 = ChunkName::parse("n1-chunk000000001").unwrap();
        let c2 = ChunkName::parse("n1-chunk000000002").unwrap();
        let other = ChunkName::parse("n2-chunk000000000").unwrap();
        // No position in c1 counts as 0.
        assert_eq!(
            store.ack_if(&cat, &g, &c1, Some(0), 10).await.unwrap(),
            Acked::Moved
        );
        // The same batch again (another member): refused.
        let e = store.ack_if(&cat, &g, &c1, Some(0), 10).await.unwrap_err();
        assert!(matches!(e, GroupError::NotAt { stored: 10, .. }), "{e}");
        // From where it is: accepted.
        store.ack_if(&cat, &g, &c1, Some(10), 20).await.unwrap();
        // A newer chunk of the owner: from 0, then the older one is past.
        store.ack_if(&cat, &g, &c2, Some(0), 5).await.unwrap();
        let old = ChunkName::parse("n1-chunk000000000").unwrap();
        let e = store.ack_if(&cat, &g, &old, Some(0), 5).await.unwrap_err();
        assert!(matches!(e, GroupError::PastChunk { .. }), "{e}");
        // Another owner's chunks are independent.
        store.ack_if(&cat, &g, &other, Some(0), 3).await.unwrap();
        // The unconditional form keeps its forward-only rules.
        assert_eq!(
            store.ack(&cat, &g, &c1, 20).await.unwrap(),
            Acked::Unchanged
        );
        assert!(matches!(
            store.ack(&cat, &g, &c1, 15).await.unwrap_err(),
            GroupError::Behind { .. }
        ));
        assert_eq!(store.positions_of(&cat, &g).unwrap().get(&c1), Some(&20));
    }
}
