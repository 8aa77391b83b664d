//! Checks a replica's `held` report (in its changes poll) against what this
//! owner has written, before [`super::progress`] counts it for
//! `min_sync_replicas` writes: a replica cannot hold bytes its owner never
//! published, nor copies of chunks that do not exist.
//!
//! An entry naming an unknown or foreign chunk is dropped (a replica may
//! still report a chunk deleted since its last poll); `written` is clamped
//! to the chunk's published end and `synced` to `written`. This bounds a
//! report to the truth of *now*; it cannot tell a forged report from a real
//! one — only the peer credential (`peer_token`) keeps non-peers from
//! reporting at all. Never touches files.

use super::protocol::Held;
use crate::names::{Category, ChunkName, ServerName};
use crate::storage::Storage;

/// `entry` bounded by `end`, the published end of the owner's chunk it
/// names (None: no such chunk here).
#[must_use]
pub fn clamp(entry: &Held, end: Option<u64>) -> Option<Held> {
    let end = end?;
    let written = entry.written.min(end);
    Some(Held {
        category: entry.category.clone(),
        chunk: entry.chunk.clone(),
        written,
        synced: entry.synced.min(written),
    })
}

/// The entries of a report by a replica of `me`'s chunks that name an
/// existing own chunk, each clamped to that chunk's published end.
#[must_use]
pub fn checked(storage: &Storage, me: &ServerName, report: &[Held]) -> Vec<Held> {
    let end_of = |h: &Held| {
        let category = Category::parse(&h.category).ok()?;
        let name = ChunkName::parse(&h.chunk).ok()?;
        if name.owner() != me {
            return None;
        }
        let chunk = storage.category(&category)?.chunk(&name)?;
        Some(chunk.state().end)
    };
    let out: Vec<Held> = report.iter().filter_map(|h| clamp(h, end_of(h))).collect();
    if out.len() != report.len() || out.iter().zip(report).any(|(a, b)| a != b) {
        tracing::debug!(
            entries = report.len(),
            kept = out.len(),
            "replica report named unknown chunks or more bytes than written; clamped"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(written: u64, synced: u64) -> Held {
        Held {
            category: "c".into(),
            chunk: "n1-chunk000000000".into(),
            written,
            synced,
        }
    }

    #[test]
    fn reports_are_bounded_by_the_published_end() {
        assert_eq!(
            clamp(&held(u64::MAX, u64::MAX), Some(10)),
            Some(held(10, 10))
        );
        assert_eq!(clamp(&held(7, u64::MAX), Some(10)), Some(held(7, 7)));
        assert_eq!(clamp(&held(7, 3), Some(10)), Some(held(7, 3)));
        assert_eq!(clamp(&held(0, 0), Some(0)), Some(held(0, 0)));
        assert_eq!(clamp(&held(5, 5), None), None, "unknown chunk");
    }

    proptest::proptest! {
        /// Whatever a poller reports, what is kept never exceeds the end
        /// and never says more is synced than written.
        #[test]
        fn never_more_than_written(w: u64, s: u64, end: u64) {
            let c = clamp(&held(w, s), Some(end)).unwrap();
            proptest::prop_assert!(c.written <= end && c.written <= w);
            proptest::prop_assert!(c.synced <= c.written && c.synced <= s);
            proptest::prop_assert_eq!(c.written, w.min(end));
        }
    }
}
