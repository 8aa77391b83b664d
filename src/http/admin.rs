//! Listing, health and status endpoints: `/listChunks`, `/listCategories`,
//! `/healthz`, `/metrics`, `/tier` and the status page `/`.

use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;

use super::error::ApiError;
use super::params::{check_wait, Query};
use super::{json, ok, ok_line, AppState, HttpResponse};
use crate::cluster::listing::Listed;
use crate::names::ChunkName;
use crate::storage::ChunkInfo;

/// `GET /listChunks?category=C[&after=NAME&wait_ms=T]`. The optional pair
/// is a chunkbus extension for consumers that have finished `NAME`: if the
/// listing holds no chunk of NAME's owner with a higher index, wait up to T
/// ms for one to appear (or for shutdown), then list. Under a replication
/// factor the listing has every chunk of the cluster, each entry saying
/// where it is held (`cluster/listing.rs`).
pub(super) async fn list_chunks(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let after = query.opt_chunk("after")?;
    let wait_ms = check_wait(query.opt_u64("wait_ms")?.unwrap_or(0))?;
    let storage = state.storage()?;
    // Without a replication factor every server holds every chunk and
    // lists what it holds, as before (`held_here`/`holders` add nothing).
    let cluster = state
        .cluster
        .get()
        .filter(|c| c.assignment.factor().is_some());
    let log = storage.category(&category);
    let listing = || -> Listing {
        match cluster {
            Some(c) => Listing::Cluster(c.list_chunks(&category, log.as_deref())),
            None => Listing::Local(log.as_ref().map(|l| l.list()).unwrap_or_default()),
        }
    };
    if log.is_none() && cluster.is_none() {
        return json(&Vec::<ChunkInfo>::new());
    }
    let Some(after) = after.filter(|_| wait_ms > 0) else {
        return listing().reply();
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut local_rx = log.as_ref().map(|l| l.subscribe_listing());
    let mut catalog_rx = cluster.map(|c| c.catalog.subscribe());
    loop {
        if let Some(rx) = &mut local_rx {
            rx.borrow_and_update();
        }
        if let Some(rx) = &mut catalog_rx {
            rx.borrow_and_update();
        }
        let list = listing();
        let newer = list.names().any(|name| {
            ChunkName::parse(name)
                .is_ok_and(|n| n.owner() == after.owner() && n.index() > after.index())
        });
        if newer {
            return list.reply();
        }
        tokio::select! {
            ok = changed(&mut local_rx) => if !ok { return list.reply() },
            ok = changed(&mut catalog_rx) => if !ok { return list.reply() },
            () = tokio::time::sleep_until(deadline) => return list.reply(),
            () = state.shutdown.cancelled() => return list.reply(),
        }
    }
}

/// A listing: a single node's own chunks, or a cluster's with holders.
enum Listing {
    Local(Vec<ChunkInfo>),
    Cluster(Vec<Listed>),
}

impl Listing {
    fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Self::Local(l) => Box::new(l.iter().map(|c| c.name.as_str())),
            Self::Cluster(l) => Box::new(l.iter().map(|c| c.name.as_str())),
        }
    }

    fn reply(&self) -> Result<HttpResponse, ApiError> {
        match self {
            Self::Local(l) => json(l),
            Self::Cluster(l) => json(l),
        }
    }
}

/// Waits for the next change of an optional watch; never ends for none.
/// False when its sender is gone.
async fn changed(rx: &mut Option<tokio::sync::watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// `GET /listCategories`: the categories here, and under a replication
/// factor those of chunks held elsewhere too.
pub(super) fn list_categories(state: &AppState) -> Result<HttpResponse, ApiError> {
    let mut names = state.storage()?.category_names();
    if let Some(c) = state
        .cluster
        .get()
        .filter(|c| c.assignment.factor().is_some())
    {
        names.extend(c.catalog.categories().iter().map(ToString::to_string));
        names.sort();
        names.dedup();
    }
    json(&names)
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
