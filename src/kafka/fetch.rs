//! `Fetch`: for each partition, the records from the fetch offset as one
//! RecordBatch built from whole messages of one chunk, within
//! `partition_max_bytes` and the request's `max_bytes` (capped at 16 MiB,
//! like `GET /read`); the first record is returned even when larger
//! (KIP-74). When fewer than `min_bytes` are ready the request waits up
//! to `max_wait_ms` (at most 60 s) and is woken by the chunks' own
//! change channels — the ones `GET /read?wait_ms` waits on — or by a new
//! chunk in the category; shutdown ends the wait at once.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use tokio::task::JoinSet;

use super::error::PartitionError;
use super::locate::Locator;
use super::offset::KafkaOffset;
use super::partition::{timestamp_ms, Partition, Position};
use super::read::{self, ReadError};
use super::records::batch_of;
use super::Broker;
use crate::config::{MAX_READ_SIZE, MAX_WAIT_MS};
use crate::names::Category;
use crate::storage::chunk::ReadOutcome;
use crate::storage::StorageError;
use crate::tier::TierError;

/// How often a waiting fetch looks again for categories that do not
/// exist yet (they have no change channel to wait on).
const RECHECK: Duration = Duration::from_millis(200);

/// Answers a `Fetch` request, waiting for data as asked.
pub async fn handle(broker: &Broker, req: FetchRequest) -> FetchResponse {
    let wait = u64::try_from(req.max_wait_ms).unwrap_or(0).min(MAX_WAIT_MS);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
    let min_bytes = u64::try_from(req.min_bytes).unwrap_or(0);
    loop {
        let mut waits = JoinSet::new();
        let (resp, bytes, failed) = fetch_once(broker, &req, &mut waits).await;
        let now = tokio::time::Instant::now();
        if bytes >= min_bytes.max(1)
            || failed
            || now >= deadline
            || broker.state.shutdown.is_cancelled()
        {
            return resp;
        }
        let until = deadline.min(now + RECHECK);
        tokio::select! {
            _ = waits.join_next() => {}
            () = tokio::time::sleep_until(until) => {}
            () = broker.state.shutdown.cancelled() => {}
        }
    }
}

/// One pass over the partitions: the response, the record bytes in it,
/// whether a partition failed; `waits` gets a task per partition that
/// ends when new data may be there.
async fn fetch_once(
    broker: &Broker,
    req: &FetchRequest,
    waits: &mut JoinSet<()>,
) -> (FetchResponse, u64, bool) {
    let max = u64::try_from(req.max_bytes)
        .ok()
        .filter(|m| *m > 0)
        .map_or(MAX_READ_SIZE, |m| m.min(MAX_READ_SIZE));
    let loc = broker.locator();
    let mut used = 0u64;
    let mut failed = false;
    let mut resp = FetchResponse::default();
    for topic in &req.topics {
        let mut t = FetchableTopicResponse::default();
        t.topic = topic.topic.clone();
        for part in &topic.partitions {
            let budget = u64::try_from(part.partition_max_bytes)
                .unwrap_or(0)
                .min(max.saturating_sub(used));
            let mut p = PartitionData::default();
            p.partition_index = part.partition;
            p.preferred_read_replica = BrokerId(-1);
            let outcome = fetch_partition(
                broker,
                &loc,
                topic.topic.0.as_str(),
                part.partition,
                part.fetch_offset,
                budget,
                used == 0,
                waits,
            )
            .await;
            match outcome {
                Ok(f) => {
                    used += f.records.len() as u64;
                    p.high_watermark = f.high_watermark;
                    p.last_stable_offset = f.high_watermark;
                    p.log_start_offset = f.log_start;
                    p.records = Some(f.records);
                }
                Err(e) => {
                    failed = true;
                    tracing::debug!(topic = topic.topic.0.as_str(), partition = part.partition, error = %e.message, "kafka fetch refused");
                    p.error_code = e.code.code();
                    p.high_watermark = -1;
                    p.last_stable_offset = -1;
                    p.log_start_offset = -1;
                    p.records = Some(Bytes::new());
                }
            }
            t.partitions.push(p);
        }
        resp.responses.push(t);
    }
    broker.state.metrics.reads.inc();
    broker.state.metrics.read_bytes.inc_by(used);
    (resp, used, failed)
}

/// One partition's answer.
struct Fetched {
    records: Bytes,
    high_watermark: i64,
    log_start: i64,
}

#[allow(clippy::too_many_arguments)]
async fn fetch_partition(
    broker: &Broker,
    loc: &Locator<'_>,
    topic: &str,
    partition: i32,
    fetch_offset: i64,
    budget: u64,
    first: bool,
    waits: &mut JoinSet<()>,
) -> Result<Fetched, PartitionError> {
    let category = Category::parse(topic)
        .map_err(|e| PartitionError::new(ResponseError::InvalidTopicException, e.to_string()))?;
    let owner = broker.check_read(category.as_str(), partition)?;
    let storage = broker.storage()?;
    let part = Partition::of(storage, &category, owner);
    watch(storage, &category, &part, waits);
    let err = |e: ReadError| PartitionError::from_domain(&e);
    let hw = part.high_watermark(loc, &category).await.map_err(err)?;
    let (hw_i, start_i) = (offset_i64(hw)?, offset_i64(part.log_start())?);
    let at = KafkaOffset::from_i64(fetch_offset)
        .filter(|at| *at <= hw)
        .ok_or_else(|| {
            PartitionError::new(
                ResponseError::OffsetOutOfRange,
                format!("offset {fetch_offset} is past the high watermark {hw_i}"),
            )
        })?;
    let mut fetched = Fetched {
        records: Bytes::new(),
        high_watermark: hw_i,
        log_start: start_i,
    };
    if budget == 0 && !first {
        return Ok(fetched);
    }
    let Position::At {
        chunk,
        byte,
        offset,
    } = part.position(loc, &category, at).await.map_err(err)?
    else {
        return Ok(fetched);
    };
    let tiering = broker.state.tiering.get().map(AsRef::as_ref);
    let got = match read::read(tiering, &category, &chunk, byte, budget.max(1)).await {
        Err(e) if first && too_small(&e) => {
            read::read(tiering, &category, &chunk, byte, loc.window).await
        }
        other => other,
    };
    let messages = match got {
        Ok(ReadOutcome::Data(d)) => d,
        Ok(ReadOutcome::Empty { .. }) => return Ok(fetched),
        Err(e) if too_small(&e) => return Ok(fetched),
        Err(e) => return Err(err(e)),
    };
    let (batch, n) = batch_of(&messages, offset_i64(offset)?, timestamp_ms(&chunk))?;
    broker.positions().note(
        &category,
        chunk.name(),
        byte + messages.len() as u64,
        offset.ordinal + n as u64,
    );
    fetched.records = batch;
    Ok(fetched)
}

fn offset_i64(o: KafkaOffset) -> Result<i64, PartitionError> {
    o.to_i64().ok_or_else(|| {
        PartitionError::new(
            ResponseError::UnknownServerError,
            format!(
                "chunk {} message {} has no Kafka offset",
                o.chunk, o.ordinal
            ),
        )
    })
}

/// The read refused only because the next message exceeds the budget.
fn too_small(e: &ReadError) -> bool {
    matches!(
        e,
        ReadError::Storage(StorageError::MaxSizeTooSmall { .. })
            | ReadError::Tier(TierError::Storage(StorageError::MaxSizeTooSmall { .. }))
    )
}

/// Adds to `waits` what signals new data in this partition: a new chunk
/// in the category, or growth or sealing of its last chunk.
fn watch(
    storage: &crate::storage::Storage,
    category: &Category,
    part: &Partition,
    waits: &mut JoinSet<()>,
) {
    let Some(log) = storage.category(category) else {
        return;
    };
    let mut listing = log.subscribe_listing();
    listing.borrow_and_update();
    waits.spawn(async move {
        let _ = listing.changed().await;
    });
    if let Some(last) = part.chunks().last() {
        let mut rx = last.subscribe();
        rx.borrow_and_update();
        waits.spawn(async move {
            let _ = rx.changed().await;
        });
    }
}
