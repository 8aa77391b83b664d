//! The server's own account of a latency run: chunkbus's request-stage
//! histograms in `/metrics` (`chunkbus_write_seconds`,
//! `chunkbus_append_seconds`, `chunkbus_read_seconds`) scraped before and
//! after, and quantiles of the difference. Set next to the end-to-end
//! figures they say how much of a tail the server spent handling requests
//! and how much was spent elsewhere (queueing for a CPU, the network stack,
//! the clients).

use std::net::SocketAddr;

use anyhow::{bail, Result};
use bytes::Bytes;
use hyper::Method;

use crate::client::Conn;

/// The stage histograms scraped.
const STAGES: [&str; 3] = ["write", "append", "read"];

/// One scrape: per stage, the cumulative bucket counts by upper bound (s).
#[derive(Debug, Clone, Default)]
pub struct Stages {
    buckets: [Vec<(f64, u64)>; 3],
}

impl Stages {
    /// Scrapes `addr`'s `/metrics`.
    ///
    /// # Errors
    /// The server did not answer `200`.
    pub async fn scrape(addr: SocketAddr) -> Result<Self> {
        let (status, body) = Conn::open(addr)
            .await?
            .fetch(Method::GET, "/metrics", Bytes::new())
            .await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(Self::parse(&String::from_utf8_lossy(&body)))
    }

    /// The bucket lines of the text exposition.
    fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            for (i, stage) in STAGES.iter().enumerate() {
                let Some(rest) = line
                    .strip_prefix("chunkbus_")
                    .and_then(|l| l.strip_prefix(stage))
                    .and_then(|l| l.strip_prefix("_seconds_bucket{le=\""))
                else {
                    continue;
                };
                let Some((le, count)) = rest.split_once("\"} ") else {
                    continue;
                };
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                if let Ok(n) = count.trim().parse::<u64>() {
                    s.buckets[i].push((le, n));
                }
            }
        }
        s
    }

    /// Per stage, the upper bound (µs) of the bucket holding quantile `q`
    /// of the requests observed since `before` (`None`: none observed).
    pub fn quantiles_since(&self, before: &Self, q: f64) -> [Option<f64>; 3] {
        std::array::from_fn(|i| {
            let now = &self.buckets[i];
            let then = &before.buckets[i];
            let delta = |k: usize| now[k].1.saturating_sub(then.get(k).map_or(0, |&(_, n)| n));
            let total = delta(now.len().checked_sub(1)?);
            if total == 0 {
                return None;
            }
            let want = (q * total as f64).ceil() as u64;
            (0..now.len())
                .find(|&k| delta(k) >= want)
                .map(|k| now[k].0 * 1e6)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_difference_of_two_scrapes() {
        let before = Stages::parse(
            "chunkbus_write_seconds_bucket{le=\"0.00001\"} 5\n\
             chunkbus_write_seconds_bucket{le=\"0.00002\"} 5\n\
             chunkbus_write_seconds_bucket{le=\"+Inf\"} 5\n",
        );
        let after = Stages::parse(
            "chunkbus_write_seconds_bucket{le=\"0.00001\"} 95\n\
             chunkbus_write_seconds_bucket{le=\"0.00002\"} 104\n\
             chunkbus_write_seconds_bucket{le=\"+Inf\"} 105\n\
             chunkbus_read_seconds_bucket{le=\"+Inf\"} 0\n",
        );
        let [w, a, r] = after.quantiles_since(&before, 0.5);
        assert_eq!(w, Some(10.0));
        assert_eq!((a, r), (None, None));
        let [w, _, _] = after.quantiles_since(&before, 0.99);
        assert_eq!(w, Some(20.0));
        let [w, _, _] = after.quantiles_since(&before, 1.0);
        assert_eq!(w, Some(f64::INFINITY));
    }
}
