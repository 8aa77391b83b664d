//! Peer endpoints (`docs/peers.md`): the change feed of own chunks, byte
//! fetches with index records, the list of copies held of one owner's
//! chunks, forwarded acks; and `GET /peers`, the replication status.

use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{header, Request, Response};

use super::body::Body;
use super::error::ApiError;
use super::intake;
use super::params::{Query, RequestError};
use super::{json, ok_line, AppState, HttpResponse};
use crate::cluster::protocol::{self, ChangesReply, ChangesRequest, ChunkState, Deleted, HeldCopy};
use crate::cluster::{Cluster, ClusterError};
use crate::names::ServerName;
use crate::storage::chunk::index::{IndexFormat, Record};
use crate::storage::chunk::Chunk;
use crate::storage::{Storage, StorageError};

/// Longest changes-poll wait.
const MAX_POLL_WAIT: Duration = Duration::from_secs(60);

/// `POST /peer/changes`: records the poller's report, waits (up to
/// `wait_ms`) for a change after `since`, answers with the changed own
/// chunks and tombstones.
pub(super) async fn changes(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let cluster = state.cluster()?;
    let storage = state.peer_storage()?;
    // Bounded like every body: size, the global budget, idleness.
    let body = intake::receive(
        state,
        req.into_body(),
        intake::MAX_POLL_BODY,
        "changes poll body",
        |_| Ok::<_, ApiError>(()),
    )
    .await?;
    let poll: ChangesRequest =
        serde_json::from_slice(&body.contiguous()).map_err(RequestError::BadPoll)?;
    drop(body); // before the long poll
    let from = ServerName::parse(&poll.from)?;
    check_peer(cluster, &from)?;
    // Count only what the owner has written, of chunks that exist.
    let held = crate::cluster::held::checked(storage, cluster.me(), &poll.held);
    cluster.progress.report(from.as_str(), &held);
    // A poll of this process run (same epoch) gets what changed after
    // `since` (which may be 0: nothing happened yet); any other poll gets
    // the full state at once.
    let fresh = poll.epoch == cluster.epoch();
    let since = poll.since;
    let groups_since = poll.groups_since.filter(|_| fresh);
    let group_store = state.groups.get();
    let feed = storage.feed();
    if fresh && groups_since.is_some() && poll.wait_ms > 0 {
        let wait = Duration::from_millis(poll.wait_ms).min(MAX_POLL_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = feed.subscribe();
        let mut sync_asked = cluster.progress.subscribe_sync();
        let mut group_events = cluster.group_feed.subscribe();
        loop {
            changes.borrow_and_update();
            sync_asked.borrow_and_update();
            group_events.borrow_and_update();
            if feed.seq() != since
                || Some(cluster.group_feed.seq()) != groups_since
                || (cluster.progress.sync_wanted() && cluster.progress.has_unsynced(from.as_str()))
            {
                break;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { break },
                r = group_events.changed() => if r.is_err() { break },
                r = sync_asked.changed() => if r.is_err() { break },
                () = tokio::time::sleep_until(deadline) => break,
                () = state.shutdown.cancelled() => break,
            }
        }
    }
    // Read the sequence number before scanning: a change stamped later is
    // either seen now or announced above this number next time.
    let seq = feed.seq();
    let full = !fresh;
    let chunks = own_changes(storage, full, since);
    let deleted = feed
        .tombstones_since(full, since)
        .into_iter()
        .map(|t| Deleted {
            category: t.category.to_string(),
            chunk: t.chunk.to_string(),
        })
        .collect();
    // Groups load after crash pull-back: until then send none (and 0, so
    // the poller asks for a snapshot next time).
    let (groups_seq, groups) = match group_store {
        Some(store) => {
            let (seq, events) = cluster.group_feed.since(groups_since, store);
            (Some(seq), events)
        }
        None => (None, Vec::new()),
    };
    json(&ChangesReply {
        epoch: cluster.epoch(),
        seq,
        sync: cluster.progress.sync_wanted(),
        chunks,
        deleted,
        groups_seq,
        groups,
        kafka: cluster.kafka_address().cloned(),
    })
}

/// Refuses (`403`) a server that is not a configured peer now.
pub(super) fn check_peer(cluster: &Cluster, name: &ServerName) -> Result<(), ClusterError> {
    if cluster.is_peer(name) {
        Ok(())
    } else {
        Err(ClusterError::NotAPeer {
            from: name.to_string(),
            me: cluster.me().to_string(),
        })
    }
}

fn own_changes(storage: &Storage, full: bool, since: u64) -> Vec<ChunkState> {
    let mut out = Vec::new();
    for log in storage.logs() {
        for chunk in log.chunks() {
            if chunk.name().owner() != storage.server() {
                continue;
            }
            if !full && chunk.changed_seq() <= since {
                continue;
            }
            let s = chunk.state();
            if s.end == 0 {
                continue;
            }
            out.push(ChunkState {
                category: log.category().to_string(),
                chunk: chunk.name().to_string(),
                size: s.end,
                complete: s.sealed || s.closed,
            });
        }
    }
    out
}

/// `GET /peer/fetch?category=C&chunk=N&off=O&rec=R&max_size=M`: the index
/// records of the whole batches from `O` (record number `R`), then their
/// bytes, at most `M` bytes (at least one batch).
pub(super) async fn fetch(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    state.cluster()?;
    let storage = state.peer_storage()?;
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let name = query.chunk()?;
    let off = query.u64("off")?;
    let rec = query.u64("rec")?;
    // At least one batch; at most MAX_FETCH_SIZE, whatever is asked.
    let max_size = query.u64("max_size")?.clamp(1, protocol::MAX_FETCH_SIZE);
    // Records with producer tags only for fetchers that ask for them.
    let format = query
        .opt_u64(protocol::RECORD_LEN_PARAM)?
        .and_then(protocol::format_of_record_len)
        .unwrap_or(IndexFormat::V1);
    let chunk = storage
        .category(&category)
        .and_then(|l| l.chunk(&name))
        .ok_or_else(|| StorageError::UnknownChunk {
            category: category.to_string(),
            name: name.to_string(),
        })?;
    let s = chunk.state();
    let own = name.owner() == storage.server();
    let complete = s.sealed || (own && s.closed);
    let (records, data) = if off >= s.end {
        (Vec::new(), Bytes::new())
    } else if chunk.is_tiered() {
        state
            .tiering()?
            .fetch_batches(&category, &chunk, rec, off, max_size)
            .await?
    } else {
        match local_batches(&chunk, rec, off, max_size) {
            Ok(found) => found,
            // Tiered while read (the hand-over marks the chunk tiered
            // before removing its files): the object has the same batches.
            Err(e) if chunk.is_tiered() => {
                tracing::debug!(chunk = %name, error = %e, "chunk tiered during a peer fetch; reading its object");
                state
                    .tiering()?
                    .fetch_batches(&category, &chunk, rec, off, max_size)
                    .await?
            }
            Err(e) => return Err(e.into()),
        }
    };
    let head = protocol::encode_records(&records, format);
    let mut resp = Response::new(Body::from_parts([head, data]));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        protocol::RECORDS_HEADER,
        header::HeaderValue::from(records.len()),
    );
    h.insert(
        protocol::RECORD_LEN_HEADER,
        header::HeaderValue::from(format.record_len()),
    );
    h.insert(protocol::SIZE_HEADER, header::HeaderValue::from(s.end));
    h.insert(
        protocol::COMPLETE_HEADER,
        header::HeaderValue::from_static(if complete { "1" } else { "0" }),
    );
    Ok(resp)
}

/// The index records and bytes of a local chunk's batches from record
/// `rec` at `off` (at least one batch, at most `max_size` bytes).
fn local_batches(
    chunk: &Chunk,
    rec: u64,
    off: u64,
    max_size: u64,
) -> Result<(Vec<Record>, Bytes), StorageError> {
    let records = chunk.batch_records(rec, off, max_size)?;
    let end = records.last().map_or(off, |r| r.offset + u64::from(r.len));
    let data = chunk.raw_bytes(off, end)?;
    Ok((records, data))
}

/// `GET /peer/held?owner=NAME`: the copies of `NAME`'s chunks held here.
pub(super) fn held(state: &AppState, req: &Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let cluster = state.cluster()?;
    let storage = state.peer_storage()?;
    let query = Query::parse(req.uri().query());
    // Any server's name: the owner itself after a crash (a configured
    // peer), or one that left, whose pairs its new holders take over from
    // the copies the others keep (`cluster/rebalance.rs`).
    let owner = ServerName::parse(query.required("owner")?)?;
    let mut out = Vec::new();
    for log in storage.logs() {
        for chunk in log.chunks() {
            let s = chunk.state();
            if chunk.name().owner() == &owner && s.end > 0 {
                out.push(HeldCopy {
                    category: log.category().to_string(),
                    chunk: chunk.name().to_string(),
                    size: s.end,
                    complete: s.sealed,
                    assigned: cluster
                        .assignment
                        .holds_here(log.category().as_str(), owner.as_str()),
                });
            }
        }
    }
    json(&out)
}

/// `POST /peer/ack?category=C&chunk=N&size=S&from=P`: a chukcha ack of an
/// own chunk received by peer `P`; applied like a local ack.
pub(super) async fn ack(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let cluster = state.cluster()?;
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let name = query.chunk()?;
    let size = query.u64("size")?;
    check_peer(cluster, &ServerName::parse(query.required("from")?)?)?;
    let storage = state.storage()?;
    if name.owner() != cluster.me() {
        return Err(ClusterError::NotOwner {
            chunk: name.to_string(),
            me: cluster.me().to_string(),
        }
        .into());
    }
    if storage.feed().is_deleted(&category, &name) {
        return Ok(ok_line()); // already applied
    }
    super::ack::ack_local(state, storage, &category, &name, size).await?;
    Ok(ok_line())
}

#[derive(serde::Serialize)]
struct PeerStatus {
    name: String,
    url: String,
    /// This server's replication of the peer's chunks.
    up: bool,
    last_contact_ms: Option<u64>,
    last_error: Option<String>,
    lag_bytes: u64,
    lag_seconds: f64,
    copied_bytes: u64,
    copied_chunks: u64,
    /// What the peer reported holding of this server's chunks.
    holds_our_chunks: usize,
    holds_our_bytes: u64,
    holds_our_bytes_synced: u64,
}

#[derive(serde::Serialize)]
struct ClusterStatus {
    name: String,
    epoch: u64,
    peers: Vec<PeerStatus>,
    pending_acks: usize,
    /// Copies of each chunk including the owner's (None: every server).
    replication_factor: Option<usize>,
    /// Progress of placement changes.
    rebalance: RebalanceStatus,
}

#[derive(serde::Serialize, Default)]
struct RebalanceStatus {
    #[serde(flatten)]
    progress: crate::cluster::rebalance::ProgressReport,
    /// Bytes of assigned chunks not copied here yet (every peer).
    copy_lag_bytes: u64,
    /// The bound on catch-up copying, bytes per second (None: unbounded).
    rate_bytes_per_sec: Option<u64>,
}

/// `GET /peers`: replication state of every peer link (JSON).
pub(super) fn status(state: &AppState) -> Result<HttpResponse, ApiError> {
    let Some(cluster) = state.cluster.get() else {
        return json(&ClusterStatus {
            name: state.config.startup.name.to_string(),
            epoch: 0,
            peers: Vec::new(),
            pending_acks: 0,
            replication_factor: None,
            rebalance: RebalanceStatus::default(),
        });
    };
    let held = cluster.progress.summary();
    let links = cluster.links();
    let peers = cluster
        .peers()
        .iter()
        .map(|p| {
            let link = links
                .iter()
                .find(|(n, _)| n == p.name.as_str())
                .map(|(_, l)| l.clone())
                .unwrap_or_default();
            let (chunks, written, synced) = held.get(p.name.as_str()).copied().unwrap_or_default();
            PeerStatus {
                name: p.name.to_string(),
                url: p.url.clone(),
                up: link.up,
                last_contact_ms: link
                    .last_contact
                    .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
                last_error: link.last_error.clone(),
                lag_bytes: link.lag_bytes,
                lag_seconds: link.lag_seconds(),
                copied_bytes: link.copied_bytes,
                copied_chunks: link.copied_chunks,
                holds_our_chunks: chunks,
                holds_our_bytes: written,
                holds_our_bytes_synced: synced,
            }
        })
        .collect();
    json(&ClusterStatus {
        name: cluster.me().to_string(),
        epoch: cluster.epoch(),
        peers,
        pending_acks: cluster.pending_acks().len(),
        replication_factor: cluster.assignment.factor(),
        rebalance: RebalanceStatus {
            progress: cluster.rebalance.report(),
            copy_lag_bytes: links.iter().map(|(_, l)| l.lag_bytes).sum(),
            rate_bytes_per_sec: cluster.throttle.rate(),
        },
    })
}
