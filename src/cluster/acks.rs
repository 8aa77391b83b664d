//! Chukcha acks of peers' chunks that could not be forwarded to the owner
//! yet. Kept durably (`.chunkbus/pending-acks.json`) and retried until the
//! owner accepts them, so an ack is applied cluster-wide even if the owner
//! was down when it happened. The local copy is already deleted and the
//! replicator does not copy a pending chunk again.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// File (in the state dir) holding acks to forward.
pub const PENDING_ACKS_FILE: &str = "pending-acks.json";

/// One ack to forward to the chunk's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAck {
    /// Category.
    pub category: String,
    /// Chunk name (its owner is the server to tell).
    pub chunk: String,
    /// Size given with the ack.
    pub size: u64,
}

/// The durable set of acks still to forward.
#[derive(Debug)]
pub struct PendingAcks {
    path: PathBuf,
    acks: Mutex<Vec<PendingAck>>,
}

/// The pending-acks file cannot be read, parsed or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PendingAckError {
    /// Reading the file failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a JSON list of acks.
    #[error("{} is not valid", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// Rewriting the file failed (the change is not recorded).
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl PendingAcks {
    /// Loads the set (empty if the file is missing).
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn open(state_dir: &Path) -> Result<Self, PendingAckError> {
        let path = state_dir.join(PENDING_ACKS_FILE);
        let acks = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| PendingAckError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(PendingAckError::Read { path, source }),
        };
        Ok(Self {
            path,
            acks: Mutex::new(acks),
        })
    }

    fn persist(&self, acks: &[PendingAck]) -> Result<(), PendingAckError> {
        let write = |source| PendingAckError::Write {
            path: self.path.clone(),
            source,
        };
        let json = serde_json::to_vec(acks).map_err(|e| write(std::io::Error::other(e)))?;
        fsutil::rewrite_atomic(&self.path, &json).map_err(write)
    }

    /// Adds an ack durably.
    ///
    /// # Errors
    /// Writing the file failed (the ack is then not recorded).
    pub fn add(&self, ack: PendingAck) -> Result<(), PendingAckError> {
        let mut g = self.acks.lock();
        if g.iter()
            .any(|a| a.category == ack.category && a.chunk == ack.chunk)
        {
            return Ok(());
        }
        g.push(ack);
        if let Err(e) = self.persist(&g) {
            g.pop();
            return Err(e);
        }
        Ok(())
    }

    /// Removes an ack once the owner applied (or refused) it.
    pub fn remove(&self, category: &str, chunk: &str) {
        let mut g = self.acks.lock();
        let before = g.len();
        g.retain(|a| !(a.category == category && a.chunk == chunk));
        if g.len() != before {
            if let Err(e) = self.persist(&g) {
                tracing::warn!(error = %crate::error_chain(&e), "could not record a forwarded ack; it will be sent again");
            }
        }
    }

    /// Whether an ack of this chunk is waiting to be forwarded.
    #[must_use]
    pub fn contains(&self, category: &str, chunk: &str) -> bool {
        self.acks
            .lock()
            .iter()
            .any(|a| a.category == category && a.chunk == chunk)
    }

    /// Every pending ack.
    #[must_use]
    pub fn list(&self) -> Vec<PendingAck> {
        self.acks.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let p = PendingAcks::open(dir.path()).unwrap();
        let a = PendingAck {
            category: "c".into(),
            chunk: "n2-chunk000000001".into(),
            size: 5,
        };
        p.add(a.clone()).unwrap();
        p.add(a.clone()).unwrap();
        let again = PendingAcks::open(dir.path()).unwrap();
        assert_eq!(again.list(), vec![a]);
        again.remove("c", "n2-chunk000000001");
        assert!(PendingAcks::open(dir.path()).unwrap().list().is_empty());
    }
}
