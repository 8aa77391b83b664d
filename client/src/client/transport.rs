//! Request plumbing of [`Client`]: the active address and failover, the
//! URL and query encoding, one request to one server bounded by the
//! request timeout (with the `Authorization` header, `https://` only with
//! CA certificates), and answers turned into [`ClientError`]s.
//!
//! Never knows an endpoint's parameters or answer format (beyond JSON):
//! the endpoint methods build those.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};

use super::{Client, DELETED_HEADER, WRITTEN_HEADER};
use crate::error::ClientError;

impl Client {
    /// A clone whose active address moves on its own from now on: its
    /// [`Client::fail_over`] and connect failovers no longer move this
    /// client's requests (nor those of its other clones). Consumer readers
    /// use one, so a reader that moves to another server for a chunk not
    /// replicated yet does not take the consumer's group acks with it.
    pub(crate) fn detached(&self) -> Self {
        Self {
            active: Arc::new(AtomicUsize::new(self.active.load(Ordering::Relaxed))),
            ..self.clone()
        }
    }

    /// Moves requests to the next address (after an answer that another
    /// server may answer better, e.g. a chunk not replicated here yet).
    pub(crate) fn fail_over(&self) {
        let n = self.bases.len();
        if n > 1 {
            let cur = self.active.load(Ordering::Relaxed);
            let _ = self.active.compare_exchange(
                cur,
                (cur + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// The address requests currently go to.
    /// ```
    /// let client = chunkbus_client::Client::new("http://127.0.0.1:8080/")?;
    /// assert_eq!(client.active_server(), "http://127.0.0.1:8080");
    /// # Ok::<(), chunkbus_client::ClientError>(())
    /// ```
    #[must_use]
    pub fn active_server(&self) -> &str {
        &self.bases[self.active.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Number of server addresses.
    pub(crate) fn server_count(&self) -> usize {
        self.bases.len()
    }

    pub(super) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
        extra: Duration,
    ) -> Result<T, ClientError> {
        let bytes = self.call(method, path, query, body, extra).await?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            url: format!("{}{path}", self.active_server()),
            source,
        })
    }

    /// Sends the request to the active server; on a connect failure moves
    /// on to the next address, trying each at most once. Each attempt may
    /// take the request timeout plus `extra` (a long poll's wait).
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
        extra: Duration,
    ) -> Result<Bytes, ClientError> {
        self.call_from(None, method, path, query, body, extra)
            .await
            .0
    }

    /// [`Client::call`], or with `Some(server)` a request to that server
    /// only (no failover); also returns the index of the server asked last.
    pub(super) async fn call_from(
        &self,
        server: Option<usize>,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
        extra: Duration,
    ) -> (Result<Bytes, ClientError>, usize) {
        let n = self.bases.len();
        let (start, tries) = match server {
            Some(i) => (i % n.max(1), n.min(1)),
            None => (self.active.load(Ordering::Relaxed), n),
        };
        let mut last_err = None;
        let mut last_idx = start;
        for step in 0..tries {
            let idx = (start + step) % n;
            last_idx = idx;
            let attempt = self.call_one(
                &self.bases[idx],
                method.clone(),
                path,
                query,
                body.clone(),
                self.request_timeout.saturating_add(extra),
            );
            let attempt = crate::stats::in_span(
                attempt,
                || tracing::debug_span!("chunkbus.request", %method, server = %self.bases[idx], path),
            );
            match attempt.await {
                Err(e @ ClientError::Transport { connect: true, .. }) => {
                    last_err = Some(e);
                    // Move on only if nobody else has already.
                    let _ = self.active.compare_exchange(
                        idx,
                        (idx + 1) % self.bases.len(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                other => {
                    if server.is_none() && idx != start % n {
                        self.active.store(idx, Ordering::Relaxed);
                    }
                    return (other, idx);
                }
            }
        }
        let err = last_err.unwrap_or_else(|| ClientError::InvalidUrl {
            url: String::new(),
            why: "no server address given".to_owned(),
        });
        (Err(err), last_idx)
    }

    pub(super) async fn call_one(
        &self,
        base: &str,
        method: Method,
        path: &str,
        query: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        if !self.tls && base.starts_with("https://") {
            return Err(ClientError::Tls(format!(
                "{base} needs the CA certificates that signed its certificate (Client::with_ca_pem, CLI --ca)"
            )));
        }
        let url = if query.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{query}")
        };
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(auth) = &self.auth {
            req = req.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                connect: false,
                source: Box::new(e),
            })?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ClientError::Transport {
                    url: url.clone(),
                    connect: e.is_connect(),
                    source: Box::new(e),
                })?;
            let status = resp.status().as_u16();
            let deleted = resp
                .headers()
                .get(DELETED_HEADER)
                .is_some_and(|v| v.as_bytes() == b"true");
            let written = resp
                .headers()
                .get(WRITTEN_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<bool>().ok());
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport {
                    url: url.clone(),
                    connect: false,
                    source: Box::new(e),
                })?
                .to_bytes();
            Ok::<_, ClientError>((status, written, deleted, bytes))
        };
        let (status, written, deleted, bytes) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_elapsed| ClientError::Timeout {
                url: url.clone(),
                after: timeout,
            })??;
        if status == 200 {
            Ok(bytes)
        } else if status == 404 && deleted {
            Err(ClientError::ChunkDeleted {
                message: String::from_utf8_lossy(&bytes).trim_end().to_owned(),
            })
        } else {
            Err(ClientError::Status {
                status,
                message: String::from_utf8_lossy(&bytes).trim_end().to_owned(),
                written,
            })
        }
    }
}

pub(super) fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_clone_fails_over_alone() {
        let c = Client::with_servers(["http://127.0.0.1:1", "http://127.0.0.1:2"])
            .expect("valid addresses");
        let shared = c.clone();
        let reader = c.detached();
        reader.fail_over();
        assert_eq!(reader.active_server(), "http://127.0.0.1:2");
        assert_eq!(
            c.active_server(),
            "http://127.0.0.1:1",
            "not moved by the reader"
        );
        c.fail_over();
        assert_eq!(
            shared.active_server(),
            "http://127.0.0.1:2",
            "clones move together"
        );
        reader.fail_over();
        assert_eq!(reader.active_server(), "http://127.0.0.1:1");
    }
}
