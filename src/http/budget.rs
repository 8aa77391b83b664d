//! [`BodyBudget`]: the global bound on request-body bytes held in memory,
//! charged as the bytes arrive, never for bytes a client only announced.
//!
//! A body takes a [`Reservation`] for its *claim* (its `Content-Length`, or
//! the largest body allowed when it has none) that holds nothing until
//! bytes arrive; each received piece is then admitted, taking permits in
//! doubling steps (at most twice what arrived, one atomic operation per
//! step). So a client that sends headers and then nothing holds nothing,
//! however many such connections are open.
//!
//! Taking permits while holding others could deadlock: many large bodies
//! each holding part of the budget, all waiting for more. The budget keeps
//! a *reserve* of the largest claim that ordinary steps may not take. A
//! body whose step does not fit above the reserve *escalates*: it waits its
//! turn for the one escalation slot (a FIFO lock), then takes everything it
//! may still need from the reserve at once and finishes without waiting
//! again. The reserve is always whole when the slot is free (ordinary steps
//! never dip into it, and the escalated body gives back at least what it
//! took), so an escalated body never waits for permits and every body that
//! keeps sending finishes.
//!
//! Never reads a body or chooses a status (see `intake.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, MutexGuard};

/// Bytes of request bodies that may be held in memory at once.
#[derive(Debug)]
pub struct BodyBudget {
    /// Budget size.
    total: usize,
    /// The part only an escalated body may take; at least every claim.
    reserve: usize,
    /// Permits not held by any body.
    free: AtomicUsize,
    /// Held by the one body allowed into the reserve.
    escalation: Mutex<()>,
}

/// A body's share of the budget; gives it back when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a BodyBudget,
    /// The most this body may hold.
    claim: usize,
    /// Permits held.
    held: usize,
    /// Bytes admitted.
    used: usize,
    /// The escalation slot, once taken (then `held == claim`).
    _escalated: Option<MutexGuard<'a, ()>>,
}

/// What admitting a piece needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The piece is admitted.
    Done,
    /// The budget above the reserve is short: call
    /// [`Reservation::escalate`], then the piece is admitted.
    Escalate,
}

/// A piece a reservation cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// More bytes than the claim.
    #[error("body is longer than the {claim} bytes it may hold")]
    OverClaim {
        /// The claim, bytes.
        claim: usize,
    },
}

impl BodyBudget {
    /// A budget of `total` bytes, keeping `reserve` (the largest claim any
    /// body will make; raised to `total` if larger) for escalated bodies.
    #[must_use]
    pub fn new(total: usize, reserve: usize) -> Self {
        let total = total.max(reserve);
        Self {
            total,
            reserve,
            free: AtomicUsize::new(total),
            escalation: Mutex::new(()),
        }
    }

    /// The budget size.
    #[must_use]
    pub fn total(&self) -> usize {
        self.total
    }

    /// The largest claim a reservation can make (the reserve).
    #[must_use]
    pub fn largest_claim(&self) -> usize {
        self.reserve
    }

    /// Bytes not held by any body.
    #[must_use]
    pub fn free(&self) -> usize {
        self.free.load(Ordering::Relaxed)
    }

    /// A reservation for a body of at most `claim` bytes (capped at the
    /// reserve, so an escalated body always fits); holds nothing yet.
    #[must_use]
    pub fn reservation(&self, claim: u64) -> Reservation<'_> {
        Reservation {
            budget: self,
            claim: usize::try_from(claim)
                .unwrap_or(usize::MAX)
                .min(self.reserve),
            held: 0,
            used: 0,
            _escalated: None,
        }
    }

    /// Takes `n` permits if `floor` stay free afterwards.
    fn take_above(&self, n: usize, floor: usize) -> bool {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                free.checked_sub(n).filter(|&left| left >= floor)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            self.free.fetch_add(n, Ordering::AcqRel);
        }
    }
}

impl Reservation<'_> {
    /// Admits a piece of `n` bytes: free when the permits already held
    /// cover it, else one step (doubling what is held, capped at the claim)
    /// above the reserve.
    ///
    /// # Errors
    /// [`BudgetError::OverClaim`] when the body outgrows its claim.
    pub fn admit(&mut self, n: usize) -> Result<Admit, BudgetError> {
        let used = self
            .used
            .checked_add(n)
            .filter(|&u| u <= self.claim)
            .ok_or(BudgetError::OverClaim { claim: self.claim })?;
        if used <= self.held {
            self.used = used;
            return Ok(Admit::Done);
        }
        let need = used - self.held;
        let step = need.max(self.held).min(self.claim - self.held);
        let budget = self.budget;
        for n in [step, need] {
            if budget.take_above(n, budget.reserve) {
                self.held += n;
                self.used = used;
                return Ok(Admit::Done);
            }
        }
        Ok(Admit::Escalate)
    }

    /// After [`Admit::Escalate`]: waits for the escalation slot, then takes
    /// the rest of the claim (the piece being admitted included) from the
    /// reserve. Holds the slot until dropped.
    ///
    /// Returns `false` only if the reserve was not whole, which the module's
    /// invariant rules out; the caller then refuses the body.
    pub async fn escalate(&mut self, n: usize) -> bool {
        let guard = self.budget.escalation.lock().await;
        let rest = self.claim - self.held;
        if !self.budget.take_above(rest, 0) {
            return false;
        }
        self.held = self.claim;
        self.used += n;
        self._escalated = Some(guard);
        true
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        // Before the slot (dropped after this) lets the next body in.
        self.budget.give_back(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn announced_bytes_hold_nothing_received_ones_hold_at_most_twice() {
        let b = BodyBudget::new(1000, 100);
        let mut rs: Vec<Reservation<'_>> = (0..50).map(|_| b.reservation(100)).collect();
        assert_eq!(b.free(), 1000, "claims alone take nothing");
        assert_eq!(rs[0].admit(10).unwrap(), Admit::Done);
        assert_eq!(b.free(), 990);
        assert_eq!(rs[0].admit(5).unwrap(), Admit::Done);
        assert_eq!(b.free(), 980, "doubled to 20");
        assert_eq!(rs[0].admit(5).unwrap(), Admit::Done);
        assert_eq!(b.free(), 980, "covered by the step");
        assert_eq!(
            rs[0].admit(81),
            Err(BudgetError::OverClaim { claim: 100 }),
            "past the claim"
        );
        rs.clear();
        assert_eq!(b.free(), 1000);
    }

    #[test]
    fn claims_are_capped_at_the_reserve() {
        let b = BodyBudget::new(1000, 100);
        let mut r = b.reservation(u64::MAX);
        assert_eq!(r.admit(101), Err(BudgetError::OverClaim { claim: 100 }));
        assert_eq!(BodyBudget::new(10, 100).total(), 100);
    }

    #[tokio::test]
    async fn steps_never_take_the_reserve_and_an_escalated_body_always_fits() {
        let b = BodyBudget::new(300, 100);
        let mut a = b.reservation(100);
        let mut c = b.reservation(100);
        assert_eq!(a.admit(100).unwrap(), Admit::Done);
        assert_eq!(c.admit(100).unwrap(), Admit::Done);
        assert_eq!(b.free(), 100);
        // A third body finds only the reserve left.
        let mut d = b.reservation(100);
        assert_eq!(d.admit(1).unwrap(), Admit::Escalate);
        assert!(d.escalate(1).await);
        assert_eq!(b.free(), 0);
        assert_eq!(d.admit(99).unwrap(), Admit::Done, "its claim is held");
        drop(d);
        assert_eq!(b.free(), 100);
        drop((a, c));
        assert_eq!(b.free(), 300);
    }

    /// Many bodies that each hold part of a small budget and want more all
    /// finish: no deadlock, and the budget is never exceeded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_large_bodies_all_finish_within_the_budget() {
        const TOTAL: usize = 1 << 20;
        const CLAIM: usize = 256 << 10;
        let b = Arc::new(BodyBudget::new(TOTAL, CLAIM));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let b = Arc::clone(&b);
            tasks.push(tokio::spawn(async move {
                let mut r = b.reservation(CLAIM as u64);
                let mut sent = 0;
                while sent < CLAIM {
                    let n = (4096).min(CLAIM - sent);
                    if r.admit(n).unwrap() == Admit::Escalate {
                        assert!(r.escalate(n).await, "the reserve was whole");
                    }
                    sent += n;
                    assert!(b.free() <= TOTAL);
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(std::time::Duration::from_secs(20), t)
                .await
                .expect("no deadlock")
                .unwrap();
        }
        assert_eq!(b.free(), TOTAL);
    }
}
