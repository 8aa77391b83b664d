//! Object stores behind one small trait: S3 (`aws-sdk-s3`, any
//! S3-compatible endpoint) and a local directory (the embedded default).
//! Both hold the same object format under the same keys
//! (`[<prefix>/]<category>/<chunk>`).

use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::fsutil;

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

/// Why the S3 client could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3SetupError {
    /// Neither the settings, the environment nor a profile file name
    /// credentials.
    #[error("no S3 credentials: set them in the config, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a profile file")]
    NoCredentials,
    /// The credentials profile file cannot be read.
    #[error("no S3 credentials in the config or environment, and {} cannot be read", path.display())]
    CredentialsFile {
        /// The profile file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The profile lacks a key id or secret.
    #[error("profile [{profile}] in {} has no aws_access_key_id/aws_secret_access_key", path.display())]
    ProfileIncomplete {
        /// The profile asked for.
        profile: String,
        /// The profile file.
        path: PathBuf,
    },
}

/// What chunkbus needs from an object store.
pub trait ObjectStore: Send + Sync {
    /// Stores `body` under `key` (replacing any object there).
    fn put(&self, key: &str, body: Bytes) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Bytes `[start, end)` of the object.
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

/// Objects as files under a directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created if missing).
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        fsutil::create_dir_durable(root)?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        // Keys are built from validated names only ([A-Za-z0-9_-] and '/').
        self.root.join(key)
    }
}

fn failed(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed {
        key: key.to_owned(),
        why: e.to_string(),
    }
}

fn io_error(key: &str, e: &std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound(key.to_owned())
    } else {
        failed(key, e)
    }
}

impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let path = self.path(key);
        let k = key.to_owned();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                fsutil::create_dir_durable(dir).map_err(|e| failed(&k, e))?;
            }
            fsutil::rewrite_atomic(&path, &body).map_err(|e| failed(&k, e))
        })
        .await
        .map_err(|e| failed(key, e))?
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        let path = self.path(key);
        let k = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&path).map_err(|e| io_error(&k, &e))?;
            let len = usize::try_from(end.saturating_sub(start)).map_err(|e| failed(&k, e))?;
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                match f.read_at(&mut buf[got..], start + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_error(&k, &e)),
                }
            }
            buf.truncate(got);
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| failed(key, e))?
    }

    async fn size(&self, key: &str) -> Result<u64, StoreError> {
        tokio::fs::metadata(self.path(key))
            .await
            .map(|m| m.len())
            .map_err(|e| io_error(key, &e))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(failed(key, e)),
        }
    }
}

/// S3 connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Endpoint URL (`http://127.0.0.1:9000`); None = AWS's regional endpoint.
    pub endpoint: Option<String>,
    /// Region. Default = us-east-1.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Key prefix (no leading or trailing `/`).
    pub prefix: String,
    /// Path-style addressing (most S3-compatible servers need it).
    pub path_style: bool,
    /// Access key id and secret (None: environment or profile file).
    pub credentials: Option<(String, String)>,
}

/// An S3 bucket (or any S3-compatible store).
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Store {
    /// A client for `s`. Credentials come from the settings, else from
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`),
    /// else from the profile file (`AWS_SHARED_CREDENTIALS_FILE` or
    /// `~/.aws/credentials`, profile `AWS_PROFILE` or `default`). Never from
    /// instance metadata. Request checksums are sent only when required.
    ///
    /// # Errors
    /// No credentials found.
    pub fn new(s: &S3Settings) -> Result<Self, S3SetupError> {
        use aws_sdk_s3::config::retry::RetryConfig;
        use aws_sdk_s3::config::timeout::TimeoutConfig;
        use aws_sdk_s3::config::{
            BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
            ResponseChecksumValidation,
        };
        let (ak, sk, token) = match &s.credentials {
            Some((a, k)) => (a.clone(), k.clone(), None),
            None => env_or_profile_credentials()?,
        };
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(s.region.clone()))
            .credentials_provider(Credentials::new(ak, sk, token, None, "chunkbus"))
            .force_path_style(s.path_style)
            // The tierer retries with its own backoff; the SDK tries twice.
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(5))
                    .operation_attempt_timeout(std::time::Duration::from_secs(120))
                    .build(),
            )
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(e) = &s.endpoint {
            b = b.endpoint_url(e);
        }
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: s.bucket.clone(),
        })
    }
}

/// Credentials from the standard environment variables or profile file.
fn env_or_profile_credentials() -> Result<(String, String, Option<String>), S3SetupError> {
    if let (Ok(a), Ok(k)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        return Ok((a, k, std::env::var("AWS_SESSION_TOKEN").ok()));
    }
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))
        .ok_or(S3SetupError::NoCredentials)?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(source) => return Err(S3SetupError::CredentialsFile { path: file, source }),
    };
    match parse_profile(&text, &profile) {
        Some(c) => Ok(c),
        None => Err(S3SetupError::ProfileIncomplete {
            profile,
            path: file,
        }),
    }
}

/// Reads one profile of an AWS credentials file (INI).
fn parse_profile(text: &str, profile: &str) -> Option<(String, String, Option<String>)> {
    let mut in_profile = false;
    let (mut ak, mut sk, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => ak = Some(v),
                "aws_secret_access_key" => sk = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some((ak?, sk?, token))
}

fn sdk_error<E: std::error::Error + 'static>(
    key: &str,
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError {
    if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) {
        return StoreError::NotFound(key.to_owned());
    }
    failed(key, crate::error_chain(e))
}

impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(i64::try_from(body.len()).unwrap_or(i64::MAX))
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(key, &e))
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        if end <= start {
            return Ok(Bytes::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={start}-{}", end - 1))
            .send()
            .await
            .map_err(|e| sdk_error(key, &e))?;
        let body = out.body.collect().await.map_err(|e| failed(key, e))?;
        Ok(body.into_bytes())
    }

    async fn size(&self, key: &str) -> Result<u64, StoreError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error(key, &e))?;
        Ok(out
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(key, &e))
    }
}

/// The configured store.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// `--tier-dir`.
    Local(LocalStore),
    /// `--s3-bucket`.
    S3(S3Store),
}

impl ObjectStore for AnyStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        match self {
            Self::Local(s) => s.put(key, body).await,
            Self::S3(s) => s.put(key, body).await,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_file_parsing() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n[other]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token=T\n";
        assert_eq!(
            parse_profile(text, "default"),
            Some(("A".into(), "B".into(), None))
        );
        assert_eq!(
            parse_profile(text, "other"),
            Some(("C".into(), "D".into(), Some("T".into())))
        );
        assert_eq!(parse_profile(text, "missing"), None);
    }

    #[tokio::test]
    async fn local_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        s.put("c/n1-chunk000000001", Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        assert_eq!(s.size("c/n1-chunk000000001").await.unwrap(), 11);
        assert_eq!(
            &s.get_range("c/n1-chunk000000001", 6, 11).await.unwrap()[..],
            b"world"
        );
        s.delete("c/n1-chunk000000001").await.unwrap();
        assert!(matches!(
            s.size("c/n1-chunk000000001").await,
            Err(StoreError::NotFound(_))
        ));
    }
}
