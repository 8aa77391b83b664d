//! Startup after a crash in a cluster: before sealing its own chunks that
//! were left open, a server pulls back from its replicas any bytes of them
//! past its recovered end (and whole own chunks it lost), so no write a
//! replica confirmed (`min_sync_replicas`) is lost and no copies diverge.
//!
//! Runs before client requests are served (`/healthz` says 503 meanwhile);
//! peer endpoints already answer, so servers restarting together can pull
//! from each other. Each peer is asked until it answers or
//! `replication_timeout` passes; then the open chunks are sealed with what
//! was gathered, and writing continues in new chunks.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;

use super::fetch::{append, fetch, FetchFrom};
use super::link::{q, PeerClient};
use super::protocol::{self, HeldCopy};
use super::replicator::FETCH_MAX;
use super::{blocking, Peer, ReplicationError};
use crate::names::{Category, ChunkName, ServerName};
use crate::storage::{Storage, StorageError};

/// Pause between attempts to reach a peer that does not answer.
const RETRY: Duration = Duration::from_millis(200);

/// Pulls back own bytes from `peers`, then seals every own chunk left open.
/// Returns the number of bytes pulled back.
pub async fn pull_back(
    storage: &Arc<Storage>,
    me: &ServerName,
    peers: &[Peer],
    client: &PeerClient,
    limit: Duration,
) -> u64 {
    let open: usize = storage.logs().iter().map(|l| l.unsealed_own().len()).sum();
    if open == 0 {
        return 0; // clean shutdown: every own chunk is sealed
    }
    tracing::info!(
        open_chunks = open,
        peers = peers.len(),
        "crash recovery: asking replicas for bytes of own chunks past the recovered end"
    );
    let deadline = tokio::time::Instant::now() + limit;
    let mut pulled = 0;
    for peer in peers {
        let Some(held) = held_by(peer, me, client, deadline).await else {
            tracing::warn!(peer = %peer.name, "peer did not answer before replication_timeout; sealing without its copies");
            continue;
        };
        for copy in held {
            match pull_chunk(storage, peer, client, &copy).await {
                Ok(n) => pulled += n,
                Err(e) => {
                    tracing::warn!(peer = %peer.name, chunk = %copy.chunk, error = %crate::error_chain(&e), "could not pull back chunk bytes");
                }
            }
        }
    }
    let s = Arc::clone(storage);
    let sealed = tokio::task::spawn_blocking(move || seal_open(&s)).await;
    match sealed {
        Ok(Ok(n)) => tracing::info!(
            sealed = n,
            pulled_back_bytes = pulled,
            "crash recovery done"
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %crate::error_chain(&e), "sealing recovered chunks failed")
        }
        Err(e) => tracing::error!(error = %e, "sealing task failed"),
    }
    pulled
}

/// Asks `peer` which of `me`'s chunks it holds, retrying until `deadline`.
async fn held_by(
    peer: &Peer,
    me: &ServerName,
    client: &PeerClient,
    deadline: tokio::time::Instant,
) -> Option<Vec<HeldCopy>> {
    let url = format!(
        "{}{}?owner={}",
        peer.url,
        protocol::HELD_PATH,
        q(me.as_str())
    );
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        match client
            .json::<Vec<HeldCopy>>(
                peer.name.as_str(),
                Method::GET,
                &url,
                bytes::Bytes::new(),
                left,
            )
            .await
        {
            Ok(v) => return Some(v),
            Err(e) => tracing::debug!(peer = %peer.name, error = %e, "peer not reachable yet"),
        }
        tokio::time::sleep(RETRY.min(left)).await;
    }
}

/// Copies the bytes of one own chunk that `peer` holds beyond ours.
async fn pull_chunk(
    storage: &Arc<Storage>,
    peer: &Peer,
    client: &PeerClient,
    copy: &HeldCopy,
) -> Result<u64, ReplicationError> {
    let cat = Category::parse(&copy.category)?;
    let name = ChunkName::parse(&copy.chunk)?;
    if storage.feed().is_deleted(&cat, &name) {
        return Ok(0); // acked away here; the peer learns it from the feed
    }
    let s = Arc::clone(storage);
    let c2 = cat.clone();
    let log = blocking(move || s.category_or_create(&c2)).await?;
    if let Some(local) = log.chunk(&name) {
        let st = local.state();
        if st.end >= copy.size {
            return Ok(0);
        }
        if st.sealed {
            tracing::warn!(chunk = %name, local = st.end, peer_holds = copy.size, "a replica holds more of a sealed own chunk; keeping the sealed size");
            return Ok(0);
        }
    }
    let (l, n) = (Arc::clone(&log), name.clone());
    let mut writer = blocking(move || l.copy_writer(&n)).await?;
    let l = Arc::clone(&log);
    let index = name.index();
    blocking(move || l.reserve_indexes_below(index + 1)).await?;
    let start = writer.end();
    let from = FetchFrom {
        peer,
        category: &cat,
        chunk: &name,
        max_size: FETCH_MAX,
    };
    while writer.end() < copy.size {
        let fetched = fetch(client, from, &writer).await?;
        if fetched.records.is_empty() {
            break;
        }
        writer = append(&log, writer, fetched.records, fetched.data)
            .await
            .map_err(|failed| failed.error)?;
    }
    let got = writer.end() - start;
    if got > 0 {
        tracing::info!(peer = %peer.name, chunk = %name, from = start, to = writer.end(), "pulled back own chunk bytes from a replica");
    }
    Ok(got)
}

/// Seals every own chunk left open (pulled back or not).
fn seal_open(storage: &Storage) -> Result<usize, StorageError> {
    let mut n = 0;
    for log in storage.logs() {
        for chunk in log.unsealed_own() {
            let writer = log.copy_writer(chunk.name())?;
            log.seal_copy(writer)?;
            tracing::info!(chunk = %chunk.name(), size = chunk.state().end, "sealed own chunk left open by a crash");
            n += 1;
        }
    }
    Ok(n)
}
