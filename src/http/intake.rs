//! Receiving request bodies (`/write`, `POST /subscriptions`,
//! `/peer/changes`) under three bounds: the body's own size limit (checked
//! on `Content-Length` before reading), the global [`BodyBudget`] (charged
//! as bytes arrive), and time: a body that pauses longer than
//! `body_idle_timeout` gets `408`, one not complete within
//! [`BODY_TIMEOUT`] too.
//!
//! Never parses what it receives (callers inspect each piece as it
//! arrives) and never chooses a status ([`IntakeError::kind`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use tokio::time::Instant;

use super::budget::{Admit, BodyBudget, BudgetError, Reservation};
use super::AppState;
use crate::error::{DomainError, ErrorKind};

/// Longest a whole request body may take to arrive, pauses or not.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest `/peer/changes` poll body (reports of many chunks).
pub const MAX_POLL_BODY: u64 = 16 << 20;
/// Largest `POST /subscriptions` body.
pub const MAX_SPEC_BODY: u64 = 64 << 10;

/// The global bound on request bodies held in memory: 64 ×
/// `max_batch_size` (256 MiB with defaults).
#[must_use]
pub fn body_budget_bytes(max_batch_size: u64) -> usize {
    usize::try_from(max_batch_size.saturating_mul(64)).unwrap_or(usize::MAX >> 4)
}

/// The part of the body budget kept for a body that could not grow (see
/// [`BodyBudget`]), which is also the largest body any endpoint accepts: a
/// whole write body, a subscription body, and a peer poll of up to
/// [`MAX_POLL_BODY`] but at most a quarter of the budget (16 MiB with
/// defaults).
#[must_use]
pub fn body_reserve_bytes(max_batch_size: u64) -> usize {
    let poll = u64::try_from(body_budget_bytes(max_batch_size) / 4)
        .unwrap_or(u64::MAX)
        .min(MAX_POLL_BODY);
    usize::try_from(max_batch_size.max(MAX_SPEC_BODY).max(poll)).unwrap_or(usize::MAX >> 4)
}

/// A body that could not be received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    /// No byte arrived for `body_idle_timeout`.
    #[error("request body stalled: no bytes for {ms} ms (body_idle_timeout); send the whole body without pausing")]
    Idle {
        /// The idle limit, milliseconds.
        ms: u128,
    },
    /// The body was not complete within [`BODY_TIMEOUT`].
    #[error("request body not received within {secs}s")]
    TooSlow {
        /// The limit, seconds.
        secs: u64,
    },
    /// Longer than the endpoint accepts.
    #[error("{what} is larger than the limit of {max} bytes")]
    TooLarge {
        /// Which body (`subscription body`, …).
        what: &'static str,
        /// The limit, bytes.
        max: u64,
    },
    /// The connection failed while the body was read.
    #[error("reading request body failed")]
    Unreadable(#[source] hyper::Error),
    /// The bodies held in memory stayed at their bound until the deadline.
    #[error("server is busy: request bodies held in memory are at their limit; retry shortly")]
    Busy,
}

impl DomainError for IntakeError {
    /// Slow clients are `RequestTimeout`, oversize bodies
    /// `PayloadTooLarge`, a full budget `Unavailable`, a broken connection
    /// `BadRequest`.
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Idle { .. } | Self::TooSlow { .. } => ErrorKind::RequestTimeout,
            Self::TooLarge { .. } => ErrorKind::PayloadTooLarge,
            Self::Busy => ErrorKind::Unavailable,
            Self::Unreadable(_) => ErrorKind::BadRequest,
        }
    }
}

/// A received body: its pieces, and its share of the budget, held until
/// this is dropped (drop it as soon as the bytes are stored or parsed).
#[derive(Debug)]
pub(super) struct Received<'a> {
    /// The data frames, in order (none empty).
    pub frames: Vec<Bytes>,
    /// The budget share.
    pub reservation: Reservation<'a>,
}

impl Received<'_> {
    /// The body as one buffer (copies only when it came in several pieces).
    pub fn contiguous(&self) -> Bytes {
        match self.frames.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut all = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
                for f in many {
                    all.extend_from_slice(f);
                }
                all.freeze()
            }
        }
    }
}

/// Receives a body of at most `max` bytes (`what` names it in refusals),
/// passing each piece to `inspect` before it is kept.
///
/// # Errors
/// [`IntakeError`] (converted into `E`), or what `inspect` returns.
pub(super) async fn receive<'a, E: From<IntakeError>>(
    state: &'a AppState,
    body: Incoming,
    max: u64,
    what: &'static str,
    mut inspect: impl FnMut(&Bytes) -> Result<(), E>,
) -> Result<Received<'a>, E> {
    // No body may claim more than the budget's reserve (see budget.rs).
    let max = max.min(u64::try_from(state.body_budget.largest_claim()).unwrap_or(u64::MAX));
    let declared = body.size_hint().exact();
    if declared.is_some_and(|len| len > max) {
        return Err(IntakeError::TooLarge { what, max }.into());
    }
    let mut reservation = state.body_budget.reservation(declared.unwrap_or(max));
    let idle = state.config.startup.connections.body_idle_timeout;
    let start = Instant::now();
    let overall = start + BODY_TIMEOUT;
    let mut last = start;
    // One timer for both bounds: a piece only records when it came, and
    // the timer, when it fires, checks and moves itself forward.
    let timer = tokio::time::sleep_until((start + idle).min(overall));
    tokio::pin!(timer);
    let mut body = body;
    let mut frames = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            f = body.frame() => f,
            () = &mut timer => {
                let now = Instant::now();
                if now >= overall {
                    return Err(IntakeError::TooSlow { secs: BODY_TIMEOUT.as_secs() }.into());
                }
                if now >= last + idle {
                    return Err(IntakeError::Idle { ms: idle.as_millis() }.into());
                }
                timer.as_mut().reset((last + idle).min(overall));
                continue;
            }
        };
        let Some(frame) = next else { break };
        let Ok(data) = frame.map_err(IntakeError::Unreadable)?.into_data() else {
            continue; // trailers
        };
        if data.is_empty() {
            continue;
        }
        last = Instant::now();
        inspect(&data)?;
        if admit(&mut reservation, data.len(), overall, what, max).await? {
            last = Instant::now(); // waiting for the slot is not the client's pause
        }
        frames.push(data);
    }
    Ok(Received {
        frames,
        reservation,
    })
}

/// Admits `n` bytes into `reservation`, waiting (until `deadline`) for the
/// escalation slot when the budget above the reserve is short; returns
/// whether it waited.
async fn admit(
    reservation: &mut Reservation<'_>,
    n: usize,
    deadline: Instant,
    what: &'static str,
    max: u64,
) -> Result<bool, IntakeError> {
    match reservation.admit(n) {
        Ok(Admit::Done) => Ok(false),
        Ok(Admit::Escalate) => {
            match tokio::time::timeout_at(deadline, reservation.escalate(n)).await {
                Ok(true) => Ok(true),
                Ok(false) | Err(_) => Err(IntakeError::Busy),
            }
        }
        Err(BudgetError::OverClaim { .. }) => Err(IntakeError::TooLarge { what, max }),
    }
}

/// A budget for `max_batch_size` (what [`AppState`] holds).
#[must_use]
pub fn budget_for(max_batch_size: u64) -> BodyBudget {
    BodyBudget::new(
        body_budget_bytes(max_batch_size),
        body_reserve_bytes(max_batch_size),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_reserve_follow_the_batch_limit() {
        assert_eq!(body_budget_bytes(4 << 20), 256 << 20);
        assert_eq!(body_reserve_bytes(4 << 20), 16 << 20);
        assert_eq!(body_budget_bytes(1 << 30), 64 << 30);
        assert_eq!(body_reserve_bytes(1 << 30), 1 << 30);
        // Small batches: polls up to a quarter of the budget.
        assert_eq!(body_budget_bytes(256 << 10), 16 << 20);
        assert_eq!(body_reserve_bytes(256 << 10), 4 << 20);
        assert_eq!(body_reserve_bytes(1), MAX_SPEC_BODY as usize);
        let b = budget_for(4 << 20);
        assert_eq!((b.total(), b.largest_claim()), (256 << 20, 16 << 20));
        assert_eq!(budget_for(1).total(), MAX_SPEC_BODY as usize);
    }
}
