//! Listing, health and status endpoints: `/listChunks`, `/listCategories`,
//! `/healthz`, `/metrics`, `/tier` and the status page `/`.

use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;

use super::error::ApiError;
use super::params::{check_wait, Query};
use super::{json, ok, ok_line, AppState, HttpResponse};
use crate::names::ChunkName;
use crate::storage::ChunkInfo;

/// `GET /listChunks?category=C[&after=NAME&wait_ms=T]`. The optional pair
/// is a chunkbus extension for consumers that have finished `NAME`: if the
/// listing holds no chunk of NAME's owner with a higher index, wait up to T
/// ms for one to appear (or for shutdown), then list.
pub(super) async fn list_chunks(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let after = query.opt_chunk("after")?;
    let wait_ms = check_wait(query.opt_u64("wait_ms")?.unwrap_or(0))?;
    let storage = state.storage()?;
    let Some(log) = storage.category(&category) else {
        return json(&Vec::<ChunkInfo>::new());
    };
    let Some(after) = after.filter(|_| wait_ms > 0) else {
        return json(&log.list());
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut rx = log.subscribe_listing();
    loop {
        rx.borrow_and_update();
        let list = log.list();
        let newer = list.iter().any(|c| {
            ChunkName::parse(&c.name)
                .is_ok_and(|n| n.owner() == after.owner() && n.index() > after.index())
        });
        if newer {
            return json(&list);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return json(&list) },
            () = tokio::time::sleep_until(deadline) => return json(&list),
            () = state.shutdown.cancelled() => return json(&list),
        }
    }
}

pub(super) fn list_categories(state: &AppState) -> Result<HttpResponse, ApiError> {
    json(&state.storage()?.category_names())
}

pub(super) fn healthz(state: &AppState) -> HttpResponse {
    match state.storage() {
        Ok(_) => ok_line(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The status page: static HTML with its script and styles inline (no
/// external assets), which reads the JSON endpoints it shows.
const STATUS_PAGE: &[u8] = include_bytes!("status.html");

/// `GET /`: the status page (holds no data; needs no token).
pub(super) fn status_page() -> HttpResponse {
    ok(Bytes::from_static(STATUS_PAGE), "text/html; charset=utf-8")
}

pub(super) async fn metrics(state: &AppState) -> Result<HttpResponse, ApiError> {
    let storage = state.storage()?;
    let groups = state.groups()?;
    let subs = state.subscriptions()?.list().await;
    let text = state.metrics.render(
        storage,
        groups,
        &subs,
        state.cluster.get().map(AsRef::as_ref),
        state.tiering.get().map(AsRef::as_ref),
    );
    Ok(ok(
        Bytes::from(text),
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    ))
}

#[derive(serde::Serialize)]
struct TierStatus {
    enabled: bool,
    store: Option<String>,
    tiered_chunks: u64,
    tiered_bytes: u64,
    uploads: u64,
    upload_failures: u64,
    read_errors: u64,
    chunks: Vec<crate::tier::ChunkTierState>,
}

/// `GET /tier`: what is local, uploading, failing and tiered.
pub(super) fn tier_status(state: &AppState) -> Result<HttpResponse, ApiError> {
    let storage = state.storage()?;
    let Some(t) = state.tiering.get() else {
        return json(&TierStatus {
            enabled: false,
            store: None,
            tiered_chunks: 0,
            tiered_bytes: 0,
            uploads: 0,
            upload_failures: 0,
            read_errors: 0,
            chunks: Vec::new(),
        });
    };
    let (n, bytes) = t.totals();
    let c = &t.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    json(&TierStatus {
        enabled: true,
        store: Some(t.describe_store()),
        tiered_chunks: n,
        tiered_bytes: bytes,
        uploads: load(&c.uploads),
        upload_failures: load(&c.upload_failures),
        read_errors: load(&c.read_errors),
        chunks: t.status(storage),
    })
}
