//! The local-directory object store: one file per object under the tier
//! dir. An upload writes `<key>.upload` part by part, then fdatasyncs it,
//! renames it over `<key>` and fsyncs the directory, so a reader sees the
//! old object or the whole new one, never a partial one; a crash leaves at
//! most a stale `.upload` file, truncated by the next upload of that key.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::{failed, ObjectStore, ObjectUpload, StoreError};
use crate::fsutil;

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

fn io_error(key: &str, e: &std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StoreError::NotFound(key.to_owned())
    } else {
        failed(key, e)
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    key: &str,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| failed(key, e))?
}

/// An upload in progress to a [`LocalStore`].
#[derive(Debug)]
pub struct LocalUpload {
    key: String,
    tmp: PathBuf,
    dest: PathBuf,
    file: Arc<File>,
    written: u64,
}

impl LocalUpload {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        let (file, at, key) = (Arc::clone(&self.file), self.written, self.key.clone());
        let len = bytes.len() as u64;
        blocking(&self.key, move || {
            file.write_all_at(&bytes, at).map_err(|e| failed(&key, e))
        })
        .await?;
        self.written += len;
        Ok(())
    }
}

impl ObjectStore for LocalStore {
    type Upload = LocalUpload;

    async fn begin(&self, key: &str) -> Result<LocalUpload, StoreError> {
        let dest = self.path(key);
        let mut tmp = dest.clone().into_os_string();
        tmp.push(".upload");
        let tmp = PathBuf::from(tmp);
        let (k, d, t) = (key.to_owned(), dest.clone(), tmp.clone());
        let file = blocking(key, move || {
            if let Some(dir) = d.parent() {
                fsutil::create_dir_durable(dir).map_err(|e| failed(&k, e))?;
            }
            File::create(&t).map_err(|e| failed(&k, e))
        })
        .await?;
        Ok(LocalUpload {
            key: key.to_owned(),
            tmp,
            dest,
            file: Arc::new(file),
            written: 0,
        })
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        let path = self.path(key);
        let k = key.to_owned();
        blocking(key, move || {
            let f = File::open(&path).map_err(|e| io_error(&k, &e))?;
            // Never allocate past the end of the file, whatever was asked.
            let size = f.metadata().map_err(|e| io_error(&k, &e))?.len();
            let len =
                usize::try_from(end.min(size).saturating_sub(start)).map_err(|e| failed(&k, e))?;
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

impl ObjectUpload for LocalUpload {
    async fn part(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.write(bytes).await
    }

    async fn finish(mut self, last: Bytes) -> Result<(), StoreError> {
        self.write(last).await?;
        let (file, tmp, dest, key) = (
            Arc::clone(&self.file),
            self.tmp.clone(),
            self.dest.clone(),
            self.key.clone(),
        );
        let done = blocking(&self.key, move || {
            file.sync_data().map_err(|e| failed(&key, e))?;
            std::fs::rename(&tmp, &dest).map_err(|e| failed(&key, e))?;
            match dest.parent() {
                Some(dir) => fsutil::fsync_dir(dir).map_err(|e| failed(&key, e)),
                None => Ok(()),
            }
        })
        .await;
        if done.is_err() {
            self.abort().await;
        }
        done
    }

    async fn abort(self) {
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streamed_upload_round_trip_and_abort() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let key = "c/n1-chunk000000001";
        let mut up = s.begin(key).await.unwrap();
        up.part(Bytes::from_static(b"hello ")).await.unwrap();
        assert!(
            matches!(s.size(key).await, Err(StoreError::NotFound(_))),
            "not visible yet"
        );
        up.finish(Bytes::from_static(b"world")).await.unwrap();
        assert_eq!(s.size(key).await.unwrap(), 11);
        assert_eq!(&s.get_range(key, 6, 11).await.unwrap()[..], b"world");
        assert_eq!(
            &s.get_range(key, 6, u64::MAX).await.unwrap()[..],
            b"world",
            "clamped"
        );
        // An aborted replacement leaves the old object and no temp file.
        let mut up = s.begin(key).await.unwrap();
        up.part(Bytes::from_static(b"other")).await.unwrap();
        up.abort().await;
        assert_eq!(&s.get_range(key, 0, 11).await.unwrap()[..], b"hello world");
        assert_eq!(std::fs::read_dir(dir.path().join("c")).unwrap().count(), 1);
        s.delete(key).await.unwrap();
        assert!(matches!(s.size(key).await, Err(StoreError::NotFound(_))));
    }
}
