//! [`ConsumerConfig`]: the tuning of a [`Consumer`](crate::Consumer), its
//! defaults and builder-style setters.
//!
//! Never reads or acks anything: it only holds settings.

use std::sync::Arc;
use std::time::Duration;

use crate::stats::{Hook, StatsHook};

/// Tuning of a [`Consumer`](crate::Consumer). Build it from [`ConsumerConfig::default`]
/// with the setters (the struct is `#[non_exhaustive]`).
///
/// ```
/// use std::time::Duration;
/// use chunkbus_client::ConsumerConfig;
///
/// let config = ConsumerConfig::default()
///     .follow(false)
///     .group(Some("billing".into()))
///     .wait(Duration::from_millis(500));
/// assert!(!config.follow);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Bytes asked for per read (default 4 MiB; the server allows 16 MiB).
    pub max_read_bytes: u64,
    /// Long-poll time of reads at the end of an open chunk, and the period
    /// of looking for new owners (default 1 s).
    pub wait: Duration,
    /// Keep waiting for new data (default). Without it, the consumer ends
    /// once it has read everything that existed when it started.
    pub follow: bool,
    /// Batches read ahead of the application (default 4).
    pub read_ahead: usize,
    /// chukcha-style acks: when the application acks the end of a sealed
    /// chunk, delete that chunk on the server (default off).
    pub chunk_acks: bool,
    /// Consumer group: start from the group's positions stored on the
    /// server (unless `from` is given), and store each ack there
    /// (`POST /ack?consumer=G&from=F`, conditional on the group being
    /// where this consumer last left it) before [`Consumer::ack`](crate::Consumer::ack) returns.
    pub group: Option<String>,
    /// How long a chunk the server does not hold (a plain `404`: a replica
    /// catching up, a load balancer that picked another server) is retried
    /// quietly, failing over between the client's addresses, before
    /// [`ConsumerError::ChunkUnavailable`](crate::ConsumerError::ChunkUnavailable)
    /// is handed to the application
    /// (default 5 s). Retrying goes on after that, reported each time: a
    /// chunk is skipped only when the server says it was deleted.
    pub missing_chunk_wait: Duration,
    /// Sees every batch read, retry and error (default none).
    pub(super) stats_hook: Hook,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_read_bytes: 4 << 20,
            wait: Duration::from_secs(1),
            follow: true,
            read_ahead: 4,
            chunk_acks: false,
            group: None,
            missing_chunk_wait: Duration::from_secs(5),
            stats_hook: Hook::default(),
        }
    }
}

impl ConsumerConfig {
    setter!(
        /// Sets [`ConsumerConfig::max_read_bytes`].
        ///
        /// ```
        /// let c = chunkbus_client::ConsumerConfig::default().max_read_bytes(16 << 20);
        /// assert_eq!(c.max_read_bytes, 16 << 20);
        /// ```
        max_read_bytes: u64
    );
    setter!(
        /// Sets [`ConsumerConfig::wait`].
        ///
        /// ```
        /// use std::time::Duration;
        /// let c = chunkbus_client::ConsumerConfig::default().wait(Duration::from_secs(5));
        /// assert_eq!(c.wait, Duration::from_secs(5));
        /// ```
        wait: Duration
    );
    setter!(
        /// Sets [`ConsumerConfig::follow`].
        ///
        /// ```
        /// let c = chunkbus_client::ConsumerConfig::default().follow(false);
        /// assert!(!c.follow);
        /// ```
        follow: bool
    );
    setter!(
        /// Sets [`ConsumerConfig::read_ahead`].
        ///
        /// ```
        /// let c = chunkbus_client::ConsumerConfig::default().read_ahead(16);
        /// assert_eq!(c.read_ahead, 16);
        /// ```
        read_ahead: usize
    );
    setter!(
        /// Sets [`ConsumerConfig::chunk_acks`].
        ///
        /// ```
        /// let c = chunkbus_client::ConsumerConfig::default().chunk_acks(true);
        /// assert!(c.chunk_acks);
        /// ```
        chunk_acks: bool
    );
    setter!(
        /// Sets [`ConsumerConfig::group`].
        ///
        /// ```
        /// let c = chunkbus_client::ConsumerConfig::default().group(Some("billing".into()));
        /// assert_eq!(c.group.as_deref(), Some("billing"));
        /// ```
        group: Option<String>
    );
    setter!(
        /// Sets [`ConsumerConfig::missing_chunk_wait`].
        ///
        /// ```
        /// use std::time::Duration;
        /// let c = chunkbus_client::ConsumerConfig::default().missing_chunk_wait(Duration::from_secs(1));
        /// assert_eq!(c.missing_chunk_wait, Duration::from_secs(1));
        /// ```
        missing_chunk_wait: Duration
    );

    /// Calls `hook` for every batch read, retry and error ([`StatsHook`]);
    /// [`Consumer::stats`](crate::Consumer::stats) counts them either way.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use chunkbus_client::{ConsumerConfig, StatsEvent, StatsHook};
    /// struct Log;
    /// impl StatsHook for Log {
    ///     fn record(&self, event: &StatsEvent<'_>) { eprintln!("{event:?}"); }
    /// }
    /// let c = ConsumerConfig::default().stats_hook(Arc::new(Log));
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn stats_hook(mut self, hook: Arc<dyn StatsHook>) -> Self {
        self.stats_hook = Hook(Some(hook));
        self
    }
}
