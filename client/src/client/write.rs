//! `/write` of [`Client`]: plain and idempotent writes, to the active
//! server or to one given server, and probes for a tagged batch.
//!
//! Never retries: deciding what is safe to resend is the producer's job.

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;

use super::transport::enc;
use super::{Client, ProducerTag, WriteOptions, WriteReply};
use crate::error::ClientError;

impl Client {
    /// Appends `body` (one or more messages, each ending in `\n`) to
    /// `category` atomically.
    ///
    /// # Errors
    /// [`ClientError::Status`] with 400 (bad category or body), 413 (too
    /// large), 503/507 (retryable), or a transport error.
    /// [`ClientError::is_safe_to_resend`] says whether the body certainly
    /// was not stored.
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// use chunkbus_client::WriteOptions;
    /// let reply = client.write("events", "one\ntwo\n", WriteOptions::default()).await?;
    /// println!("stored in {} at {}", reply.chunk, reply.offset);
    /// # Ok(()) }
    /// ```
    pub async fn write(
        &self,
        category: &str,
        body: impl Into<Bytes>,
        opts: WriteOptions,
    ) -> Result<WriteReply, ClientError> {
        self.write_at(None, category, body.into(), opts, None)
            .await
            .0
    }

    /// Appends `body` to `category` once, whatever repeats it: the server
    /// stores a batch tagged `tag` only if `tag.seq` is above the last
    /// sequence number it stored for `tag.producer` in this category; the
    /// same tag again is answered with the original position and
    /// [`WriteReply::duplicate`] set, a lower one is a `409`. So a write
    /// whose answer was lost may be sent again with the same tag, to the
    /// same server — or to another one that already holds a copy of the
    /// original (see docs/client.md).
    ///
    /// # Errors
    /// As [`Client::write`]; [`ClientError::Status`] 409 for a sequence
    /// number below the last stored one, 400 for producer 0.
    /// ```no_run
    /// # async fn demo(client: chunkbus_client::Client) -> Result<(), chunkbus_client::ClientError> {
    /// use chunkbus_client::{ProducerTag, WriteOptions};
    /// let tag = ProducerTag { producer: 0x5eed, seq: 1 };
    /// let first = client.write_idempotent("events", "one\n", WriteOptions::default(), tag).await?;
    /// // The answer was lost? Send it again: stored once.
    /// let again = client.write_idempotent("events", "one\n", WriteOptions::default(), tag).await?;
    /// assert_eq!((again.chunk, again.offset), (first.chunk, first.offset));
    /// # Ok(()) }
    /// ```
    pub async fn write_idempotent(
        &self,
        category: &str,
        body: impl Into<Bytes>,
        opts: WriteOptions,
        tag: ProducerTag,
    ) -> Result<WriteReply, ClientError> {
        self.write_at(None, category, body.into(), opts, Some(tag))
            .await
            .0
    }

    /// Asks server number `server` (only) whether it holds the batch
    /// tagged `tag` (`/write?…&probe=1`, empty body): its position, with
    /// [`WriteReply::duplicate`] set, or an error (`404` when it does not
    /// hold it). Stores nothing.
    pub(crate) async fn find_at(
        &self,
        server: usize,
        category: &str,
        opts: WriteOptions,
        tag: ProducerTag,
    ) -> Result<WriteReply, ClientError> {
        self.write_inner(Some(server), category, Bytes::new(), opts, Some(tag), true)
            .await
            .0
    }

    /// A write to server number `server` only (no failover), or, with
    /// `None`, to the active server with failover on connect failures;
    /// also says which server was asked last.
    pub(crate) async fn write_at(
        &self,
        server: Option<usize>,
        category: &str,
        body: Bytes,
        opts: WriteOptions,
        tag: Option<ProducerTag>,
    ) -> (Result<WriteReply, ClientError>, usize) {
        self.write_inner(server, category, body, opts, tag, false)
            .await
    }

    async fn write_inner(
        &self,
        server: Option<usize>,
        category: &str,
        body: Bytes,
        opts: WriteOptions,
        tag: Option<ProducerTag>,
        probe: bool,
    ) -> (Result<WriteReply, ClientError>, usize) {
        let mut q = format!("category={}", enc(category));
        if opts.sync {
            q.push_str("&sync=1");
        }
        if opts.min_sync_replicas > 0 {
            q.push_str(&format!("&min_sync_replicas={}", opts.min_sync_replicas));
        }
        if let Some(t) = tag {
            q.push_str(&format!("&producer={}&seq={}", t.producer, t.seq));
            if probe {
                q.push_str("&probe=1");
            }
        }
        let (result, idx) = self
            .call_from(server, Method::POST, "/write", &q, body, Duration::ZERO)
            .await;
        let result = result.and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
                url: format!("{}/write", self.bases[idx % self.bases.len()]),
                source,
            })
        });
        (result, idx)
    }
}
