//! [`Throttle`]: the bound on catch-up copying (`rebalance_rate`, bytes
//! per second across every replicator of this server). Copying a sealed
//! chunk — a placement change moving pairs here, a replica catching up
//! after a restart — is paced to it; the live tail of open chunks, which
//! `min_sync_replicas` writes wait for, never is.
//!
//! Pacing only: never fetches or writes anything.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Paces byte transfers to a rate (none: unbounded).
#[derive(Debug)]
pub struct Throttle {
    /// Bytes per second; None = no bound.
    rate: Option<u64>,
    /// When the bytes charged so far have been paid for.
    paid_until: Mutex<Option<Instant>>,
}

impl Throttle {
    /// A throttle of `rate` bytes per second (None: unbounded).
    #[must_use]
    pub fn new(rate: Option<u64>) -> Self {
        Self {
            rate: rate.filter(|r| *r > 0),
            paid_until: Mutex::new(None),
        }
    }

    /// The configured rate.
    #[must_use]
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Most bytes one fetch should ask for: one second's worth (at least
    /// 64 KiB), at most `max`.
    #[must_use]
    pub fn step(&self, max: u64) -> u64 {
        self.rate.map_or(max, |r| r.max(64 << 10).min(max))
    }

    /// How long to wait after transferring `bytes` so that the total stays
    /// within the rate.
    fn charge(&self, bytes: u64) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        #[allow(clippy::cast_precision_loss)]
        let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let now = Instant::now();
        let mut paid = self.paid_until.lock();
        let start = paid.map_or(now, |p| p.max(now));
        let until = start + cost;
        *paid = Some(until);
        until.saturating_duration_since(now)
    }

    /// Waits as long as `bytes` just transferred cost under the rate.
    pub async fn pay(&self, bytes: u64) {
        let wait = self.charge(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paces_to_the_rate_and_unbounded_costs_nothing() {
        let free = Throttle::new(None);
        assert_eq!(free.charge(1 << 30), Duration::ZERO);
        assert_eq!(free.step(8 << 20), 8 << 20);
        let t = Throttle::new(Some(1 << 20));
        assert_eq!(t.step(8 << 20), 1 << 20);
        // Charges add up, shared by all callers: 4 × 512 KiB at 1 MiB/s
        // is paid two seconds from now.
        let waits: Vec<Duration> = (0..4).map(|_| t.charge(512 << 10)).collect();
        assert!(waits.windows(2).all(|w| w[0] < w[1]), "{waits:?}");
        let last = waits[3];
        assert!(
            last > Duration::from_millis(1900) && last <= Duration::from_secs(2),
            "{last:?}"
        );
        // A small transfer after a pause waits only its own cost.
        let fresh = Throttle::new(Some(1 << 20));
        let start = Instant::now();
        fresh.pay(64 << 10).await;
        assert!(start.elapsed() >= Duration::from_millis(60));
    }
}
