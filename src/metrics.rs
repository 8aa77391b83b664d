//! `GET /metrics` in Prometheus text format (`prometheus-client`): request
//! counters kept as they happen, and state gauges (chunks, consumer lag,
//! retention, push delivery) computed at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::groups::GroupStore;
use crate::names::Category;
use crate::storage::Storage;
use crate::subscriptions::Status;

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
struct GroupLabels {
    category: String,
    consumer: String,
}

/// Counters updated by the request handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Successful `/write` requests.
    pub writes: Counter,
    /// Bytes stored by them.
    pub write_bytes: Counter,
    /// Successful `/read` requests.
    pub reads: Counter,
    /// Bytes returned by them.
    pub read_bytes: Counter,
    /// Error responses by status.
    pub errors: Family<StatusLabel, Counter>,
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(
        &self,
        storage: &Storage,
        groups: &GroupStore,
        subscriptions: &[Status],
    ) -> String {
        let mut reg = Registry::with_prefix("chunkbus");
        reg.register("writes", "Successful /write requests", self.writes.clone());
        reg.register(
            "write_bytes",
            "Bytes stored by /write",
            self.write_bytes.clone(),
        );
        reg.register("reads", "Successful /read requests", self.reads.clone());
        reg.register(
            "read_bytes",
            "Bytes returned by /read",
            self.read_bytes.clone(),
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
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
