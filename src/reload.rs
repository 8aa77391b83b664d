//! Config hot reload: the `--config` TOML file is watched (`notify`, on its
//! directory, so editors that replace the file are seen too); after each
//! change (debounced) it is read and validated again, merged under the same
//! flags and environment as at start (they still win), and:
//!
//! - applied live: the settings defined with `Applies::Live` in
//!   [`crate::config::settings`] (`token`, `peer_token`, `peers`, `retention*`,
//!   `tier_after`, `local_bytes_budget`, `log_level`) — found by comparing
//!   the running and the new [`crate::config::LiveSettings`]. Two switches
//!   stay restart-only although made of live settings: a single node
//!   becoming a cluster (or the reverse), and tiering on or off;
//! - reported as needing a restart (the running value is kept): the
//!   `Applies::Restart` settings whose value changed, when the new
//!   [`crate::config::Startup`] differs from the running one;
//! - an invalid edit is refused as a whole with one log line naming the
//!   problem, and the running config stays as it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Token;
use crate::config::settings::Applies;
use crate::config::{Config, ConfigError, LiveSettings, RawSettings, RetentionConfig};
use crate::tier::TierThresholds;

/// How long the file must stay quiet after a change before it is read.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Applies a `log_level` filter to the running log subscriber.
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The settings that change while the server runs; read at each use.
#[derive(Debug)]
pub struct Live {
    token: RwLock<Option<Token>>,
    peer_token: RwLock<Option<Token>>,
    retention: watch::Sender<RetentionConfig>,
    tier_thresholds: watch::Sender<TierThresholds>,
}

impl Live {
    /// The live settings as configured at start.
    #[must_use]
    pub fn new(settings: &LiveSettings) -> Self {
        Self {
            token: RwLock::new(settings.token.clone()),
            peer_token: RwLock::new(settings.peer_token.clone()),
            retention: watch::Sender::new(settings.retention.clone()),
            tier_thresholds: watch::Sender::new(settings.tier_thresholds),
        }
    }

    /// Calls `f` with the current bearer token (None = no auth).
    pub fn with_token<R>(&self, f: impl FnOnce(Option<&Token>) -> R) -> R {
        f(self.token.read().as_ref())
    }

    /// Calls `f` with the current peer token (None: peer endpoints take
    /// the bearer token, as before `peer_token` existed).
    pub fn with_peer_token<R>(&self, f: impl FnOnce(Option<&Token>) -> R) -> R {
        f(self.peer_token.read().as_ref())
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

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Settings whose new value is in effect now.
    pub applied: Vec<&'static str>,
    /// Settings that changed in the file but need a restart, each with its
    /// section (`max_message_size (message and batch limits)`).
    pub need_restart: Vec<String>,
}

/// Why switching between a single node and a cluster needs a restart.
const CLUSTER_SWITCH: &str = "peers (to or from a single node)";
/// Why switching tiering on or off needs a restart.
const TIERING_SWITCH: &str = "tiering on/off (tier_after, local_bytes_budget)";

/// Re-reads the config file and applies what can change live.
pub struct Reloader {
    /// Flags and environment as given at start (the file not merged).
    base: RawSettings,
    /// Flags, environment and file as merged at start: what the
    /// restart-only settings still run with.
    started: RawSettings,
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
    /// A reloader for a server started from `base` (flags + environment),
    /// `started` (`base` with the file merged) and `running` (`started`
    /// validated).
    #[must_use]
    pub fn new(
        base: RawSettings,
        started: RawSettings,
        running: Config,
        live: Arc<Live>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
        log: Option<LogReload>,
    ) -> Self {
        Self {
            base,
            started,
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
        let raw = self.base.clone().merge_file()?;
        let new = raw.clone().validate()?;
        let mut running = self.running.lock();
        let mut out = ReloadOutcome::default();
        let (old, now) = (&running.startup, &new.startup);
        let cluster_kept = old.storage.cluster == now.storage.cluster;
        let tiering_kept = old.tier.is_some() == now.tier.is_some();
        if old != now {
            if !cluster_kept {
                out.need_restart.push(CLUSTER_SWITCH.to_owned());
            }
            if !tiering_kept {
                out.need_restart.push(TIERING_SWITCH.to_owned());
            }
            out.need_restart.extend(
                self.started
                    .changed(&raw)
                    .filter(|s| s.applies == Applies::Restart)
                    .map(|s| format!("{} ({})", s.key, s.section)),
            );
        }
        let (old, now) = (&running.live, &new.live);
        // First the one step that can still fail, so a failure changes
        // nothing (the filter itself was checked by validate()).
        let log_level_changed = old.log_level != now.log_level;
        if log_level_changed {
            match &self.log {
                Some(apply) => {
                    apply(&now.log_level).map_err(|why| ConfigError::Invalid {
                        key: crate::config::settings::LOG_LEVEL.key,
                        value: now.log_level.clone(),
                        why,
                    })?;
                    out.applied.push("log_level");
                }
                None => out
                    .need_restart
                    .push("log_level (pinned by CHUNKBUS_LOG)".to_owned()),
            }
        }
        let mut applied = running.live.clone();
        if old.token != now.token {
            *self.live.token.write() = now.token.clone();
            applied.token.clone_from(&now.token);
            out.applied.push("token");
        }
        if old.peer_token != now.peer_token {
            *self.live.peer_token.write() = now.peer_token.clone();
            applied.peer_token.clone_from(&now.peer_token);
            out.applied.push("peer_token");
        }
        if old.peer_credential() != now.peer_credential() {
            if let Some(c) = &self.cluster {
                c.peer_auth().set(now.peer_credential());
            }
        }
        if old.peers != now.peers && cluster_kept {
            if let Some(c) = &self.cluster {
                c.set_peers(now.peers.clone());
                applied.peers.clone_from(&now.peers);
                out.applied.push("peers");
            }
        }
        if old.retention != now.retention {
            self.live.retention.send_replace(now.retention.clone());
            applied.retention = now.retention.clone();
            out.applied.push("retention");
        }
        if old.tier_thresholds != now.tier_thresholds
            && tiering_kept
            && now.tier_thresholds != TierThresholds::default()
        {
            self.live.tier_thresholds.send_replace(now.tier_thresholds);
            applied.tier_thresholds = now.tier_thresholds;
            out.applied.push("tier_after/local_bytes_budget");
        }
        // Pinned (no reload handle): reported once, not at every edit.
        if log_level_changed {
            applied.log_level.clone_from(&now.log_level);
        }
        running.live = applied;
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
                for setting in &out.need_restart {
                    tracing::warn!(file = %path.display(), %setting, "changed in the config file, but only takes effect after a restart; the running value is kept");
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
