//! Tiering settings as validated by `crate::config`: the store, keys and
//! encoding fixed at start ([`TierConfig`]) and the thresholds that change
//! on config reload ([`TierThresholds`]). Data only.

use std::path::PathBuf;
use std::time::Duration;

use super::keys::KeyRing;
use super::store::S3Settings;

/// Where and how chunks are tiered (on when a threshold is set; changing
/// any of it needs a restart).
#[derive(Debug, Clone)]
pub struct TierConfig {
    /// Local object store directory (when `s3` is None).
    pub dir: PathBuf,
    /// S3 store, when `--s3-bucket` is set.
    pub s3: Option<S3Settings>,
    /// Current and old encryption keys.
    pub keys: KeyRing,
    /// zstd level.
    pub level: i32,
    /// Plaintext bytes per frame.
    pub frame_size: u32,
    /// Decoded-frame cache bound in bytes.
    pub cache_bytes: usize,
    /// Concurrent uploads.
    pub concurrency: usize,
}

impl PartialEq for TierConfig {
    /// Same store, keys (by id) and encoding.
    fn eq(&self, other: &Self) -> bool {
        self.dir == other.dir
            && self.s3 == other.s3
            && self.keys.ids() == other.keys.ids()
            && self.level == other.level
            && self.frame_size == other.frame_size
            && self.cache_bytes == other.cache_bytes
            && self.concurrency == other.concurrency
    }
}

/// When tiering uploads; applied live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierThresholds {
    /// Tier own sealed chunks older than this.
    pub tier_after: Option<Duration>,
    /// Tier the oldest own sealed chunks while local bytes exceed this.
    pub local_bytes_budget: Option<u64>,
}
