//! Where the copies of a (category, owner) pair live under a replication
//! factor: rendezvous (highest-random-weight) hashing over the cluster's
//! servers. A pure function of names, so every server computes the same
//! holders from the same server list without asking anyone.
//!
//! The weight of `server` for the pair is a 64-bit hash of
//! `category 0x00 owner 0x00 server` (names never contain NUL, so the
//! encoding is unambiguous): FNV-1a 64 over those bytes, then MurmurHash3's
//! `fmix64` finalizer so that names differing in one character (`node1`,
//! `node2`) get unrelated weights. The holders of a pair are its owner
//! (while it is in the list) and the highest-weighted other servers until
//! there are `R`; equal weights are ordered by server name. The byte-exact
//! rule is in `docs/peers.md`; `docs/scaling.md` measures balance and
//! movement with `examples/placement.rs`.
//!
//! Adding or removing one server changes a pair's holders only where that
//! server ranks among the top weights, which is what keeps the data moved
//! by a membership change near `R / N` of the total.

use std::cmp::Reverse;

/// FNV-1a 64 offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Continues an FNV-1a 64 hash over `bytes`.
const fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// One (category, owner) pair, hashed once so that weighing many servers
/// costs only their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairKey {
    /// FNV-1a state after `category 0x00 owner 0x00`.
    prefix: u64,
}

impl PairKey {
    /// The pair of `category`'s chunks written by `owner`.
    #[must_use]
    pub fn new(category: &str, owner: &str) -> Self {
        let h = fnv1a(FNV_OFFSET, category.as_bytes());
        let h = fnv1a(h, &[0]);
        let h = fnv1a(h, owner.as_bytes());
        Self {
            prefix: fnv1a(h, &[0]),
        }
    }

    /// The weight of `server` for this pair (higher ranks first).
    #[must_use]
    pub fn weight(&self, server: &str) -> u64 {
        fmix64(fnv1a(self.prefix, server.as_bytes()))
    }
}

/// The servers holding copies of `category`'s chunks owned by `owner`,
/// among `servers` (the whole cluster, this server included, in any order;
/// duplicates are the caller's mistake and count once each).
///
/// `factor` is the number of copies including the owner's. While the owner
/// is in `servers` it always holds its chunks and comes first; the other
/// holders follow by falling weight. A departed owner (not in `servers`)
/// gets `factor` holders among the rest, so its chunks keep `factor`
/// copies. A factor of 0 is treated as 1; a factor of at least the
/// cluster's size selects every server.
#[must_use]
pub fn holders<'a, S: AsRef<str>>(
    category: &str,
    owner: &str,
    servers: &'a [S],
    factor: usize,
) -> Vec<&'a str> {
    let key = PairKey::new(category, owner);
    let factor = factor.max(1);
    let mut out: Vec<&'a str> = Vec::with_capacity(factor.min(servers.len()));
    if let Some(o) = servers.iter().map(AsRef::as_ref).find(|s| *s == owner) {
        out.push(o);
    }
    let mut others: Vec<(Reverse<u64>, &'a str)> = servers
        .iter()
        .map(AsRef::as_ref)
        .filter(|s| *s != owner)
        .map(|s| (Reverse(key.weight(s)), s))
        .collect();
    let want = factor.saturating_sub(out.len()).min(others.len());
    if want < others.len() {
        // Only the top `want` matter: partition, then order those.
        others.select_nth_unstable(want);
        others.truncate(want);
    }
    others.sort_unstable();
    out.extend(others.into_iter().map(|(_, s)| s));
    out
}

/// Whether `server` holds copies of `category`'s chunks owned by `owner`
/// (see [`holders`]).
#[must_use]
pub fn is_holder<S: AsRef<str>>(
    category: &str,
    owner: &str,
    server: &str,
    servers: &[S],
    factor: usize,
) -> bool {
    holders(category, owner, servers, factor).contains(&server)
}

/// The weight of `server` for `key` in a single-key rendezvous choice:
/// `fmix64(fnv1a64(key 0x00 server))` (the Kafka group coordinator).
#[must_use]
pub fn key_weight(key: &str, server: &str) -> u64 {
    let h = fnv1a(FNV_OFFSET, key.as_bytes());
    fmix64(fnv1a(fnv1a(h, &[0]), server.as_bytes()))
}

/// The one server among `candidates` chosen for `key`: the highest
/// [`key_weight`] (equal weights: the smaller name). Every server with
/// the same candidates chooses the same one; removing a candidate moves
/// only the keys it had. None without candidates.
#[must_use]
pub fn choose<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .max_by_key(|s| (key_weight(key, s), Reverse(*s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node{i}")).collect()
    }

    #[test]
    fn weights_are_fixed_by_the_documented_rule() {
        // FNV-1a 64 of the empty string is the offset basis (a published
        // test vector), and of "a" 0xaf63dc4c8601ec8c.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fmix64(0), 0);
        // The weight is fmix64(FNV-1a("c\0o\0s")): pinned so that a change
        // of the rule, which would move data between servers running
        // different versions, cannot go unnoticed.
        let w = PairKey::new("c", "o").weight("s");
        assert_eq!(w, fmix64(fnv1a(FNV_OFFSET, b"c\0o\0s")));
        assert_eq!(w, 0xfd5b_f393_de65_dbb2);
    }

    #[test]
    fn single_key_choice_is_pinned_and_stable() {
        assert_eq!(key_weight("g", "s"), fmix64(fnv1a(FNV_OFFSET, b"g\0s")));
        assert_eq!(key_weight("g", "s"), 0x5fde_f6dd_925a_3712);
        let servers = cluster(5);
        let names = || servers.iter().map(String::as_str);
        let mut reversed: Vec<&str> = names().collect();
        reversed.reverse();
        let mut moved = 0;
        for i in 0..500 {
            let g = format!("group{i}");
            let c = choose(&g, names()).unwrap();
            assert_eq!(Some(c), choose(&g, reversed.iter().copied()));
            // Without one server only its keys move.
            let without = choose(&g, names().filter(|s| *s != "node2")).unwrap();
            if c == "node2" {
                moved += 1;
            } else {
                assert_eq!(without, c);
            }
        }
        assert!((50..=150).contains(&moved), "{moved}");
        assert_eq!(choose("g", std::iter::empty()), None);
    }

    #[test]
    fn owner_first_then_highest_weights_in_order() {
        let servers = cluster(7);
        let h = holders("orders", "node3", &servers, 3);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0], "node3");
        let key = PairKey::new("orders", "node3");
        let mut rest: Vec<&str> = servers
            .iter()
            .map(String::as_str)
            .filter(|s| *s != "node3")
            .collect();
        rest.sort_by_key(|s| (Reverse(key.weight(s)), *s));
        assert_eq!(&h[1..], &rest[..2]);
    }

    #[test]
    fn every_server_computes_the_same_holders_whatever_its_list_order() {
        let servers = cluster(9);
        let mut shuffled = servers.clone();
        shuffled.reverse();
        shuffled.swap(2, 6);
        for c in ["a", "b", "orders", "x-1"] {
            for o in &servers {
                assert_eq!(
                    holders(c, o, &servers, 3),
                    holders(c, o, &shuffled, 3),
                    "{c} {o}"
                );
            }
        }
    }

    #[test]
    fn factor_bounds_and_departed_owners() {
        let servers = cluster(4);
        assert_eq!(holders("c", "node1", &servers, 0), vec!["node1"]);
        assert_eq!(holders("c", "node1", &servers, 1), vec!["node1"]);
        let all = holders("c", "node1", &servers, 10);
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], "node1");
        // A departed owner's chunks still get `factor` holders.
        let without = &servers[1..];
        let h = holders("c", "node1", without, 2);
        assert_eq!(h.len(), 2);
        assert!(!h.contains(&"node1"));
        // ... and they are its former replicas first: the top weights do
        // not change when the owner leaves.
        assert_eq!(holders("c", "node1", &servers, 2)[1], h[0]);
        assert!(is_holder("c", "node1", h[1], without, 2));
        assert!(holders::<String>("c", "node1", &[], 3).is_empty());
    }

    #[test]
    fn a_joining_server_only_takes_places_it_outranks() {
        let before = cluster(20);
        let mut after = before.clone();
        after.push("node21".to_owned());
        let mut changed = 0;
        for i in 0..2_000 {
            let c = format!("cat{i}");
            let (old, new) = (
                holders(&c, "node1", &before, 3),
                holders(&c, "node1", &after, 3),
            );
            if old != new {
                changed += 1;
                // The only new holder is the joining server, and it pushed
                // out exactly one old holder.
                let added: Vec<_> = new.iter().filter(|s| !old.contains(s)).collect();
                assert_eq!(added, vec![&"node21"]);
            }
        }
        // Expected 2 of 20 other servers' places: about 10% of pairs.
        assert!((100..=320).contains(&changed), "{changed} of 2000 changed");
    }

    #[test]
    fn copies_spread_evenly() {
        let servers = cluster(10);
        let mut held = std::collections::HashMap::<&str, usize>::new();
        for i in 0..5_000 {
            for h in holders(&format!("c{i}"), "node1", &servers, 3) {
                *held.entry(h).or_default() += 1;
            }
        }
        // node1 owns all 5,000; the 10,000 replica places spread over 9.
        assert_eq!(held["node1"], 5_000);
        for s in &servers[1..] {
            let n = held[s.as_str()];
            assert!((1_000..=1_230).contains(&n), "{s}: {n}");
        }
    }
}
