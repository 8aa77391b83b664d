//! chunkbus: a persistent event bus. Producers POST newline-delimited
//! messages over HTTP; each server appends them to memory-mapped chunk files
//! it owns; consumers read whole messages by (chunk, offset) and ack.
//!
//! # Layout
//! Every module is listed here (a unit test checks it).
//! - [`config`]: one definition per setting → flags, environment and TOML
//!   file → validated [`config::Config`] (`startup` + `live`).
//! - [`reload`]: hot reload of the `--config` file; the live settings.
//! - [`auth`]: the bearer token.
//! - [`names`]: validated category, server and chunk names (the only way a
//!   user string becomes part of a path).
//! - [`error`]: [`error::ErrorKind`], the neutral classification every
//!   domain error gives itself, and [`error_chain`].
//! - [`fsutil`]: fdatasync/fsync/preallocate/atomic-rewrite helpers.
//! - [`storage`]: chunk files, sidecar index, recovery, group commit,
//!   copies of peers' chunks, the change feed.
//! - [`groups`]: durable consumer-group positions.
//! - [`retention`]: deletion of sealed chunks by acks, age and size.
//! - [`subscriptions`]: push subscriptions (webhooks), ordered delivery.
//! - [`cluster`]: peers, pull replication, `min_sync_replicas`, crash pull-back.
//! - [`tier`]: cold sealed chunks to an encrypted, compressed object store.
//! - [`http`]: route table, parameter validation, handlers, error mapping.
//! - [`kafka`]: the Kafka wire-protocol listener (`--kafka-listen`).
//! - [`metrics`]: `/metrics` counters and gauges.
//! - [`tls`]: rustls configs for the listener and for peers.
//! - [`server`]: lifecycle (bind, recover, serve, graceful shutdown).
//! - [`connections`]: the open-file limit and `max_connections`.
//! - [`cli`]: the `chunkbus produce` / `consume` shell clients.
// `unsafe_code = "deny"`, `missing_docs = "warn"` and `clippy::unwrap_used =
// "deny"` come from `[workspace.lints]`; unit tests may unwrap.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod error;
pub mod fsutil;
pub mod groups;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod names;
pub mod reload;
pub mod retention;
pub mod server;
pub mod storage;
pub mod subscriptions;
pub mod tier;
pub mod tls;

pub use error::error_chain;

#[cfg(test)]
mod tests {
    /// The `# Layout` list above names every module declared here.
    #[test]
    fn layout_lists_every_module() {
        let src = include_str!("lib.rs");
        let (docs, code) = src.split_at(src.find("\npub mod ").unwrap_or(0));
        for line in code.lines() {
            if let Some(m) = line
                .strip_prefix("pub mod ")
                .and_then(|l| l.strip_suffix(';'))
            {
                assert!(
                    docs.contains(&format!("[`{m}`]")),
                    "lib.rs layout omits {m}"
                );
            }
        }
    }
}
