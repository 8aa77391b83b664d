//! Counters of a [`Producer`](crate::Producer) or a
//! [`Consumer`](crate::Consumer) ([`Stats`]), and an optional
//! [`StatsHook`] that sees every event as it happens. Both are per batch,
//! never per message, and cost an atomic add each.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::ClientError;

/// A snapshot of a producer's or consumer's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Message bytes stored (producer) or read (consumer).
    pub bytes: u64,
    /// Messages stored or read.
    pub messages: u64,
    /// Batches stored (producer: acknowledged writes) or read (consumer).
    pub batches: u64,
    /// Requests retried after a retryable failure.
    pub retries: u64,
    /// Failures that were not retried: a batch that failed (producer), an
    /// error handed to the application (consumer).
    pub errors: u64,
}

/// One event, as a [`StatsHook`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub enum StatsEvent<'a> {
    /// The server stored a batch of the producer.
    Stored {
        /// Category.
        category: &'a str,
        /// Messages in the batch.
        messages: u64,
        /// Bytes in the batch.
        bytes: u64,
    },
    /// The consumer received a batch.
    Read {
        /// Category.
        category: &'a str,
        /// Chunk read.
        chunk: &'a str,
        /// Messages in the batch.
        messages: u64,
        /// Bytes in the batch.
        bytes: u64,
    },
    /// A request failed and is tried again.
    Retry {
        /// Category.
        category: &'a str,
        /// What failed.
        error: &'a ClientError,
    },
    /// A failure that is not retried (a failed batch, an error handed to
    /// the application).
    Error {
        /// Category.
        category: &'a str,
        /// What failed, as text.
        error: &'a dyn std::error::Error,
    },
}

/// Sees every [`StatsEvent`] of a producer or consumer, on the task where
/// it happens: keep it quick and never block (count, forward to a metrics
/// library). Set it with
/// [`ProducerConfig::stats_hook`](crate::ProducerConfig::stats_hook) or
/// [`ConsumerConfig::stats_hook`](crate::ConsumerConfig::stats_hook).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use chunkbus_client::{StatsEvent, StatsHook};
///
/// #[derive(Default)]
/// struct Retries(AtomicU64);
///
/// impl StatsHook for Retries {
///     fn record(&self, event: &StatsEvent<'_>) {
///         if let StatsEvent::Retry { .. } = event {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// let hook = Retries::default();
/// # let _ = hook;
/// ```
pub trait StatsHook: Send + Sync + 'static {
    /// Called once per event.
    fn record(&self, event: &StatsEvent<'_>);
}

/// An optional hook in a config (Debug prints only whether it is set).
#[derive(Clone, Default)]
pub(crate) struct Hook(pub(crate) Option<Arc<dyn StatsHook>>);

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(StatsHook)"
        } else {
            "None"
        })
    }
}

/// The live counters plus the hook.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    bytes: AtomicU64,
    messages: AtomicU64,
    batches: AtomicU64,
    retries: AtomicU64,
    errors: AtomicU64,
    hook: Hook,
}

impl Counters {
    pub(crate) fn new(hook: Hook) -> Self {
        Self {
            hook,
            ..Self::default()
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            bytes: self.bytes.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn record(&self, event: &StatsEvent<'_>) {
        match event {
            StatsEvent::Stored {
                messages, bytes, ..
            }
            | StatsEvent::Read {
                messages, bytes, ..
            } => {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.messages.fetch_add(*messages, Ordering::Relaxed);
                self.bytes.fetch_add(*bytes, Ordering::Relaxed);
            }
            StatsEvent::Retry { .. } => {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            StatsEvent::Error { .. } => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(h) = &self.hook.0 {
            h.record(event);
        }
    }
}

/// Runs `fut` inside the span `span()` makes when the `spans` feature is
/// on; otherwise runs it as is (and never calls `span`).
#[cfg(feature = "spans")]
pub(crate) fn in_span<F: std::future::Future>(
    fut: F,
    span: impl FnOnce() -> tracing::Span,
) -> tracing::instrument::Instrumented<F> {
    tracing::Instrument::instrument(fut, span())
}

/// Runs `fut` inside the span `span()` makes when the `spans` feature is
/// on; otherwise runs it as is (and never calls `span`).
#[cfg(not(feature = "spans"))]
pub(crate) fn in_span<F: std::future::Future>(fut: F, _span: impl FnOnce() -> tracing::Span) -> F {
    fut
}
