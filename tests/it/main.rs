//! One integration-test binary (one link step): black-box tests against the
//! real `chunkbus` binary over HTTP on 127.0.0.1, plus in-process storage
//! tests that corrupt real files.
#![allow(clippy::unwrap_used, missing_docs)]

mod api;
mod client;
mod cluster;
mod crash;
mod disk_full;
mod groups;
mod harness;
mod limits;
mod pubsub;
mod recovery;
mod reload;
mod security;
mod shutdown;
mod status_page;
mod subscriptions;
mod tier;
mod tls;
