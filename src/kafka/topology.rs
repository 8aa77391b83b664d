//! Which partitions a topic has and who answers for them, pure.
//!
//! Partition `p` of every topic is the stream of chunks owned by the
//! `p`-th server of the cluster in name order (this server and its
//! `--peers`), so a single node has one partition and numbering is the
//! same on every server. Every server holds (replicates) every chunk, so
//! every partition can be read anywhere: this server advertises itself,
//! under node id = its own partition number, as the leader of all
//! partitions. Produce to any partition appends to this server's own
//! chunks, since only an owner writes its chunks (docs/kafka.md).

use crate::names::ServerName;

/// The partition layout and this server's advertised identity.
#[derive(Debug, Clone)]
pub struct Topology {
    servers: Vec<ServerName>,
    own: usize,
    host: String,
    port: u16,
}

impl Topology {
    /// The layout for `own` and its peers, advertised as `host:port`.
    #[must_use]
    pub fn new(
        own: &ServerName,
        peers: impl IntoIterator<Item = ServerName>,
        host: String,
        port: u16,
    ) -> Self {
        let mut servers: Vec<ServerName> = peers.into_iter().collect();
        servers.push(own.clone());
        servers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        servers.dedup();
        let own = servers.iter().position(|s| s == own).unwrap_or(0);
        Self {
            servers,
            own,
            host,
            port,
        }
    }

    /// Partitions per topic (servers in the cluster).
    #[must_use]
    pub fn partitions(&self) -> i32 {
        i32::try_from(self.servers.len()).unwrap_or(i32::MAX)
    }

    /// The owner whose chunks make partition `p`.
    #[must_use]
    pub fn owner(&self, p: i32) -> Option<&ServerName> {
        usize::try_from(p).ok().and_then(|i| self.servers.get(i))
    }

    /// This server's own partition (where its writes go).
    #[must_use]
    pub fn own_partition(&self) -> i32 {
        i32::try_from(self.own).unwrap_or(0)
    }

    /// This server's Kafka node id (its own partition number).
    #[must_use]
    pub fn node_id(&self) -> i32 {
        self.own_partition()
    }

    /// The advertised host.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The advertised port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    #[test]
    fn numbering_is_the_same_on_every_server() {
        let a = Topology::new(&n("b"), [n("c"), n("a")], "h".into(), 1);
        let c = Topology::new(&n("c"), [n("b"), n("a")], "h".into(), 1);
        assert_eq!(a.partitions(), 3);
        for p in 0..3 {
            assert_eq!(a.owner(p), c.owner(p));
        }
        assert_eq!(a.own_partition(), 1);
        assert_eq!(c.own_partition(), 2);
        assert_eq!(a.owner(3), None);
        assert_eq!(a.owner(-1), None);
        let single = Topology::new(&n("node1"), [], "h".into(), 1);
        assert_eq!((single.partitions(), single.own_partition()), (1, 0));
    }
}
