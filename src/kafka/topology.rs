//! Which partitions a topic has and who leads them, pure.
//!
//! Partition `p` of every topic is the stream of chunks owned by the
//! `p`-th server of the cluster in name order (this server and its
//! `--peers` at start), so a single node has one partition and numbering
//! is the same on every server. Each server with a Kafka listener is a
//! broker whose node id is its own partition number; the addresses of
//! the others come from their change-feed answers (`docs/peers.md`).
//!
//! * **Leader** of `p`: its owner, while reachable and a broker (only an
//!   owner writes its chunks). Otherwise the first reachable broker among
//!   the partition's holders (placement order): it serves fetches of the
//!   copies it holds and answers produce `NOT_LEADER_OR_FOLLOWER`; no
//!   such holder leaves the partition leaderless (`LEADER_NOT_AVAILABLE`).
//! * **Replicas**: the holders that are brokers; **isr** the reachable ones.
//! * **Group coordinator**: rendezvous hashing of the group id over the
//!   reachable brokers (`cluster::placement::choose`).

use crate::cluster::placement;
use crate::names::ServerName;

/// The partition layout and this server's advertised identity.
#[derive(Debug, Clone)]
pub struct Topology {
    servers: Vec<ServerName>,
    own: usize,
    host: String,
    port: u16,
}

/// One server as Kafka clients may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Node id (the server's partition number).
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: u16,
    /// Reachable now (from this server).
    pub up: bool,
}

/// The cluster's brokers now, indexed by partition number.
#[derive(Debug, Clone)]
pub struct View<'a> {
    topology: &'a Topology,
    /// Per server (partition number): its broker, None without a known
    /// Kafka address.
    nodes: Vec<Option<Node>>,
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

    /// The partition number (= node id) of the server called `name`.
    #[must_use]
    pub fn number_of(&self, name: &str) -> Option<i32> {
        self.servers
            .iter()
            .position(|s| s.as_str() == name)
            .and_then(|i| i32::try_from(i).ok())
    }

    /// This server's own partition (where its writes go).
    #[must_use]
    pub fn own_partition(&self) -> i32 {
        i32::try_from(self.own).unwrap_or(0)
    }

    /// Whether partition `p` is this server's own (its producer target).
    #[must_use]
    pub fn is_own(&self, p: i32) -> bool {
        p == self.own_partition()
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

    /// The brokers now: this server, and each other server whose Kafka
    /// address `peer` gives (`(host, port, reachable)`).
    #[must_use]
    pub fn view<F>(&self, mut peer: F) -> View<'_>
    where
        F: FnMut(&str) -> Option<(String, u16, bool)>,
    {
        let nodes = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let id = i32::try_from(i).ok()?;
                if i == self.own {
                    return Some(Node {
                        id,
                        host: self.host.clone(),
                        port: self.port,
                        up: true,
                    });
                }
                let (host, port, up) = peer(name.as_str())?;
                Some(Node { id, host, port, up })
            })
            .collect();
        View {
            topology: self,
            nodes,
        }
    }
}

impl View<'_> {
    /// The broker of server number `id`, if it has a known address.
    #[must_use]
    pub fn node(&self, id: i32) -> Option<&Node> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.nodes.get(i))
            .and_then(Option::as_ref)
    }

    /// The reachable brokers, by node id (what Metadata lists).
    pub fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten().filter(|n| n.up)
    }

    fn is_live(&self, id: i32) -> bool {
        self.node(id).is_some_and(|n| n.up)
    }

    /// The leader of partition `p`, whose chunks `holders` (node ids in
    /// placement order, the owner first) hold: the owner while it is a
    /// reachable broker, else the first reachable broker among the
    /// holders; None when there is none.
    #[must_use]
    pub fn leader(&self, p: i32, holders: &[i32]) -> Option<i32> {
        if self.is_live(p) {
            return Some(p);
        }
        holders.iter().copied().find(|h| self.is_live(*h))
    }

    /// The replicas of a partition held by `holders`: those that are
    /// brokers; and of them the reachable ones (the isr).
    #[must_use]
    pub fn replicas(&self, holders: &[i32]) -> (Vec<i32>, Vec<i32>) {
        let replicas: Vec<i32> = holders
            .iter()
            .copied()
            .filter(|h| self.node(*h).is_some())
            .collect();
        let isr = replicas
            .iter()
            .copied()
            .filter(|h| self.is_live(*h))
            .collect();
        (replicas, isr)
    }

    /// The coordinator of `group`: of the reachable brokers, the one
    /// rendezvous hashing ranks first for the group id (by server name).
    #[must_use]
    pub fn coordinator(&self, group: &str) -> Option<&Node> {
        let names = self
            .live()
            .filter_map(|n| self.topology.owner(n.id).map(ServerName::as_str));
        let chosen = placement::choose(group, names)?;
        self.topology.number_of(chosen).and_then(|id| self.node(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    fn three(own: &str) -> Topology {
        let others = ["a", "b", "c"].into_iter().filter(|s| *s != own).map(n);
        Topology::new(&n(own), others, format!("h-{own}"), 1)
    }

    /// A view where every other server has an address, `down` ones
    /// unreachable and `silent` ones without a Kafka listener.
    fn view<'a>(t: &'a Topology, down: &[&str], silent: &[&str]) -> View<'a> {
        t.view(|name| {
            (!silent.contains(&name)).then(|| (format!("h-{name}"), 1, !down.contains(&name)))
        })
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
        assert_eq!(a.number_of("c"), Some(2));
        assert_eq!(a.number_of("x"), None);
        let single = Topology::new(&n("node1"), [], "h".into(), 1);
        assert_eq!((single.partitions(), single.own_partition()), (1, 0));
    }

    #[test]
    fn owners_lead_their_partitions_with_distinct_brokers() {
        let t = three("b");
        let v = view(&t, &[], &[]);
        let live: Vec<(i32, &str)> = v.live().map(|n| (n.id, n.host.as_str())).collect();
        assert_eq!(live, vec![(0, "h-a"), (1, "h-b"), (2, "h-c")]);
        for p in 0..3 {
            assert_eq!(v.leader(p, &[p, (p + 1) % 3]), Some(p));
        }
        assert_eq!(v.replicas(&[2, 0]), (vec![2, 0], vec![2, 0]));
    }

    #[test]
    fn a_down_owner_is_replaced_by_a_live_holder_for_reads() {
        let t = three("a");
        let v = view(&t, &["c"], &[]);
        // c (2) is down: its first live holder leads.
        assert_eq!(v.leader(2, &[2, 1, 0]), Some(1));
        assert_eq!(v.leader(2, &[2, 0]), Some(0));
        // No live holder: leaderless.
        let v = view(&t, &["b", "c"], &[]);
        assert_eq!(v.leader(2, &[2, 1]), None);
        assert_eq!(v.replicas(&[2, 1, 0]), (vec![2, 1, 0], vec![0]));
        assert_eq!(v.live().count(), 1);
    }

    #[test]
    fn servers_without_a_kafka_listener_are_not_brokers() {
        let t = three("a");
        let v = view(&t, &[], &["b"]);
        assert_eq!(v.live().map(|n| n.id).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(v.leader(1, &[1, 2]), Some(2));
        assert_eq!(v.replicas(&[1, 2]), (vec![2], vec![2]));
    }

    #[test]
    fn every_server_picks_the_same_coordinator_and_skips_down_ones() {
        let (a, b, c) = (three("a"), three("b"), three("c"));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..60 {
            let g = format!("group-{i}");
            let chosen = view(&a, &[], &[]).coordinator(&g).unwrap().id;
            assert_eq!(view(&b, &[], &[]).coordinator(&g).unwrap().id, chosen);
            assert_eq!(view(&c, &[], &[]).coordinator(&g).unwrap().id, chosen);
            seen.insert(chosen);
            // With the chosen server down, a and the others agree on
            // another one (only its groups move).
            let down = a.owner(chosen).unwrap().as_str().to_owned();
            let views = [&a, &b, &c];
            let others: Vec<i32> = views
                .iter()
                .filter(|t| t.owner(t.own_partition()).unwrap().as_str() != down)
                .map(|t| view(t, &[down.as_str()], &[]).coordinator(&g).unwrap().id)
                .collect();
            assert_eq!(others.len(), 2);
            assert!(others.iter().all(|o| *o == others[0] && *o != chosen));
        }
        assert_eq!(seen.len(), 3, "groups spread over every server");
    }
}
