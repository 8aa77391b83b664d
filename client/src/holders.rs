//! Direct reads from a chunk's holders: a cluster server's `listChunks`
//! names the servers holding each chunk (`holders`, owner first); the
//! [`Consumer`](crate::Consumer) reads the chunk from one of them instead
//! of through the server it is connected to (which would relay it), and
//! fails over between them. Their addresses come from `GET /peers`, looked
//! up once and again when a holder is unknown.
//!
//! Never decides what to read next (that is `consumer/reader.rs`): it only picks
//! where a read goes.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::ClientError;

/// How often unknown holder names may refresh the server list.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Server names → addresses, as `GET /peers` last said.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    urls: BTreeMap<String, String>,
    /// When the list was last asked for (None: never).
    asked: Option<Instant>,
    /// The server answered no usable list (a single node or an old
    /// server): read through the connected server only.
    unusable: bool,
}

/// One chunk read: where it is, what to read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkRead<'a> {
    pub(crate) category: &'a str,
    pub(crate) chunk: &'a str,
    pub(crate) off: u64,
    pub(crate) max_size: u64,
    pub(crate) wait: Option<Duration>,
    /// A sealed chunk may be read from any holder: start at a different
    /// one per chunk (`spread`), spreading the load. An open chunk is
    /// read from the owner first (it has the newest bytes).
    pub(crate) sealed: bool,
    pub(crate) spread: u64,
}

impl Directory {
    /// The addresses of `holders` that are known, refreshing the list
    /// (rate-limited) when one is missing.
    async fn addresses(&self, client: &Client, holders: &[String]) -> Vec<String> {
        let mut st = self.state.lock().await;
        if st.unusable {
            return Vec::new();
        }
        let missing = holders.iter().any(|h| !st.urls.contains_key(h));
        if missing && st.asked.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
            st.asked = Some(Instant::now());
            match client.cluster_servers().await {
                Ok(urls) => st.urls = urls,
                Err(ClientError::Status { status: 404, .. } | ClientError::Decode { .. }) => {
                    st.unusable = true;
                }
                Err(e) => tracing::debug!(error = %e, "could not list the cluster's servers"),
            }
        }
        holders
            .iter()
            .filter_map(|h| st.urls.get(h).cloned())
            .collect()
    }

    /// Reads from the chunk's holders in turn; a holder that cannot be
    /// reached, answers `5xx` or does not have the chunk (a plain `404`)
    /// is skipped. When none answers, the read goes through `client`'s own
    /// servers (which relay it from a holder). A definitive answer — data,
    /// a deleted chunk, a refused request — is returned at once.
    pub(crate) async fn read(
        &self,
        client: &Client,
        holders: &[String],
        r: ChunkRead<'_>,
    ) -> Result<Bytes, ClientError> {
        let mut urls = if holders.is_empty() {
            Vec::new()
        } else {
            self.addresses(client, holders).await
        };
        if r.sealed && !urls.is_empty() {
            let n = urls.len() as u64;
            urls.rotate_left(usize::try_from(r.spread % n).unwrap_or(0));
        }
        for url in &urls {
            match client
                .read_at(url, r.category, r.chunk, r.off, r.max_size, r.wait)
                .await
            {
                Ok(b) => return Ok(b),
                Err(e @ ClientError::ChunkDeleted { .. }) => return Err(e),
                Err(e) if e.is_retryable() || e.status() == Some(404) => {
                    tracing::debug!(holder = %url, chunk = r.chunk, error = %e, "holder did not serve the read; trying the next");
                }
                Err(e) => return Err(e),
            }
        }
        client
            .read(r.category, r.chunk, r.off, r.max_size, r.wait)
            .await
    }
}
