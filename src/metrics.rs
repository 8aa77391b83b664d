//! `GET /metrics` in Prometheus text format (`prometheus-client`): request
//! counters kept as they happen, and state gauges (chunks, consumer lag,
//! retention, push delivery) computed at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::cluster::Cluster;
use crate::groups::GroupStore;
use crate::names::Category;
use crate::storage::Storage;
use crate::subscriptions::Status;
use crate::tier::Tiering;

/// Label: an HTTP status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The code.
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChunkLabels {
    category: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    category: String,
    consumer: String,
}

/// Counters updated by the request handlers.
#[derive(Debug)]
pub struct Metrics {
    /// Successful `/write` requests.
    pub writes: Counter,
    /// Bytes stored by them.
    pub write_bytes: Counter,
    /// `/write` requests of idempotent producers answered as duplicates
    /// (stored before; not counted in `writes`).
    pub duplicate_writes: Counter,
    /// Successful `/read` requests.
    pub reads: Counter,
    /// Bytes returned by them.
    pub read_bytes: Counter,
    /// `/read` requests of chunks held elsewhere, relayed from a holder.
    pub relayed_reads: Counter,
    /// Error responses by status.
    pub errors: Family<StatusLabel, Counter>,
    /// Successful `/write` requests, headers received → answer ready
    /// (body intake, append, and any `sync`/replica wait).
    pub write_seconds: Histogram,
    /// The append of those writes alone: reserving, copying into the
    /// chunk, and publication (readable); for an idempotent producer's
    /// write also its admission (waiting behind that producer's write in
    /// flight, the dedup table's rebuild on first use). Duplicates are not
    /// observed.
    pub append_seconds: Histogram,
    /// Successful `/read` requests, headers received → answer ready, minus
    /// the time a long poll waited for data.
    pub read_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            writes: Counter::default(),
            write_bytes: Counter::default(),
            duplicate_writes: Counter::default(),
            reads: Counter::default(),
            read_bytes: Counter::default(),
            relayed_reads: Counter::default(),
            errors: Family::default(),
            write_seconds: latency_histogram(),
            append_seconds: latency_histogram(),
            read_seconds: latency_histogram(),
        }
    }
}

/// Buckets for request stage latencies: 10 µs … ~5 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(10e-6, 2.0, 20))
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(
        &self,
        storage: &Storage,
        groups: &GroupStore,
        subscriptions: &[Status],
        cluster: Option<&Cluster>,
        tiering: Option<&Tiering>,
    ) -> String {
        let mut reg = Registry::with_prefix("chunkbus");
        reg.register("writes", "Successful /write requests", self.writes.clone());
        reg.register(
            "write_bytes",
            "Bytes stored by /write",
            self.write_bytes.clone(),
        );
        reg.register(
            "duplicate_writes",
            "Idempotent producers' /write requests answered as duplicates (stored before)",
            self.duplicate_writes.clone(),
        );
        reg.register("reads", "Successful /read requests", self.reads.clone());
        reg.register(
            "relayed_reads",
            "/read requests of chunks held elsewhere, answered from a holder",
            self.relayed_reads.clone(),
        );
        reg.register(
            "read_bytes",
            "Bytes returned by /read",
            self.read_bytes.clone(),
        );
        reg.register(
            "write_seconds",
            "Successful /write requests, headers received to answer ready",
            self.write_seconds.clone(),
        );
        reg.register(
            "append_seconds",
            "The append of successful /write requests (reserve, copy, publish; idempotent producers' admission included)",
            self.append_seconds.clone(),
        );
        reg.register(
            "read_seconds",
            "Successful /read requests, headers received to answer ready, minus any long-poll wait",
            self.read_seconds.clone(),
        );
        reg.register(
            "http_errors",
            "Error responses by status",
            self.errors.clone(),
        );

        let chunks = Family::<ChunkLabels, Gauge>::default();
        let bytes = Family::<ChunkLabels, Gauge>::default();
        let lag_bytes = Family::<GroupLabels, Gauge>::default();
        let lag_messages = Family::<GroupLabels, Gauge>::default();
        for name in storage.category_names() {
            let Some(category) = Category::parse(&name).ok() else {
                continue;
            };
            let Some(log) = storage.category(&category) else {
                continue;
            };
            let list = log.list();
            for c in &list {
                let labels = ChunkLabels {
                    category: name.clone(),
                    state: if c.complete { "sealed" } else { "open" },
                };
                chunks.get_or_create(&labels).inc();
                bytes.get_or_create(&labels).inc_by(gauge_value(c.size));
            }
            for (group, positions) in groups.groups(&category) {
                let (lb, lm) = log.lag(&positions).unwrap_or_else(|e| {
                    tracing::warn!(error = %crate::error_chain(&e), "consumer lag not computed");
                    (0, 0)
                });
                let labels = GroupLabels {
                    category: name.clone(),
                    consumer: group.to_string(),
                };
                lag_bytes.get_or_create(&labels).set(gauge_value(lb));
                lag_messages.get_or_create(&labels).set(gauge_value(lm));
            }
        }
        reg.register("chunks", "Chunks held, by category and state", chunks);
        reg.register(
            "chunk_bytes",
            "Readable bytes held, by category and state",
            bytes,
        );
        reg.register(
            "consumer_lag_bytes",
            "Bytes a consumer group has not acked",
            lag_bytes,
        );
        reg.register(
            "consumer_lag_messages",
            "Messages a consumer group has not acked",
            lag_messages,
        );
        reg.register(
            "fsync_seconds",
            "Latency of fdatasync calls on chunk, index and state files",
            crate::fsutil::FSYNC_SECONDS.clone(),
        );
        let deleted: Counter = Counter::default();
        deleted.inc_by(crate::retention::DELETED_CHUNKS.load(std::sync::atomic::Ordering::Relaxed));
        reg.register(
            "retention_deleted_chunks",
            "Chunks deleted by retention",
            deleted,
        );

        let delivered = Family::<GroupLabels, Counter>::default();
        let failing = Family::<GroupLabels, Gauge>::default();
        for s in subscriptions {
            let labels = GroupLabels {
                category: s.spec.category.clone(),
                consumer: s.spec.group.clone(),
            };
            delivered
                .get_or_create(&labels)
                .inc_by(s.progress.delivered_bytes);
            failing
                .get_or_create(&labels)
                .set(gauge_value(s.progress.failures));
        }
        reg.register(
            "subscription_delivered_bytes",
            "Bytes a push subscription delivered (2xx)",
            delivered,
        );
        reg.register(
            "subscription_failures",
            "Consecutive failed deliveries of a push subscription",
            failing,
        );
        if let Some(cluster) = cluster {
            register_replication(&mut reg, cluster);
        }
        if let Some(t) = tiering {
            register_tiering(&mut reg, t);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

fn register_replication(reg: &mut Registry, cluster: &Cluster) {
    let up = Family::<PeerLabels, Gauge>::default();
    let lag_bytes = Family::<PeerLabels, Gauge>::default();
    let lag_seconds = Family::<PeerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let copied = Family::<PeerLabels, Counter>::default();
    let held = Family::<PeerLabels, Gauge>::default();
    let summary = cluster.progress.summary();
    for (peer, link) in cluster.links() {
        let l = PeerLabels { peer: peer.clone() };
        up.get_or_create(&l).set(i64::from(link.up));
        lag_bytes.get_or_create(&l).set(gauge_value(link.lag_bytes));
        lag_seconds.get_or_create(&l).set(link.lag_seconds());
        copied.get_or_create(&l).inc_by(link.copied_bytes);
        let (_, written, _) = summary.get(&peer).copied().unwrap_or_default();
        held.get_or_create(&l).set(gauge_value(written));
    }
    reg.register(
        "peer_up",
        "1 while this server's replication poll of the peer is answered",
        up,
    );
    reg.register(
        "replication_lag_bytes",
        "Bytes a peer has published that this server has not copied yet",
        lag_bytes,
    );
    reg.register(
        "replication_lag_seconds",
        "How long this server has been behind the peer (0 when caught up)",
        lag_seconds,
    );
    reg.register(
        "replication_copied_bytes",
        "Bytes copied from the peer since start",
        copied,
    );
    reg.register(
        "replica_held_bytes",
        "Bytes of this server's chunks the peer reported holding",
        held,
    );
    let pending: Gauge = Gauge::default();
    pending.set(gauge_value(cluster.pending_acks().len() as u64));
    reg.register(
        "pending_forwarded_acks",
        "Acks of peers' chunks waiting for their owner to be reachable",
        pending,
    );
}

fn register_tiering(reg: &mut Registry, t: &Tiering) {
    use std::sync::atomic::Ordering::Relaxed;
    let (n, bytes) = t.totals();
    let gauge = |v: u64| {
        let g: Gauge = Gauge::default();
        g.set(gauge_value(v));
        g
    };
    let counter = |v: u64| {
        let c: Counter = Counter::default();
        c.inc_by(v);
        c
    };
    let c = &t.counters;
    reg.register(
        "tiered_chunks",
        "Chunks held in the object store only",
        gauge(n),
    );
    reg.register(
        "tiered_bytes",
        "Chunk bytes held in the object store only",
        gauge(bytes),
    );
    reg.register(
        "tier_uploads",
        "Chunks uploaded, verified and evicted since start",
        counter(c.uploads.load(Relaxed)),
    );
    reg.register(
        "tier_uploaded_bytes",
        "Chunk bytes tiered since start",
        counter(c.uploaded_bytes.load(Relaxed)),
    );
    reg.register(
        "tier_object_bytes",
        "Object bytes (compressed, encrypted) written since start",
        counter(c.object_bytes.load(Relaxed)),
    );
    reg.register(
        "tier_upload_failures",
        "Failed upload attempts (retried with backoff)",
        counter(c.upload_failures.load(Relaxed)),
    );
    reg.register(
        "tier_read_errors",
        "Reads of tiered chunks that failed (store unreachable, corrupt object, wrong key)",
        counter(c.read_errors.load(Relaxed)),
    );
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
