//! One integration-test binary (one link step): black-box tests against the
//! real `chunkbus` binary over HTTP on 127.0.0.1, plus in-process storage
//! tests that corrupt real files.
#![allow(clippy::unwrap_used, missing_docs)]

mod api;
mod categories;
mod client;
mod client_faults;
mod cluster;
mod crash;
mod disk_full;
mod exactly_once;
mod groups;
mod harness;
mod hostile_web;
mod idempotent;
mod kafka;
mod kafka_admin;
mod kafka_cluster;
mod kafka_idempotent;
mod kafka_wire;
mod limits;
mod peer_auth;
mod power_loss;
mod pubsub;
mod rebalance;
mod recovery;
mod reload;
mod replication_factor;
mod secrets_and_races;
mod security;
mod shutdown;
mod status_page;
mod subscriptions;
mod tier;
mod tls;
