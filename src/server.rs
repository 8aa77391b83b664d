//! Server lifecycle: bind, recover storage, serve, shut down in order.
//!
//! Startup order: raise the open-file limit → bind → open storage (peer
//! endpoints answer from here) → in a cluster, pull back own bytes from
//! replicas after a crash and seal → groups, subscriptions, retention,
//! replicators → serve clients. Every accepted connection passes the
//! [`ConnectionGate`] (`max_connections`) first.
//!
//! Shutdown order (SPEC): stop accepting → release long polls and refuse new
//! writes (root token) → let in-flight requests finish within 5 s → stop
//! background loops, replicators and the tier warm-up (each waited for) →
//! seal and fsync every open chunk → remove `ready.json`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::{Config, RawSettings, SHUTDOWN_GRACE};
use crate::connections::{self, Admission, ConnectionGate};
use crate::fsutil::{self, FaultHook};
use crate::groups::GroupStore;
use crate::http::{self, AppState};
use crate::reload::{LogReload, Reloader};
use crate::storage::{Storage, StorageError};
use crate::subscriptions::Subscriptions;
use crate::tier::Tiering;

/// Name of the file, in the state dir, that announces a ready server.
pub const READY_FILE: &str = "ready.json";

/// Startup or shutdown failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Opening or closing storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Writing the ready file failed.
    #[error("cannot write {}", path.display())]
    ReadyFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Loading consumer group positions failed.
    #[error(transparent)]
    Groups(#[from] crate::groups::GroupError),
    /// Loading push subscriptions failed.
    #[error(transparent)]
    Subscriptions(#[from] crate::subscriptions::SubscriptionError),
    /// Setting up tiering failed.
    #[error(transparent)]
    Tier(#[from] crate::tier::TierError),
    /// Setting up the cluster failed.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The TLS certificate, key or CA files are unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
    /// A startup task panicked.
    #[error("startup task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What `ready.json` holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ReadyInfo {
    /// The bound HTTP address.
    pub addr: SocketAddr,
    /// Server name.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// The bound Kafka listener address (`--kafka-listen`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_addr: Option<SocketAddr>,
}

/// Where a server's config came from, so edits of its `--config` file can
/// be applied while it runs (see [`crate::reload`]).
pub struct ReloadSource {
    /// Flags and environment as given at start (without the file).
    pub base: RawSettings,
    /// `base` with the file merged, as the running config was validated
    /// from.
    pub started: RawSettings,
    /// Applies a new `log_level` to the log subscriber.
    pub log: Option<LogReload>,
}

/// Runs a server until `shutdown` completes, then shuts down cleanly.
///
/// # Errors
/// Bind, recovery, or final sealing failures.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    run_with_hook(config, shutdown, FaultHook::default(), None).await
}

/// [`run`] that also applies edits of the config file while running.
///
/// # Errors
/// As [`run`].
pub async fn run_reloading(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reload: ReloadSource,
) -> Result<(), ServerError> {
    run_with_hook(config, shutdown, FaultHook::default(), Some(reload)).await
}

/// [`run`] with a fault-injection hook for sync calls (tests) and an
/// optional config reload source.
///
/// # Errors
/// As [`run`].
pub async fn run_with_hook(
    config: Config,
    shutdown: impl Future<Output = ()>,
    hook: FaultHook,
    reload: Option<ReloadSource>,
) -> Result<(), ServerError> {
    let config = Arc::new(config);
    let live = &config.live;
    // Unusable certificate files fail the start before anything is bound.
    let acceptor = match &config.startup.tls {
        Some(f) => Some(crate::tls::acceptor(&f.cert, &f.key)?),
        None => None,
    };
    let peer_tls = match &config.startup.tls_ca {
        Some(ca) => Some(crate::tls::peer_client_config(ca)?),
        None => None,
    };
    let gate = ConnectionGate::new(connection_limit(&config));
    let max_connections = gate.max();
    let listener = TcpListener::bind(config.startup.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.startup.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.startup.listen,
        source,
    })?;
    // The Kafka listener binds now too (a taken port fails the start) but
    // accepts only once storage is ready.
    let kafka_listener = match &config.startup.kafka {
        None => None,
        Some(k) => {
            let bind_err = |source| ServerError::Bind {
                addr: k.listen,
                source,
            };
            let l = TcpListener::bind(k.listen).await.map_err(bind_err)?;
            let bound = l.local_addr().map_err(bind_err)?;
            Some((l, bound))
        }
    };
    let kafka_acceptor = acceptor.clone();
    // What Metadata and FindCoordinator tell clients, also sent to peers.
    let kafka_advertised = kafka_listener.as_ref().map(|(_, bound)| {
        let advertise = config
            .startup
            .kafka
            .as_ref()
            .and_then(|k| k.advertise.as_ref());
        crate::kafka::advertised(*bound, advertise)
    });
    let token = CancellationToken::new();
    let state = Arc::new(AppState::new(Arc::clone(&config), token.clone()));
    let graceful = GracefulShutdown::new();
    let tls = acceptor.is_some();
    let accept = tokio::spawn(accept_loop(
        listener,
        acceptor,
        Arc::clone(&state),
        graceful,
        token.clone(),
        gate,
    ));
    tracing::info!(%addr, tls, name = %config.startup.name, data_dir = %config.startup.data_dir.display(), "listening; recovering storage");

    let cfg = Arc::clone(&config);
    let groups_hook = hook.clone();
    let storage = tokio::task::spawn_blocking(move || {
        Storage::open(
            &cfg.startup.data_dir,
            cfg.startup.name.clone(),
            cfg.startup.storage.clone(),
            hook,
        )
    })
    .await??;
    let storage = Arc::new(storage);
    let _ = state.peer_storage.set(Arc::clone(&storage));
    let cluster = if !config.startup.storage.cluster {
        None
    } else {
        let c = Cluster::new(
            config.startup.name.clone(),
            live.peers.clone(),
            storage.state_dir(),
            live.peer_credential(),
            peer_tls,
            config.startup.replication_factor,
            config.startup.rebalance_rate,
        )
        .map_err(|e| ServerError::Cluster(crate::error_chain(&e)))?;
        let c = Arc::new(c);
        if let Some((host, port)) = &kafka_advertised {
            c.set_kafka_address(crate::cluster::protocol::KafkaAddr {
                host: host.clone(),
                port: *port,
            });
        }
        let _ = state.cluster.set(Arc::clone(&c));
        c.recover(&storage, config.startup.replication_timeout)
            .await;
        Some(c)
    };
    let (tiering, warm_up) = match &config.startup.tier {
        None => (None, None),
        Some(tc) => {
            let (tc, sd, st) = (
                tc.clone(),
                storage.state_dir().to_path_buf(),
                Arc::clone(&storage),
            );
            let t = tokio::task::spawn_blocking(move || {
                let t = Tiering::open(tc, &sd)?;
                let n = t.attach(&st)?;
                Ok::<_, crate::tier::TierError>((t, n))
            })
            .await??;
            tracing::info!(store = %t.0.describe_store(), tiered_chunks = t.1, "tiering on");
            let t = Arc::new(t.0);
            t.follow_thresholds(state.live.subscribe_tier_thresholds());
            // Prefetching may wait on a slow store: it stops at shutdown
            // (root token) and is waited for before storage closes.
            let (warm, stop) = (Arc::clone(&t), token.child_token());
            let warm_up = tokio::spawn(async move {
                tokio::select! {
                    () = warm.warm_up() => {}
                    () = stop.cancelled() => tracing::debug!("tier warm-up cut short by shutdown"),
                }
            });
            let _ = state.tiering.set(Arc::clone(&t));
            (Some(t), Some(warm_up))
        }
    };
    let state_dir = storage.state_dir().to_path_buf();
    let groups =
        tokio::task::spawn_blocking(move || GroupStore::open(&state_dir, groups_hook)).await??;
    let groups = Arc::new(groups);
    let _ = state.groups.set(Arc::clone(&groups));
    let subscriptions = Arc::new(
        Subscriptions::start(
            storage.state_dir(),
            Arc::clone(&storage),
            tiering.clone(),
            Arc::clone(&groups),
            token.child_token(),
            config.startup.webhooks.clone(),
        )
        .await?,
    );
    let _ = state.subscriptions.set(Arc::clone(&subscriptions));
    let retention = tokio::spawn(crate::retention::run(
        Arc::clone(&storage),
        Arc::clone(&groups),
        state.live.subscribe_retention(),
        token.child_token(),
    ));
    let replication = cluster
        .as_ref()
        .map(|c| c.start(&storage, &groups, &token))
        .unwrap_or_default();
    let tierer = tiering
        .as_ref()
        .map(|t| tokio::spawn(Arc::clone(t).run(Arc::clone(&storage), token.child_token())));
    let _ = state.storage.set(Arc::clone(&storage));
    let background = tokio::spawn(Arc::clone(&storage).run_background(token.child_token()));
    let watcher = reload.map(|r| {
        let reloader = Reloader::new(
            r.base,
            r.started,
            (*config).clone(),
            Arc::clone(&state.live),
            cluster.clone(),
            r.log,
        );
        tokio::spawn(crate::reload::watch_file(
            Arc::new(reloader),
            token.child_token(),
        ))
    });

    let kafka_tasks = TaskTracker::new();
    let kafka_addr = kafka_listener.map(|(listener, bound)| {
        let (host, port) = kafka_advertised.clone().unwrap_or_default();
        let topology = crate::kafka::topology::Topology::new(
            &config.startup.name,
            config.live.peers.iter().map(|p| p.name.clone()),
            host,
            port,
        );
        let broker = Arc::new(crate::kafka::Broker::new(Arc::clone(&state), topology));
        tokio::spawn(crate::kafka::accept_loop(
            listener,
            broker,
            kafka_acceptor,
            max_connections,
            kafka_tasks.clone(),
            token.clone(),
        ));
        tracing::info!(addr = %bound, tls, "kafka listener");
        bound
    });
    let ready_path = storage.state_dir().join(READY_FILE);
    let info = ReadyInfo {
        addr,
        name: config.startup.name.to_string(),
        pid: std::process::id(),
        kafka_addr,
    };
    let ready_json = serde_json::to_vec(&info).unwrap_or_default();
    fsutil::rewrite_atomic(&ready_path, &ready_json).map_err(|source| ServerError::ReadyFile {
        path: ready_path.clone(),
        source,
    })?;
    tracing::info!(%addr, "ready");

    shutdown.await;
    tracing::info!("shutting down: draining requests (up to 5 s)");
    token.cancel();
    match accept.await {
        Ok(graceful) => {
            if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("requests still running after 5 s; closing them");
            }
        }
        Err(e) => tracing::error!(error = %e, "accept loop failed"),
    }
    kafka_tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, kafka_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("kafka requests still running after 5 s; closing them");
    }
    let _ = background.await;
    let _ = retention.await;
    if let Some(w) = watcher {
        let _ = w.await;
    }
    subscriptions.stop().await;
    for task in replication {
        let _ = task.await;
    }
    if let Some(c) = &cluster {
        c.stop_replicators().await;
    }
    if let Some(t) = tierer {
        let _ = t.await;
    }
    if let Some(w) = warm_up {
        let _ = w.await;
    }
    storage.flush_all().await;
    storage.close().await?;
    let _ = std::fs::remove_file(&ready_path);
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Raises the open-file limit and derives `max_connections` from it (both
/// logged).
fn connection_limit(config: &Config) -> usize {
    let setting = config.startup.connections.max_connections;
    let open_files = match connections::raise_fd_limit() {
        Ok(l) => {
            if l.was < l.soft {
                tracing::info!(
                    from = l.was,
                    to = l.soft,
                    "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
                );
            } else {
                tracing::info!(limit = l.soft, "open-file limit (RLIMIT_NOFILE)");
            }
            l.soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit; assuming 1024");
            1024
        }
    };
    let max = connections::resolve(setting, open_files);
    if max as u64 > open_files.saturating_sub(256) {
        tracing::warn!(max_connections = max, open_files, "max_connections leaves fewer than 256 descriptors for files: chunk files may fail to open");
    }
    tracing::info!(max_connections = max, "connection limit");
    max
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
    graceful: GracefulShutdown,
    token: CancellationToken,
    gate: ConnectionGate,
) -> GracefulShutdown {
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let lane = match gate.admit() {
            Admission::Serve(permit) => Lane::Served(permit, graceful.watcher()),
            Admission::OverLimit(permit) => {
                warn_at_limit(&mut warned, gate.max());
                Lane::OverLimit(permit, gate.max())
            }
            Admission::Close => {
                warn_at_limit(&mut warned, gate.max());
                tracing::debug!(%peer, "over the connection limit and its answer lane: closed");
                continue; // dropping the stream closes it
            }
        };
        let _ = stream.set_nodelay(true);
        let st = Arc::clone(&state);
        match &tls {
            None => {
                tokio::spawn(serve(TokioIo::new(stream), st, lane));
            }
            Some(acceptor) => {
                // The handshake runs in the connection's task, bounded, so a
                // slow or silent client never holds up the accept loop.
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        crate::tls::HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls_stream)) => serve(TokioIo::new(tls_stream), st, lane).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    graceful
}

/// Logs that the connection limit was reached, at most every 10 s.
fn warn_at_limit(last: &mut Option<tokio::time::Instant>, max: usize) {
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
        *last = Some(tokio::time::Instant::now());
        tracing::warn!(
            max_connections = max,
            "connection limit reached: new connections get 503 until some close"
        );
    }
}

/// How a connection is served; each holds its place under the limit (or
/// in the over-limit lane) until the connection ends.
enum Lane {
    /// Within `max_connections`: served until it closes or shutdown ends it.
    Served(OwnedSemaphorePermit, Watcher),
    /// Beyond it: one answer, then closed (`http::handle_over_limit`).
    OverLimit(OwnedSemaphorePermit, usize),
}

/// Serves HTTP/1.1 on one (plain or TLS) connection until it closes or the
/// graceful shutdown ends it; or, beyond the connection limit, answers one
/// request and closes.
async fn serve<I>(io: I, state: Arc<AppState>, lane: Lane)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    match lane {
        Lane::Served(_permit, watcher) => {
            let svc = service_fn(move |req| http::handle(Arc::clone(&state), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .max_buf_size(1 << 20)
                .serve_connection(io, svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with error");
            }
        }
        Lane::OverLimit(_permit, max) => {
            let svc = service_fn(move |req| http::handle_over_limit(Arc::clone(&state), req, max));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(connections::OVER_LIMIT_HEADER_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(64 << 10)
                .serve_connection(io, svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "over-limit connection ended with error");
            }
        }
    }
}
