//! Bounds on connections: the open-file limit, raised to its hard limit at
//! start ([`raise_fd_limit`]), and the [`ConnectionGate`] that lets at most
//! `max_connections` connections be served at once.
//!
//! A connection beyond the limit is not left hanging in the listen backlog
//! (which is what running out of file descriptors does): it is accepted,
//! gets one answer (`503`, or `GET /healthz` as usual) and is closed. At
//! most [`OVER_LIMIT_LANE`] such connections are answered at once, each
//! given [`OVER_LIMIT_HEADER_TIMEOUT`] to send its request; beyond that
//! they are closed as soon as accepted. Connections already open are never
//! closed to make room.
//!
//! Never serves HTTP itself (`server.rs` does).
#![expect(unsafe_code, reason = "getrlimit/setrlimit have no safe std wrapper")]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::MaxConnections;

/// `max_connections = auto` never exceeds this.
pub const AUTO_MAX_CONNECTIONS: usize = 65_536;
/// Connections beyond the limit answered at once.
pub const OVER_LIMIT_LANE: usize = 64;
/// How long a connection beyond the limit may take to send its request.
pub const OVER_LIMIT_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The open-file limit before and after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// Soft limit found at start.
    pub was: u64,
    /// Soft limit now.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (connections and chunk
/// files both need descriptors; the common soft default of 1024 is far too
/// few for a broker).
///
/// # Errors
/// `getrlimit`/`setrlimit` failures.
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct passed, which lives on
    // this stack frame for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let was = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct passed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(FdLimit {
        was,
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// The connection limit for a setting and an open-file limit: `auto` is
/// half the descriptors (the other half is left for chunk files, sidecars,
/// peers and the state dir), at least 1 and at most
/// [`AUTO_MAX_CONNECTIONS`].
#[must_use]
pub fn resolve(setting: MaxConnections, open_files: u64) -> usize {
    match setting {
        MaxConnections::Fixed(n) => n,
        MaxConnections::Auto => usize::try_from(open_files / 2)
            .unwrap_or(usize::MAX)
            .clamp(1, AUTO_MAX_CONNECTIONS),
    }
}

/// What to do with a connection just accepted.
#[derive(Debug)]
pub enum Admission {
    /// Serve it; the permit is its place under the limit.
    Serve(OwnedSemaphorePermit),
    /// Over the limit: answer one request and close; the permit is its
    /// place in the over-limit lane.
    OverLimit(OwnedSemaphorePermit),
    /// Over the limit and the lane is full: close at once.
    Close,
}

/// Counts served connections against `max_connections`.
#[derive(Debug, Clone)]
pub struct ConnectionGate {
    max: usize,
    served: Arc<Semaphore>,
    over: Arc<Semaphore>,
}

impl ConnectionGate {
    /// A gate serving at most `max` connections at once.
    #[must_use]
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            max,
            served: Arc::new(Semaphore::new(max)),
            over: Arc::new(Semaphore::new(OVER_LIMIT_LANE)),
        }
    }

    /// The limit.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections being served now.
    #[must_use]
    pub fn open(&self) -> usize {
        self.max - self.served.available_permits()
    }

    /// Decides about a new connection (never waits).
    #[must_use]
    pub fn admit(&self) -> Admission {
        if let Ok(p) = Arc::clone(&self.served).try_acquire_owned() {
            return Admission::Serve(p);
        }
        match Arc::clone(&self.over).try_acquire_owned() {
            Ok(p) => Admission::OverLimit(p),
            Err(_) => Admission::Close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_half_the_open_files_within_bounds() {
        assert_eq!(resolve(MaxConnections::Auto, 1024), 512);
        assert_eq!(resolve(MaxConnections::Auto, 20_000), 10_000);
        assert_eq!(resolve(MaxConnections::Auto, 1 << 20), AUTO_MAX_CONNECTIONS);
        assert_eq!(resolve(MaxConnections::Auto, 1), 1);
        assert_eq!(resolve(MaxConnections::Fixed(7), 1024), 7);
    }

    #[test]
    fn beyond_the_limit_a_small_lane_then_close() {
        let g = ConnectionGate::new(2);
        let a = g.admit();
        let b = g.admit();
        assert!(matches!(
            (&a, &b),
            (Admission::Serve(_), Admission::Serve(_))
        ));
        assert_eq!(g.open(), 2);
        let over: Vec<Admission> = (0..OVER_LIMIT_LANE).map(|_| g.admit()).collect();
        assert!(over.iter().all(|a| matches!(a, Admission::OverLimit(_))));
        assert!(matches!(g.admit(), Admission::Close));
        drop(a);
        assert_eq!(g.open(), 1);
        assert!(matches!(g.admit(), Admission::Serve(_)));
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let l = raise_fd_limit().unwrap();
        assert_eq!(l.soft, l.hard);
        assert!(l.was <= l.soft);
    }
}
