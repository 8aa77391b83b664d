//! Push subscriptions (webhooks): the broker POSTs a category's messages to
//! an HTTP endpoint in order, one batch in flight, and advances a consumer
//! group's position on every `2xx`; anything else is retried with
//! exponential backoff, never skipped.
//!
//! Subscriptions are kept in `<data_dir>/.chunkbus/subscriptions.json`
//! (rewritten atomically on every change) and restarted with the server;
//! their progress is the group's durable position, so delivery resumes where
//! the last acknowledged batch ended.
//!
//! Receivers are checked against the [`WebhookPolicy`] when a subscription
//! is added (the URL's host) and at every connect (each resolved address).
//!
//! - `spec.rs`: the registered [`Spec`] and its validation.
//! - [`policy`]: which hosts and addresses may be receivers.
//! - [`connect`]: resolve, check, connect.
//! - `deliver.rs`: one subscription's delivery loop.

pub mod connect;
mod deliver;
pub mod policy;
mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::fsutil;
use crate::groups::GroupStore;
use crate::names::{Category, GroupName};
use crate::storage::Storage;
pub use deliver::MAX_ANSWER_BYTES;
pub use policy::{Denied, WebhookPolicy};
pub use spec::{
    InvalidSpec, Spec, StartAt, Valid, DEFAULT_MAX_BATCH, DEFAULT_TIMEOUT_MS, MAX_BATCH_LIMIT,
    MAX_HEADERS, MAX_TIMEOUT_MS,
};

/// File (in the state dir) holding every subscription.
pub const FILE: &str = "subscriptions.json";

/// Delivery counters of one subscription.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Progress {
    /// Batches the receiver accepted.
    pub delivered_batches: u64,
    /// Bytes the receiver accepted.
    pub delivered_bytes: u64,
    /// Failed attempts since the last success.
    pub failures: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// A running subscription.
#[derive(Debug)]
struct Running {
    valid: Valid,
    progress: Arc<Mutex<Progress>>,
    stop: CancellationToken,
}

/// One entry of `GET /subscriptions`.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// The registered spec, header values redacted.
    #[serde(flatten)]
    pub spec: Spec,
    /// Delivery counters.
    #[serde(flatten)]
    pub progress: Progress,
}

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    /// Invalid spec.
    #[error(transparent)]
    Invalid(#[from] InvalidSpec),
    /// The receiver's host is refused by the webhook policy.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// A subscription for this (category, group) exists.
    #[error(
        "a subscription for category {category} and group {group} already exists; delete it first"
    )]
    Exists {
        /// Category.
        category: String,
        /// Group.
        group: String,
    },
    /// No such subscription.
    #[error("no subscription for category {category} and group {group}")]
    Unknown {
        /// Category.
        category: String,
        /// Group.
        group: String,
    },
    /// The registry could not be saved or loaded.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::DomainError for SubscriptionError {
    /// An invalid spec is a `BadRequest` (a malformed receiver host too),
    /// a receiver the policy refuses `Forbidden`, a duplicate a `Conflict`,
    /// an unknown subscription `NotFound`, a registry I/O failure
    /// `Internal`.
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::Invalid(_) | Self::Denied(Denied::BadName { .. }) => ErrorKind::BadRequest,
            Self::Denied(_) => ErrorKind::Forbidden,
            Self::Exists { .. } => ErrorKind::Conflict,
            Self::Unknown { .. } => ErrorKind::NotFound,
            Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// Every subscription of this server, with its delivery task.
#[derive(Debug)]
pub struct Subscriptions {
    path: PathBuf,
    storage: Arc<Storage>,
    tiering: Option<Arc<crate::tier::Tiering>>,
    groups: Arc<GroupStore>,
    shutdown: CancellationToken,
    policy: Arc<WebhookPolicy>,
    running: tokio::sync::Mutex<BTreeMap<(Category, GroupName), Running>>,
    tasks: tokio_util::task::TaskTracker,
}

impl Subscriptions {
    /// Loads `subscriptions.json` and starts delivering each subscription.
    /// Stored subscriptions are not re-checked against `policy` here (one
    /// the policy now refuses keeps its registration and position): every
    /// connect is, so nothing reaches a refused receiver.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub async fn start(
        state_dir: &Path,
        storage: Arc<Storage>,
        tiering: Option<Arc<crate::tier::Tiering>>,
        groups: Arc<GroupStore>,
        shutdown: CancellationToken,
        policy: WebhookPolicy,
    ) -> Result<Self, SubscriptionError> {
        let path = state_dir.join(FILE);
        let specs: Vec<Spec> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SubscriptionError::Io {
                op: "parse",
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(SubscriptionError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        let subs = Self {
            path,
            storage,
            tiering,
            groups,
            shutdown,
            policy: Arc::new(policy),
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            tasks: tokio_util::task::TaskTracker::new(),
        };
        {
            let mut running = subs.running.lock().await;
            for spec in specs {
                match spec.clone().validate() {
                    Ok(valid) => {
                        let key = (valid.category.clone(), valid.group.clone());
                        let r = subs.launch(valid);
                        running.insert(key, r);
                    }
                    Err(e) => {
                        let why = crate::error_chain(&e);
                        tracing::error!(?spec, %why, "ignoring an invalid stored subscription");
                    }
                }
            }
            if !running.is_empty() {
                tracing::info!(count = running.len(), "push subscriptions resumed");
            }
        }
        Ok(subs)
    }

    /// Registers and starts a subscription, durably.
    ///
    /// # Errors
    /// Invalid spec, a receiver host the webhook policy refuses (checked
    /// without resolving it), an existing (category, group) subscription,
    /// or the registry could not be saved (then nothing changed).
    pub async fn add(&self, spec: Spec) -> Result<(), SubscriptionError> {
        let valid = spec.validate()?;
        self.policy
            .check_host(valid.url.host().unwrap_or_default())?;
        let key = (valid.category.clone(), valid.group.clone());
        let mut running = self.running.lock().await;
        if running.contains_key(&key) {
            return Err(SubscriptionError::Exists {
                category: key.0.to_string(),
                group: key.1.to_string(),
            });
        }
        let mut specs: Vec<Spec> = running.values().map(|r| r.valid.spec.clone()).collect();
        specs.push(valid.spec.clone());
        self.save(&specs).await?;
        tracing::info!(category = %key.0, group = %key.1, url = %valid.spec.url, "push subscription added");
        let r = self.launch(valid);
        running.insert(key, r);
        Ok(())
    }

    /// Stops and removes a subscription (its group's positions stay).
    ///
    /// # Errors
    /// Unknown subscription, or the registry could not be saved.
    pub async fn remove(
        &self,
        category: &Category,
        group: &GroupName,
    ) -> Result<(), SubscriptionError> {
        let mut running = self.running.lock().await;
        let key = (category.clone(), group.clone());
        if !running.contains_key(&key) {
            return Err(SubscriptionError::Unknown {
                category: category.to_string(),
                group: group.to_string(),
            });
        }
        let specs: Vec<Spec> = running
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, r)| r.valid.spec.clone())
            .collect();
        self.save(&specs).await?;
        if let Some(r) = running.remove(&key) {
            r.stop.cancel();
        }
        tracing::info!(%category, %group, "push subscription removed");
        Ok(())
    }

    /// Every subscription with its progress (header values redacted).
    pub async fn list(&self) -> Vec<Status> {
        self.running
            .lock()
            .await
            .values()
            .map(|r| {
                let mut spec = r.valid.spec.clone();
                for v in spec.headers.values_mut() {
                    *v = "<redacted>".to_owned();
                }
                Status {
                    spec,
                    progress: r.progress.lock().clone(),
                }
            })
            .collect()
    }

    /// Stops every delivery task and waits for them.
    pub async fn stop(&self) {
        for r in self.running.lock().await.values() {
            r.stop.cancel();
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn launch(&self, valid: Valid) -> Running {
        let stop = self.shutdown.child_token();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let deliverer = deliver::Deliverer::new(
            valid.clone(),
            Arc::clone(&self.storage),
            self.tiering.clone(),
            Arc::clone(&self.groups),
            Arc::clone(&progress),
            stop.clone(),
            Arc::clone(&self.policy),
        );
        self.tasks.spawn(deliverer.run());
        Running {
            valid,
            progress,
            stop,
        }
    }

    async fn save(&self, specs: &[Spec]) -> Result<(), SubscriptionError> {
        let bytes = serde_json::to_vec_pretty(specs).unwrap_or_default();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || fsutil::rewrite_atomic(&path, &bytes))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| SubscriptionError::Io {
                op: "save",
                path: self.path.clone(),
                source,
            })
    }
}
