//! Config hot reload: the `--config` TOML file is watched (`notify`, on its
//! directory, so editors that replace the file are seen too); after each
//! change (debounced) it is read and validated again, merged under the same
//! flags and environment as at start (they still win), and:
//!
//! - applied live: `peers` (added, removed or moved peers; a cluster
//!   stays a cluster), `token`, `retention`, `retention_hours`,
//!   `retention_bytes`, `tier_after`, `local_bytes_budget` (when tiering is
//!   on), `log_level`;
//! - reported as needing a restart (the running value is kept): every other
//!   setting, e.g. `listen`, `data_dir`, `name`, chunk sizes, TLS files,
//!   S3 and key settings, and peers of a single node (or none left);
//! - an invalid edit is refused as a whole with one log line naming the
//!   problem, and the running config stays as it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, RawSettings, RetentionConfig, Token};

/// How long the file must stay quiet after a change before it is read.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Applies a `log_level` filter to the running log subscriber.
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The settings that change while the server runs; read at each use.
#[derive(Debug)]
pub struct Live {
    token: RwLock<Option<Token>>,
    retention: watch::Sender<RetentionConfig>,
    tier_thresholds: watch::Sender<TierThresholds>,
}

/// When tiering uploads (see [`crate::config::TierConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierThresholds {
    /// Tier own sealed chunks older than this.
    pub tier_after: Option<Duration>,
    /// Tier the oldest own sealed chunks while local bytes exceed this.
    pub local_bytes_budget: Option<u64>,
}

impl TierThresholds {
    /// The thresholds a tiering config starts with.
    #[must_use]
    pub fn of(tier: &crate::config::TierConfig) -> Self {
        Self {
            tier_after: tier.tier_after,
            local_bytes_budget: tier.local_bytes_budget,
        }
    }
}

impl Live {
    /// The live settings as configured at start.
    #[must_use]
    pub fn new(config: &Config) -> Self {
        Self {
            token: RwLock::new(config.token.clone()),
            retention: watch::Sender::new(config.retention.clone()),
            tier_thresholds: watch::Sender::new(thresholds(config)),
        }
    }

    /// Calls `f` with the current bearer token (None = no auth).
    pub fn with_token<R>(&self, f: impl FnOnce(Option<&Token>) -> R) -> R {
        f(self.token.read().as_ref())
    }

    /// The current retention settings.
    #[must_use]
    pub fn retention(&self) -> RetentionConfig {
        self.retention.borrow().clone()
    }

    /// Follows the retention settings.
    #[must_use]
    pub fn subscribe_retention(&self) -> watch::Receiver<RetentionConfig> {
        self.retention.subscribe()
    }

    /// Follows the tiering thresholds.
    #[must_use]
    pub fn subscribe_tier_thresholds(&self) -> watch::Receiver<TierThresholds> {
        self.tier_thresholds.subscribe()
    }
}

fn thresholds(config: &Config) -> TierThresholds {
    config
        .tier
        .as_ref()
        .map_or_else(TierThresholds::default, TierThresholds::of)
}

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Settings whose new value is in effect now.
    pub applied: Vec<&'static str>,
    /// Settings that changed in the file but need a restart.
    pub need_restart: Vec<&'static str>,
}

/// Re-reads the config file and applies what can change live.
pub struct Reloader {
    /// Flags and environment as given at start (the file not merged).
    base: RawSettings,
    running: Mutex<Config>,
    live: Arc<Live>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    log: Option<LogReload>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader for a server started from `base` (flags + environment)
    /// with `running` as its validated config.
    #[must_use]
    pub fn new(
        base: RawSettings,
        running: Config,
        live: Arc<Live>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
        log: Option<LogReload>,
    ) -> Self {
        Self {
            base,
            running: Mutex::new(running),
            live,
            cluster,
            log,
        }
    }

    /// The config file, if the server was started with one.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.base.config.as_deref()
    }

    /// Reads the file again and applies it.
    ///
    /// # Errors
    /// The file is unreadable or invalid; nothing was changed then.
    pub fn reload(&self) -> Result<ReloadOutcome, ConfigError> {
        let new = self.base.clone().merge_file()?.validate()?;
        let mut running = self.running.lock();
        let mut out = ReloadOutcome::default();
        let old = &*running;
        let restart_only: [(&'static str, bool); 11] = [
            ("listen", old.listen != new.listen),
            ("data_dir", old.data_dir != new.data_dir),
            ("name", old.name != new.name),
            (
                "peers (to or from a single node)",
                old.peers.is_empty() != new.peers.is_empty(),
            ),
            ("storage settings", old.storage != new.storage),
            ("message and batch limits", old.limits != new.limits),
            (
                "replication_timeout",
                old.replication_timeout != new.replication_timeout,
            ),
            ("tls_cert/tls_key", old.tls != new.tls),
            ("tls_ca", old.tls_ca != new.tls_ca),
            ("tiering on/off", old.tier.is_some() != new.tier.is_some()),
            (
                "tier store and keys",
                match (&old.tier, &new.tier) {
                    (Some(a), Some(b)) => !a.same_store_and_keys(b),
                    _ => false,
                },
            ),
        ];
        out.need_restart = restart_only
            .into_iter()
            .filter_map(|(k, changed)| changed.then_some(k))
            .collect();
        // First the one step that can still fail, so a failure changes
        // nothing (the filter itself was checked by validate()).
        if old.log_level != new.log_level {
            match &self.log {
                Some(apply) => {
                    apply(&new.log_level).map_err(|why| ConfigError::Invalid {
                        key: "log_level",
                        value: new.log_level.clone(),
                        why,
                    })?;
                    out.applied.push("log_level");
                }
                None => out.need_restart.push("log_level"),
            }
        }
        if old.token != new.token {
            *self.live.token.write() = new.token.clone();
            if let Some(c) = &self.cluster {
                c.peer_auth().set(new.token.as_ref());
            }
            out.applied.push("token");
        }
        if old.peers != new.peers && !old.peers.is_empty() && !new.peers.is_empty() {
            if let Some(c) = &self.cluster {
                c.set_peers(new.peers.clone());
                out.applied.push("peers");
            }
        }
        if old.retention != new.retention {
            self.live.retention.send_replace(new.retention.clone());
            out.applied.push("retention");
        }
        let (t_old, t_new) = (thresholds(old), thresholds(&new));
        if old.tier.is_some() && new.tier.is_some() && t_old != t_new {
            self.live.tier_thresholds.send_replace(t_new);
            out.applied.push("tier_after/local_bytes_budget");
        }
        // Keep restart-only values as they run; take the live ones.
        if !running.peers.is_empty() && !new.peers.is_empty() && self.cluster.is_some() {
            running.peers = new.peers;
        }
        running.token = new.token;
        running.retention = new.retention;
        running.log_level = new.log_level;
        if let (Some(r), Some(n)) = (running.tier.as_mut(), new.tier.as_ref()) {
            r.tier_after = n.tier_after;
            r.local_bytes_budget = n.local_bytes_budget;
        }
        Ok(out)
    }
}

/// Watches the config file until `token` is cancelled and reloads after
/// every change. Returns at once when there is no config file.
pub async fn watch_file(reloader: Arc<Reloader>, token: CancellationToken) {
    let Some(path) = reloader.path().map(Path::to_path_buf) else {
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = start_watcher(&path, tx);
    let _watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot watch the config file; edits need a restart");
            return;
        }
    };
    tracing::info!(file = %path.display(), "watching the config file for changes");
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            ev = rx.recv() => if ev.is_none() { return },
        }
        // Debounce: editors write in several steps.
        loop {
            match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                Ok(Some(())) => {}
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let r = Arc::clone(&reloader);
        match tokio::task::spawn_blocking(move || r.reload()).await {
            Ok(Ok(out)) => {
                if !out.applied.is_empty() {
                    tracing::info!(file = %path.display(), applied = ?out.applied, "config reloaded");
                }
                for key in &out.need_restart {
                    tracing::warn!(file = %path.display(), setting = key, "changed in the config file, but only takes effect after a restart; the running value is kept");
                }
                if out.applied.is_empty() && out.need_restart.is_empty() {
                    tracing::debug!(file = %path.display(), "config file changed; nothing to apply");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(file = %path.display(), error = %e, "config file edit refused; the running config is kept");
            }
            Err(e) => tracing::error!(error = %e, "config reload failed"),
        }
    }
}

fn start_watcher(
    path: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(std::ffi::OsStr::to_os_string);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        if ev.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
