//! [`Catalog`]: every peer's chunks as their owners announce them on the
//! change feed — name, size and whether it is final — whether or not this
//! server holds a copy. Under a replication factor it is what lets any
//! server list every chunk of the cluster and find a chunk it does not
//! hold (`listChunks`, `/read`, `/ack`).
//!
//! Metadata only, in memory: rebuilt from each owner's full state after a
//! restart (the first poll), never written to disk, and never the source of
//! chunk bytes.

use std::collections::BTreeMap;

use parking_lot::RwLock;
use tokio::sync::watch;

use crate::names::{Category, ChunkName, ServerName};

/// What an owner last announced about one of its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// Bytes the owner has published.
    pub size: u64,
    /// `size` is final (the chunk is sealed or closed).
    pub complete: bool,
}

/// Every announced chunk of every peer, by category and name.
#[derive(Debug)]
pub struct Catalog {
    chunks: RwLock<BTreeMap<Category, BTreeMap<ChunkName, Announced>>>,
    /// Bumped on every change, for listings that wait for a new chunk.
    changed: watch::Sender<u64>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            chunks: RwLock::default(),
            changed: watch::Sender::new(0),
        }
    }
}

impl Catalog {
    /// A receiver that sees every change.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Records `owner`'s full state: its chunks now are exactly `chunks`
    /// (an owner's first answer after either side restarted).
    pub fn replace_owner(&self, owner: &ServerName, chunks: &[(Category, ChunkName, Announced)]) {
        {
            let mut all = self.chunks.write();
            for per in all.values_mut() {
                per.retain(|n, _| n.owner() != owner);
            }
            for (cat, name, a) in chunks {
                all.entry(cat.clone()).or_default().insert(name.clone(), *a);
            }
            all.retain(|_, per| !per.is_empty());
        }
        self.bump();
    }

    /// Records changed chunks (sizes only grow; a final size is kept).
    pub fn update(&self, chunks: &[(Category, ChunkName, Announced)]) {
        if chunks.is_empty() {
            return;
        }
        {
            let mut all = self.chunks.write();
            for (cat, name, a) in chunks {
                all.entry(cat.clone())
                    .or_default()
                    .entry(name.clone())
                    .and_modify(|old| {
                        if !old.complete || a.complete {
                            *old = *a;
                        }
                    })
                    .or_insert(*a);
            }
        }
        self.bump();
    }

    /// Forgets a chunk its owner deleted.
    pub fn remove(&self, category: &Category, name: &ChunkName) {
        let removed = {
            let mut all = self.chunks.write();
            let removed = all
                .get_mut(category)
                .and_then(|per| per.remove(name))
                .is_some();
            if all.get(category).is_some_and(BTreeMap::is_empty) {
                all.remove(category);
            }
            removed
        };
        if removed {
            self.bump();
        }
    }

    /// What the owner announced about `name`, if it is known.
    #[must_use]
    pub fn get(&self, category: &Category, name: &ChunkName) -> Option<Announced> {
        self.chunks.read().get(category)?.get(name).copied()
    }

    /// Every known chunk of `category`, ordered by owner, then index.
    #[must_use]
    pub fn list(&self, category: &Category) -> Vec<(ChunkName, Announced)> {
        self.chunks
            .read()
            .get(category)
            .map(|per| per.iter().map(|(n, a)| (n.clone(), *a)).collect())
            .unwrap_or_default()
    }

    /// Owners with at least one known chunk.
    #[must_use]
    pub fn owners(&self) -> std::collections::BTreeSet<ServerName> {
        self.chunks
            .read()
            .values()
            .flat_map(|per| per.keys().map(|n| n.owner().clone()))
            .collect()
    }

    /// Categories with at least one known chunk.
    #[must_use]
    pub fn categories(&self) -> Vec<Category> {
        self.chunks.read().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str, n: &str) -> (Category, ChunkName) {
        (Category::parse(c).unwrap(), ChunkName::parse(n).unwrap())
    }

    fn entry(c: &str, n: &str, size: u64, complete: bool) -> (Category, ChunkName, Announced) {
        let (c, n) = key(c, n);
        (c, n, Announced { size, complete })
    }

    #[test]
    fn full_state_replaces_one_owner_updates_only_grow() {
        let cat = Catalog::default();
        let rx = cat.subscribe();
        cat.update(&[
            entry("a", "n2-chunk000000001", 10, true),
            entry("a", "n2-chunk000000002", 5, false),
            entry("a", "n3-chunk000000001", 7, false),
        ]);
        assert!(rx.has_changed().unwrap());
        let (a, n2c2) = key("a", "n2-chunk000000002");
        cat.update(&[entry("a", "n2-chunk000000002", 9, false)]);
        assert_eq!(cat.get(&a, &n2c2).unwrap().size, 9);
        // A final size is not replaced by a late, smaller growth.
        cat.update(&[entry("a", "n2-chunk000000001", 4, false)]);
        let (_, n2c1) = key("a", "n2-chunk000000001");
        assert_eq!(
            cat.get(&a, &n2c1),
            Some(Announced {
                size: 10,
                complete: true
            })
        );
        let n2 = ServerName::parse("n2").unwrap();
        cat.replace_owner(&n2, &[entry("b", "n2-chunk000000003", 1, false)]);
        let names: Vec<String> = cat.list(&a).iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, vec!["n3-chunk000000001"]);
        assert_eq!(cat.categories().len(), 2);
        let (b, n2c3) = key("b", "n2-chunk000000003");
        cat.remove(&b, &n2c3);
        assert!(cat.get(&b, &n2c3).is_none());
        assert_eq!(cat.categories(), vec![a]);
    }
}
