//! Scale on paper: runs the replication-factor placement
//! (`chunkbus::cluster::placement`, the function every server uses) for
//! clusters of 10, 100 and 1,000 servers and reports how evenly the copies
//! spread, how much data a join or a leave moves, and what the metadata
//! traffic of the change feeds costs as the cluster grows.
//!
//! `cargo run --release --example placement [-- PAIRS [R]]`
//! (defaults: 100,000 (category, owner) pairs, R = 3). The results and
//! their reading are in `docs/scaling.md`.

use std::collections::HashMap;
use std::time::Instant;

use chunkbus::cluster::placement::holders;

/// One (category, owner) pair and its bytes.
struct Pair {
    category: String,
    owner: usize,
    bytes: f64,
}

/// How the bytes are spread over categories.
#[derive(Clone, Copy)]
enum Sizes {
    /// Every pair holds the same bytes.
    Equal,
    /// Category `k` (0-based) holds bytes ∝ 1/(k+1) (Zipf, s = 1), split
    /// evenly between its owners: a few hot categories, a long tail.
    Zipf,
}

/// `pairs` pairs: categories `cat0, cat1, …`, each written through every
/// server (as producers spread over a cluster do), so each category has
/// `n` owners.
fn make_pairs(n: usize, pairs: usize, sizes: Sizes) -> Vec<Pair> {
    let categories = (pairs / n).max(1);
    let mut out = Vec::with_capacity(categories * n);
    for c in 0..categories {
        let bytes = match sizes {
            Sizes::Equal => 1.0,
            Sizes::Zipf => 1.0 / (c as f64 + 1.0),
        };
        for owner in 0..n {
            out.push(Pair {
                category: format!("cat{c}"),
                owner,
                bytes,
            });
        }
    }
    out
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("node{i}")).collect()
}

/// Bytes held per server (owned and replica copies).
fn held(pairs: &[Pair], servers: &[String], r: usize) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = servers.iter().map(|s| (s.clone(), 0.0)).collect();
    let all = names(servers.len() + 1); // owners keep their names
    for p in pairs {
        for h in holders(&p.category, &all[p.owner], servers, r) {
            if let Some(b) = out.get_mut(h) {
                *b += p.bytes;
            }
        }
    }
    out
}

/// Bytes copied to new holders when the server list changes from `before`
/// to `after` (copies that must be made; copies dropped cost nothing).
fn moved(pairs: &[Pair], before: &[String], after: &[String], r: usize) -> f64 {
    let all = names(before.len().max(after.len()) + 1);
    let mut total = 0.0;
    for p in pairs {
        let owner = &all[p.owner];
        let old = holders(&p.category, owner, before, r);
        let new = holders(&p.category, owner, after, r);
        let added = new.iter().filter(|s| !old.contains(s)).count();
        total += p.bytes * added as f64;
    }
    total
}

fn main() {
    let mut args = std::env::args().skip(1);
    let pairs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let r: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    println!("placement: rendezvous hashing, R = {r}, about {pairs} (category, owner) pairs\n");
    println!(
        "| servers N | sizes | pairs | max/mean held bytes | min/mean | join: moved / stored | leave: moved / stored | goal 1.2·R/N of unique data: join, leave | time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in [10usize, 100, 1_000] {
        for (label, sizes) in [("equal", Sizes::Equal), ("zipf", Sizes::Zipf)] {
            let t = Instant::now();
            let ps = make_pairs(n, pairs, sizes);
            let servers = names(n);
            let h = held(&ps, &servers, r);
            let mean = h.values().sum::<f64>() / n as f64;
            let max = h.values().copied().fold(0.0, f64::max);
            let min = h.values().copied().fold(f64::INFINITY, f64::min);
            let unique: f64 = ps.iter().map(|p| p.bytes).sum();
            let stored = unique * r.min(n) as f64;
            // Join: a new server; it owns nothing yet.
            let mut joined = servers.clone();
            joined.push(format!("node{}", n + 1));
            let join = moved(&ps, &servers, &joined, r);
            // Leave: the last server goes; its chunks keep R copies.
            let left = &servers[..n - 1];
            let leave = moved(&ps, &servers, left, r);
            let goal = 1.2 * r as f64 / n as f64;
            println!(
                "| {n} | {label} | {} | {:.3} | {:.3} | {:.4} | {:.4} | {:.2}×, {:.2}× of {:.4} | {:.1} s |",
                ps.len(),
                max / mean,
                min / mean,
                join / stored,
                leave / stored,
                join / unique / goal,
                leave / unique / goal,
                goal,
                t.elapsed().as_secs_f64(),
            );
        }
    }
    metadata_model(pairs, r);
}

/// The change feeds' cost per server as the cluster grows, from the
/// protocol's constants (`docs/peers.md`): every server long-polls every
/// other server's feed (20 s wait when idle) and learns every chunk of the
/// cluster; holders also copy.
fn metadata_model(pairs: usize, r: usize) {
    /// Chunk rotation period (default `chunk_rotate_interval`), seconds.
    const ROTATE_S: f64 = 600.0;
    /// Idle long-poll wait, seconds (`POLL_WAIT`).
    const POLL_WAIT_S: f64 = 20.0;
    /// Bytes of one chunk-state entry in a feed answer (JSON).
    const EVENT_BYTES: f64 = 120.0;
    /// Bytes one chunk costs in a server's in-memory catalogue.
    const CATALOGUE_BYTES: f64 = 200.0;
    /// Sealed chunks kept per pair (e.g. a week at one per 10 minutes,
    /// most of them tiered).
    const KEPT_PER_PAIR: f64 = 1_000.0;
    println!(
        "\nmetadata per server, {pairs} active pairs, a chunk sealed and created per pair every {ROTATE_S} s, {KEPT_PER_PAIR} chunks kept per pair:\n"
    );
    println!("| servers N | long polls held (out + in) | idle polls/s | feed events/s | feed bytes/s | catalogue (every chunk of the cluster) | of which held here (R = {r}) |");
    println!("|---|---|---|---|---|---|---|");
    for n in [10usize, 100, 1_000, 10_000] {
        let nf = n as f64;
        let polls = 2.0 * (nf - 1.0);
        let idle_polls = (nf - 1.0) / POLL_WAIT_S;
        // Two structural events (seal, create) per pair and rotation, of
        // every owner but this server.
        let events = 2.0 * pairs as f64 / ROTATE_S * (nf - 1.0) / nf;
        let catalogue = pairs as f64 * KEPT_PER_PAIR * CATALOGUE_BYTES;
        let held_share = (r as f64 / nf).min(1.0);
        println!(
            "| {n} | {polls:.0} | {idle_polls:.1} | {events:.0} | {:.0} KB/s | {:.1} GB | {:.2} GB |",
            events * EVENT_BYTES / 1e3,
            catalogue / 1e9,
            catalogue * held_share / 1e9,
        );
    }
}
