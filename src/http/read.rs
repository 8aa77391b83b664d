//! `GET /read?category=C&chunk=NAME&off=O&max_size=M[&wait_ms=T]`: whole
//! messages from the chunk's mapping (zero-copy), with an optional long poll
//! that ends on new data, on seal, on timeout or at shutdown. A tiered
//! chunk is read from the object store — also when it is tiered while the
//! read runs ([`read_anywhere`]). A chunk this server does not hold (under
//! a replication factor) is read from its holders and their answer passed
//! through as it arrives (`cluster/remote.rs`); `GET /peer/read` is the
//! same read for a peer, answered from local data only.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{header, Request, Response};

use super::body::Body;
use super::error::ApiError;
use super::params::{check_wait, Query, RequestError};
use super::{ok, AppState, HttpResponse, ServiceError};
use crate::cluster::remote::{Relayed, RemoteRead};
use crate::config::MAX_READ_SIZE;
use crate::names::{Category, ChunkName, ServerName};
use crate::storage::chunk::{Chunk, ReadOutcome};
use crate::storage::Storage;
use crate::tier::Tiering;

/// Reply header of a read served from another server: which one.
pub const SERVED_BY_HEADER: &str = "chunkbus-served-by";

/// `GET /read`: from local data, or from a holder of a chunk not held here.
pub(super) async fn read(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    serve(state, req, true).await
}

/// `GET /peer/read?…&from=P`: a peer's read of a chunk it does not hold,
/// answered from local data only (never relayed again).
pub(super) async fn peer_read(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let cluster = state.cluster()?;
    let query = Query::parse(req.uri().query());
    super::peer::check_peer(cluster, &ServerName::parse(query.required("from")?)?)?;
    serve(state, req, false).await
}

async fn serve(
    state: &AppState,
    req: &Request<Incoming>,
    may_relay: bool,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let mut waited = Duration::ZERO;
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let name = query.chunk()?;
    let off = query.u64("off")?;
    let max_size = query.u64("max_size")?;
    let wait_ms = query.opt_u64("wait_ms")?.unwrap_or(0);
    if max_size > MAX_READ_SIZE {
        return Err(RequestError::MaxSizeTooLarge(max_size).into());
    }
    check_wait(wait_ms)?;
    let storage = state.storage()?;
    let local = storage.category(&category).and_then(|log| log.chunk(&name));
    let relaying = state
        .cluster
        .get()
        .filter(|c| may_relay && c.assignment.factor().is_some());
    if let Some(cluster) = relaying {
        if !local
            .as_deref()
            .is_some_and(|c| cluster.answers_locally(&category, c))
            && cluster.catalog.get(&category, &name).is_some()
            && !is_deleted_here(storage, &category, &name)
        {
            let read = RemoteRead {
                category: &category,
                chunk: &name,
                off,
                max_size,
                wait_ms,
            };
            // Shutting down ends a relayed long poll like a local one
            // (`200` empty at once).
            let relayed = tokio::select! {
                r = cluster.read_remote(read) => r?,
                () = state.shutdown.cancelled() => {
                    return Ok(ok(Bytes::new(), "application/octet-stream"));
                }
            };
            state.metrics.reads.inc();
            state.metrics.relayed_reads.inc();
            return Ok(pass_on(relayed));
        }
    }
    let chunk = local.ok_or_else(|| storage.missing_chunk(&category, &name))?;
    let tiering = state.tiering.get().map(AsRef::as_ref);
    let s = chunk.state();
    if off > s.end && !s.sealed && name.owner() != storage.server() {
        // Past what an incomplete copy holds: no data here yet (SPEC).
        return Ok(ok(Bytes::new(), "application/octet-stream"));
    }
    let outcome = read_anywhere(tiering, &category, &chunk, off, max_size).await?;
    let outcome = match outcome {
        ReadOutcome::Empty { sealed: false } if wait_ms > 0 => {
            let waiting = Instant::now();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
            let mut rx = chunk.subscribe();
            loop {
                let s = *rx.borrow_and_update();
                if s.end > off || s.sealed || s.closed {
                    break;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep_until(deadline) => break,
                    () = state.shutdown.cancelled() => break,
                }
            }
            waited = waiting.elapsed();
            read_anywhere(tiering, &category, &chunk, off, max_size).await?
        }
        other => other,
    };
    let body = match outcome {
        ReadOutcome::Data(b) => b,
        ReadOutcome::Empty { .. } => Bytes::new(),
    };
    state.metrics.reads.inc();
    state.metrics.read_bytes.inc_by(body.len() as u64);
    state
        .metrics
        .read_seconds
        .observe(started.elapsed().saturating_sub(waited).as_secs_f64());
    Ok(ok(body, "application/octet-stream"))
}

fn is_deleted_here(storage: &Storage, category: &Category, name: &ChunkName) -> bool {
    storage
        .category(category)
        .is_some_and(|log| log.is_deleted(name))
}

/// A holder's answer as this server's: its status (data, or the holder's
/// own refusal of the request), the headers a client uses, and its body
/// streamed through.
fn pass_on(relayed: Relayed) -> HttpResponse {
    let (parts, body) = relayed.response.into_parts();
    let mut resp = Response::new(Body::relayed(body));
    *resp.status_mut() = parts.status;
    for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
        if let Some(v) = parts.headers.get(&name) {
            resp.headers_mut().insert(name, v.clone());
        }
    }
    if let Some(v) = parts.headers.get(chunkbus_client::DELETED_HEADER) {
        resp.headers_mut()
            .insert(chunkbus_client::DELETED_HEADER, v.clone());
    }
    if let Ok(v) = header::HeaderValue::from_str(&relayed.holder) {
        resp.headers_mut().insert(SERVED_BY_HEADER, v);
    }
    resp
}

/// Whole messages of `chunk` from `off`, at most `max_size` bytes, from
/// wherever its bytes are: the object store for a tiered chunk, else the
/// local mapping.
///
/// The tier hand-over marks a chunk tiered *before* it removes the local
/// files (`CategoryLog::evict_tiered`), so a local read that fails because
/// the files went away meanwhile finds the chunk tiered afterwards: it is
/// read from the object store then, never answered with a `500`.
///
/// # Errors
/// The read rules' refusals (offset, boundary, `max_size`), object-store
/// failures, and local I/O errors of a chunk that is not tiered.
pub(super) async fn read_anywhere(
    tiering: Option<&Tiering>,
    category: &Category,
    chunk: &Chunk,
    off: u64,
    max_size: u64,
) -> Result<ReadOutcome, ApiError> {
    if chunk.is_tiered() {
        read_tiered(tiering, category, chunk, off, max_size).await
    } else {
        read_local_or_tiered(tiering, category, chunk, off, max_size).await
    }
}

/// The read of a chunk found local: from the mapping, or from the object
/// store when the local read failed and the chunk is tiered now.
async fn read_local_or_tiered(
    tiering: Option<&Tiering>,
    category: &Category,
    chunk: &Chunk,
    off: u64,
    max_size: u64,
) -> Result<ReadOutcome, ApiError> {
    match chunk.read(off, max_size) {
        Err(e) if chunk.is_tiered() => {
            tracing::debug!(chunk = %chunk.name(), error = %e, "chunk tiered during a local read; reading its object");
            read_tiered(tiering, category, chunk, off, max_size).await
        }
        local => Ok(local?),
    }
}

async fn read_tiered(
    tiering: Option<&Tiering>,
    category: &Category,
    chunk: &Chunk,
    off: u64,
    max_size: u64,
) -> Result<ReadOutcome, ApiError> {
    let tiering = tiering.ok_or(ServiceError::TieringOff)?;
    Ok(tiering.read(category, chunk, off, max_size).await?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::{settings, RawSettings};
    use crate::fsutil::FaultHook;
    use crate::names::ServerName;
    use crate::storage::chunk::format::BodyChecker;
    use crate::storage::Storage;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn open(dir: &std::path::Path) -> Storage {
        Storage::open(
            dir,
            ServerName::parse("node1").unwrap(),
            crate::config::StorageConfig::default(),
            FaultHook::default(),
        )
        .unwrap()
    }

    /// A reader that found the chunk local, then lost the race with the
    /// tier hand-over (files removed before it mapped them), still gets
    /// the bytes — from the object store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_that_loses_the_race_with_eviction_reads_the_object() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let category = Category::parse("c").unwrap();
        let body: Vec<u8> = (0..200)
            .flat_map(|i| format!("m-{i}\n").into_bytes())
            .collect();
        let storage = open(&data);
        let mut check = BodyChecker::new(1 << 20, 4 << 20);
        check.feed(&body).unwrap();
        let appended = storage
            .append(
                &category,
                vec![Bytes::from(body.clone())],
                check.finish().unwrap(),
            )
            .await
            .unwrap();
        let name = appended.chunk.name().clone();
        drop(appended);
        storage.close().await.unwrap();
        drop(storage);
        // Reopened: the chunk is sealed, not yet tiered, not yet mapped.
        let storage = Arc::new(open(&data));
        let chunk = storage.category(&category).unwrap().chunk(&name).unwrap();
        assert!(chunk.state().sealed && !chunk.is_tiered());

        let cfg = RawSettings::default()
            .with(&settings::TIER_AFTER, "1ms")
            .with(&settings::ENCRYPTION_KEY, KEY)
            .with(
                &settings::TIER_DIR,
                tmp.path().join("tier").display().to_string(),
            )
            .validate()
            .unwrap();
        let tiering = Arc::new(
            Tiering::open(cfg.startup.tier.clone().unwrap(), storage.state_dir()).unwrap(),
        );
        tiering.attach(&storage).unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(cfg.live.tier_thresholds);
        tiering.follow_thresholds(rx);
        let stop = CancellationToken::new();
        let run = tokio::spawn(Arc::clone(&tiering).run(Arc::clone(&storage), stop.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !chunk.is_tiered() || chunk.data_path().exists() {
            assert!(tokio::time::Instant::now() < deadline, "not tiered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The local read alone fails: the files are gone.
        assert!(chunk.read(0, 1 << 20).is_err());
        // Read as a request that passed the `is_tiered` check before the
        // hand-over: the local attempt fails and the object answers.
        let ReadOutcome::Data(got) =
            read_local_or_tiered(Some(&tiering), &category, &chunk, 0, 1 << 20)
                .await
                .unwrap()
        else {
            panic!("no data");
        };
        assert_eq!(&got[..], &body[..]);
        let ReadOutcome::Data(got) = read_anywhere(Some(&tiering), &category, &chunk, 0, 1 << 20)
            .await
            .unwrap()
        else {
            panic!("no data");
        };
        assert_eq!(&got[..], &body[..]);
        stop.cancel();
        run.await.unwrap();
    }
}
