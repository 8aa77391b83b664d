//! The cluster-wide chunk listing of one category (`listChunks`): the
//! chunks held here merged with every chunk the owners announced
//! ([`super::catalog`]), each with where it is held.
//!
//! Pure merging over what storage and the catalog say now; never asks a
//! peer and never touches files.

use std::collections::BTreeMap;

use super::Cluster;
use crate::names::{Category, ChunkName};
use crate::storage::CategoryLog;

/// One chunk of a cluster-wide listing. `name`, `complete` and `size` are
/// the chukcha fields; the others are additive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    /// The chunk name.
    pub name: String,
    /// Its size is final.
    pub complete: bool,
    /// Bytes readable through this server now: what it holds, or for a
    /// chunk held elsewhere what its owner last announced.
    pub size: u64,
    /// Whether this server answers reads of it from local data.
    pub held_here: bool,
    /// The servers holding it under the placement, owner first.
    pub holders: Vec<String>,
}

impl Cluster {
    /// Every non-empty chunk of `category` in the cluster, ordered by
    /// owner, then index (`log`: the category here, if it exists). Used
    /// under a replication factor (without one every server lists what it
    /// holds, which is every chunk once copied).
    #[must_use]
    pub fn list_chunks(&self, category: &Category, log: Option<&CategoryLog>) -> Vec<Listed> {
        let mut out: BTreeMap<ChunkName, Listed> = BTreeMap::new();
        let holders = |name: &ChunkName| {
            self.assignment
                .holders(category.as_str(), name.owner().as_str())
        };
        for (name, a) in self.catalog.list(category) {
            if a.size == 0 {
                continue;
            }
            let listed = Listed {
                name: name.to_string(),
                complete: a.complete,
                size: a.size,
                held_here: false,
                holders: holders(&name),
            };
            out.insert(name, listed);
        }
        for chunk in log.map(CategoryLog::chunks).unwrap_or_default() {
            let s = chunk.state();
            let name = chunk.name();
            if s.end == 0 || (!self.answers_locally(category, &chunk) && out.contains_key(name)) {
                continue; // empty, or a stale copy: its holders answer
            }
            out.insert(
                name.clone(),
                Listed {
                    name: name.to_string(),
                    complete: s.sealed || s.closed,
                    size: s.end,
                    held_here: true,
                    holders: holders(name),
                },
            );
        }
        out.into_values().collect()
    }
}
