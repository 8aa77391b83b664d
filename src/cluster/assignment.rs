//! [`Assignment`]: this server's current answer to "who holds which
//! (category, owner) pair", from the replication factor and the server list
//! (this server and its peers now). The rule itself is
//! [`super::placement::holders`]; this module only keeps its inputs,
//! replaces them on a peer-list reload, and tells the replicators when the
//! placement may have changed (a generation counter).
//!
//! Never copies or deletes data: replicators and the read path ask it.

use parking_lot::RwLock;
use tokio::sync::watch;

use super::placement;
use crate::names::ServerName;

/// The placement inputs now, shared by the cluster view, its replicators
/// and the HTTP handlers.
#[derive(Debug)]
pub struct Assignment {
    me: ServerName,
    /// Copies including the owner's; None = every server.
    factor: Option<usize>,
    /// This server and its peers, in name order.
    servers: RwLock<Vec<String>>,
    /// Bumped whenever `servers` changes.
    generation: watch::Sender<u64>,
}

impl Assignment {
    /// The assignment of `me` among `me` and `peers`, with `factor` copies
    /// per pair (None: every server).
    #[must_use]
    pub fn new(me: ServerName, peers: &[ServerName], factor: Option<usize>) -> Self {
        let servers = Self::list(&me, peers);
        Self {
            me,
            factor,
            servers: RwLock::new(servers),
            generation: watch::Sender::new(0),
        }
    }

    fn list(me: &ServerName, peers: &[ServerName]) -> Vec<String> {
        let mut all: Vec<String> = std::iter::once(me)
            .chain(peers)
            .map(ToString::to_string)
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Replaces the peer list (config reload); returns whether the server
    /// list changed (then the generation moves on).
    pub fn set_peers(&self, peers: &[ServerName]) -> bool {
        let now = Self::list(&self.me, peers);
        let mut servers = self.servers.write();
        if *servers == now {
            return false;
        }
        *servers = now;
        drop(servers);
        self.generation.send_modify(|g| *g += 1);
        true
    }

    /// Whether `name` is in the server list now (this server or a peer).
    #[must_use]
    pub fn is_member(&self, name: &str) -> bool {
        self.servers.read().iter().any(|s| s == name)
    }

    /// A receiver that sees every change of the server list.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The configured factor (None: every server).
    #[must_use]
    pub fn factor(&self) -> Option<usize> {
        self.factor
    }

    /// Copies per pair with the servers known now (the factor, at most the
    /// number of servers).
    #[must_use]
    pub fn copies(&self) -> usize {
        let n = self.servers.read().len();
        self.factor.map_or(n, |f| f.min(n))
    }

    /// The servers that hold `category`'s chunks of `owner`, the owner
    /// first (while it is in the list), then by falling weight.
    #[must_use]
    pub fn holders(&self, category: &str, owner: &str) -> Vec<String> {
        let servers = self.servers.read();
        let factor = self.factor.unwrap_or(servers.len().max(1));
        placement::holders(category, owner, &servers, factor)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Whether this server holds `category`'s chunks of `owner`.
    #[must_use]
    pub fn holds_here(&self, category: &str, owner: &str) -> bool {
        if owner == self.me.as_str() {
            return true;
        }
        match self.factor {
            None => true,
            Some(_) => self
                .holders(category, owner)
                .iter()
                .any(|s| s == self.me.as_str()),
        }
    }

    /// The most `min_sync_replicas` a write of this server can ask for:
    /// the other holders of its chunks (`R − 1`, at most the peer count).
    #[must_use]
    pub fn max_sync_replicas(&self) -> usize {
        self.copies().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    fn peers(n: usize) -> Vec<ServerName> {
        (2..=n).map(|i| name(&format!("n{i}"))).collect()
    }

    #[test]
    fn default_factor_is_every_server() {
        let a = Assignment::new(name("n1"), &peers(4), None);
        assert_eq!(a.copies(), 4);
        assert_eq!(a.max_sync_replicas(), 3);
        assert_eq!(a.holders("c", "n2").len(), 4);
        assert!(a.holds_here("c", "n3"));
    }

    #[test]
    fn a_factor_picks_placement_holders_and_reloads_move_the_generation() {
        let a = Assignment::new(name("n1"), &peers(5), Some(2));
        assert_eq!(a.copies(), 2);
        assert_eq!(a.max_sync_replicas(), 1);
        let mut held = 0;
        for i in 0..200 {
            let c = format!("c{i}");
            let h = a.holders(&c, "n3");
            assert_eq!(h.len(), 2);
            assert_eq!(h[0], "n3");
            assert_eq!(a.holds_here(&c, "n3"), h.contains(&"n1".to_owned()));
            held += usize::from(a.holds_here(&c, "n3"));
            assert!(a.holds_here(&c, "n1"), "own chunks are always held");
        }
        // n1 is one of 4 candidates for the second place.
        assert!((20..=80).contains(&held), "{held}");
        let rx = a.subscribe();
        assert!(!a.set_peers(&peers(5)));
        assert!(!rx.has_changed().unwrap());
        assert!(a.set_peers(&peers(6)));
        assert!(rx.has_changed().unwrap());
        // Fewer servers than the factor: every server holds everything.
        let small = Assignment::new(name("n1"), &peers(2), Some(3));
        assert_eq!(small.copies(), 2);
        assert_eq!(small.holders("c", "n2"), vec!["n2", "n1"]);
    }
}
