//! chunkbus: a persistent event bus. Producers POST newline-delimited
//! messages over HTTP; each server appends them to memory-mapped chunk files
//! it owns; consumers read whole messages by (chunk, offset) and ack.
//!
//! # Layout
//! - [`config`]: flags, environment and TOML file → validated [`config::Config`].
//! - [`names`]: validated category, server and chunk names (the only way a
//!   user string becomes part of a path).
//! - [`error`]: [`error::ErrorKind`], the neutral classification every
//!   domain error gives itself, and [`error_chain`].
//! - [`fsutil`]: fdatasync/fsync/preallocate/atomic-rewrite helpers.
//! - [`storage`]: chunk files, sidecar index, recovery, group commit.
//! - [`http`]: routing, parameter validation, handlers, error mapping.
//! - [`cluster`]: peers, pull replication, `min_sync_replicas`, crash pull-back.
//! - [`tier`]: cold sealed chunks to an encrypted, compressed object store.
//! - [`server`]: lifecycle (bind, recover, serve, graceful shutdown).
// `unsafe_code = "deny"`, `missing_docs = "warn"` and `clippy::unwrap_used =
// "deny"` come from `[workspace.lints]`; unit tests may unwrap.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod groups;
pub mod http;
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
