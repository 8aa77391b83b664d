//! The S3 object store (`aws-sdk-s3`, any S3-compatible endpoint), with
//! credentials from the settings, the environment or a profile file —
//! never from instance metadata. Uploads up to one part go as one
//! `PutObject`; larger ones as a multipart upload, aborted on failure.
//! Every body is in memory when sent, so the SDK signs its SHA-256
//! (`x-amz-content-sha256`) and the store refuses a body damaged on the
//! way; the tierer still reads every object back before it trusts it.

use std::path::PathBuf;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::{failed, ObjectStore, ObjectUpload, StoreError};

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

/// S3 connection settings (`Debug` shows the access key id, never the
/// secret).
#[derive(Clone, PartialEq, Eq)]
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

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(id, _)| (id, "<redacted>")),
            )
            .finish()
    }
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
    type Upload = S3Upload;

    async fn begin(&self, key: &str) -> Result<S3Upload, StoreError> {
        Ok(S3Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            multipart: None,
        })
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

/// A multipart upload under way: its id and the parts sent.
#[derive(Debug)]
struct Multipart {
    id: String,
    parts: Vec<CompletedPart>,
}

/// An upload in progress to an [`S3Store`].
#[derive(Debug)]
pub struct S3Upload {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    multipart: Option<Multipart>,
}

fn content_length(b: &Bytes) -> i64 {
    i64::try_from(b.len()).unwrap_or(i64::MAX)
}

impl S3Upload {
    async fn send_part(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        let key = self.key.as_str();
        if self.multipart.is_none() {
            let out = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| sdk_error(key, &e))?;
            let id = out
                .upload_id()
                .ok_or_else(|| failed(key, "CreateMultipartUpload returned no upload id"))?
                .to_owned();
            self.multipart = Some(Multipart {
                id,
                parts: Vec::new(),
            });
        }
        let Some(mp) = self.multipart.as_mut() else {
            return Err(failed(key, "no multipart upload"));
        };
        let number =
            i32::try_from(mp.parts.len() + 1).map_err(|_| failed(key, "too many parts"))?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&mp.id)
            .part_number(number)
            .content_length(content_length(&bytes))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| sdk_error(key, &e))?;
        mp.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    async fn complete(&mut self, last: Bytes) -> Result<(), StoreError> {
        let key = self.key.as_str();
        if self.multipart.is_none() {
            return self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(content_length(&last))
                .body(ByteStream::from(last))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk_error(key, &e));
        }
        self.send_part(last).await?;
        let key = self.key.as_str();
        let Some(mp) = &self.multipart else {
            return Err(failed(key, "multipart upload vanished"));
        };
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&mp.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(mp.parts.clone()))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error(key, &e))
    }
}

impl ObjectUpload for S3Upload {
    async fn part(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.send_part(bytes).await
    }

    async fn finish(mut self, last: Bytes) -> Result<(), StoreError> {
        let done = self.complete(last).await;
        if done.is_err() {
            self.abort().await;
        }
        done
    }

    async fn abort(self) {
        if let Some(mp) = &self.multipart {
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&mp.id)
                .send()
                .await
            {
                tracing::warn!(key = %self.key, error = %crate::error_chain(&e),
                    "could not abort a multipart upload; the store keeps its parts until it expires them");
            }
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
}
