//! Object stores behind one small trait: S3 (`aws-sdk-s3`, any
//! S3-compatible endpoint; `s3.rs`) and a local directory (the embedded
//! default; `local.rs`). Both hold the same object format under the same
//! keys (`[<prefix>/]<category>/<chunk>`).
//!
//! Objects are written as streamed uploads ([`ObjectUpload`]): parts in
//! order, and the object appears (replacing any object at that key) only
//! when the upload finishes — a multipart upload on S3, a temporary file
//! renamed into place locally. This module never encodes or verifies
//! objects; it moves bytes.

mod local;
mod s3;

use std::future::Future;

use bytes::Bytes;

pub use local::{LocalStore, LocalUpload};
pub use s3::{S3Settings, S3SetupError, S3Store, S3Upload};

/// Smallest part but the last that every S3-compatible store accepts.
pub const MIN_PART: usize = 5 << 20;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such object.
    #[error("object {0} not found")]
    NotFound(String),
    /// The store did not answer or answered with an error; retry later.
    #[error("object store error on {key}: {why}")]
    Failed {
        /// The object key.
        key: String,
        /// What happened.
        why: String,
    },
}

pub(super) fn failed(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed {
        key: key.to_owned(),
        why: e.to_string(),
    }
}

/// What chunkbus needs from an object store.
pub trait ObjectStore: Send + Sync {
    /// A streamed upload in progress.
    type Upload: ObjectUpload;
    /// Starts a streamed upload to `key`.
    fn begin(&self, key: &str) -> impl Future<Output = Result<Self::Upload, StoreError>> + Send;
    /// Bytes `[start, end)` of the object (fewer if it is shorter).
    fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<Bytes, StoreError>> + Send;
    /// The object's size.
    fn size(&self, key: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Deletes the object (no error if it is gone).
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// One streamed upload: [`ObjectUpload::part`] for every part but the
/// last (each at least [`MIN_PART`] bytes), then [`ObjectUpload::finish`]
/// with the last; or [`ObjectUpload::abort`]. Nothing is visible at the key
/// before `finish` succeeds.
pub trait ObjectUpload: Send {
    /// Appends a part.
    fn part(&mut self, bytes: Bytes) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Appends the last part and makes the object visible (replacing any
    /// object at the key). On error nothing new is visible.
    fn finish(self, last: Bytes) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Abandons the upload.
    fn abort(self) -> impl Future<Output = ()> + Send;
}

/// The configured store.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// `--tier-dir`.
    Local(LocalStore),
    /// `--s3-bucket`.
    S3(S3Store),
}

/// An upload to the configured store.
#[derive(Debug)]
pub enum AnyUpload {
    /// To `--tier-dir`.
    Local(LocalUpload),
    /// To `--s3-bucket`.
    S3(S3Upload),
}

impl ObjectStore for AnyStore {
    type Upload = AnyUpload;

    async fn begin(&self, key: &str) -> Result<AnyUpload, StoreError> {
        Ok(match self {
            Self::Local(s) => AnyUpload::Local(s.begin(key).await?),
            Self::S3(s) => AnyUpload::S3(s.begin(key).await?),
        })
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        match self {
            Self::Local(s) => s.get_range(key, start, end).await,
            Self::S3(s) => s.get_range(key, start, end).await,
        }
    }

    async fn size(&self, key: &str) -> Result<u64, StoreError> {
        match self {
            Self::Local(s) => s.size(key).await,
            Self::S3(s) => s.size(key).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Local(s) => s.delete(key).await,
            Self::S3(s) => s.delete(key).await,
        }
    }
}

impl ObjectUpload for AnyUpload {
    async fn part(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        match self {
            Self::Local(u) => u.part(bytes).await,
            Self::S3(u) => u.part(bytes).await,
        }
    }

    async fn finish(self, last: Bytes) -> Result<(), StoreError> {
        match self {
            Self::Local(u) => u.finish(last).await,
            Self::S3(u) => u.finish(last).await,
        }
    }

    async fn abort(self) {
        match self {
            Self::Local(u) => u.abort().await,
            Self::S3(u) => u.abort().await,
        }
    }
}
