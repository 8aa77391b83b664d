//! One streamed object upload. A blocking thread pulls plaintext frames
//! from a [`PlainSource`], encodes them ([`Encoder`]) into parts of
//! [`PART_SIZE`] bytes and hands each over a channel to the async side,
//! which sends it to the store while the next is encoded. Two part buffers
//! take turns (the encoder waits for one to come back from the store), so
//! an upload holds two parts and one frame's buffers, whatever the chunk
//! size: the whole chunk is never in memory. Nothing becomes visible in the
//! store unless every part was sent and the encoder finished; a failure or
//! a stop aborts the upload. Never verifies, records or evicts.

use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::encode::{Encoded, Encoder, Spec};
use super::format::{FormatError, Identity};
use super::keys::Keys;
use super::store::{AnyStore, ObjectStore, ObjectUpload, StoreError};
use super::upload::UploadError;

/// Bytes per part (every part but the last).
pub const PART_SIZE: usize = 8 << 20;
/// Part buffers of one upload.
const BUFFERS: usize = 2;

/// Where the plaintext of an object comes from (called on a blocking
/// thread).
pub(super) trait PlainSource: Send + 'static {
    /// Replaces `buf` with the next `len` bytes of the chunk.
    ///
    /// # Errors
    /// The bytes cannot be read, or are not what was expected.
    fn read_frame(&mut self, len: usize, buf: &mut Vec<u8>) -> Result<(), UploadError>;
    /// Replaces `buf` with the next piece of the batch index records;
    /// leaves it empty at the end.
    ///
    /// # Errors
    /// The records cannot be read.
    fn read_records(&mut self, buf: &mut Vec<u8>) -> Result<(), UploadError>;
}

/// The object to write: whose it is and its shape.
#[derive(Debug, Clone)]
pub(super) struct Job {
    /// Object key.
    pub key: String,
    /// Category name.
    pub category: String,
    /// Chunk name.
    pub chunk: String,
    /// Bytes of the chunk.
    pub plain_size: u64,
    /// Bytes of batch index records.
    pub records_len: u32,
    /// Plaintext bytes per frame.
    pub frame_size: u32,
    /// zstd level.
    pub level: i32,
}

/// What was uploaded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Streamed {
    /// The object.
    pub encoded: Encoded,
    /// Messages (newlines) in the chunk.
    pub messages: u64,
}

enum Piece {
    Part(Bytes),
    Last(Bytes),
}

/// Encodes `job` from `source` with `keys` and a fresh random IV, and
/// uploads it to `store`.
///
/// # Errors
/// The source, the encoder or the store failed, or `stop` was cancelled:
/// nothing new is visible at the key then.
pub(super) async fn stream<S: PlainSource>(
    store: &AnyStore,
    job: Job,
    keys: Keys,
    source: S,
    stop: &CancellationToken,
) -> Result<Streamed, UploadError> {
    let mut iv = [0u8; 16];
    getrandom::fill(&mut iv).map_err(UploadError::RandomIv)?;
    let (tx, rx) = mpsc::channel::<Piece>(1);
    let (recycle_tx, recycle_rx) = std_mpsc::channel::<Vec<u8>>();
    let key = job.key.clone();
    let encoder = tokio::task::spawn_blocking(move || {
        encode_parts(&job, &keys, iv, source, &tx, &recycle_rx)
    });
    let sent = send_parts(store, &key, rx, recycle_tx, stop).await;
    // Both channels are closed now (the part receiver and the buffer
    // sender dropped), so the encoder ends at its next part if it has not
    // already.
    let encoded = encoder.await.map_err(UploadError::EncodeTask)?;
    match (sent, encoded) {
        (Ok(()), Ok(streamed)) => Ok(streamed),
        // The encoder's failure is why the parts stopped.
        (Err(UploadError::Abandoned), Err(e)) => Err(e),
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
    }
}

/// Part buffers of one upload, taking turns: a new one while fewer than
/// [`BUFFERS`] exist, else the next one the store is done with (an empty
/// one stands in for a buffer the store kept).
struct Buffers<'a> {
    recycled: &'a std_mpsc::Receiver<Vec<u8>>,
    allocated: usize,
    capacity: usize,
}

impl Buffers<'_> {
    fn next(&mut self) -> Result<Vec<u8>, UploadError> {
        if self.allocated < BUFFERS {
            self.allocated += 1;
            return Ok(Vec::with_capacity(self.capacity));
        }
        let mut b = self.recycled.recv().map_err(|_| UploadError::Abandoned)?;
        b.reserve(self.capacity);
        Ok(b)
    }
}

/// The blocking side: frames → parts → channel.
fn encode_parts<S: PlainSource>(
    job: &Job,
    keys: &Keys,
    iv: [u8; 16],
    mut source: S,
    tx: &mpsc::Sender<Piece>,
    recycled: &std_mpsc::Receiver<Vec<u8>>,
) -> Result<Streamed, UploadError> {
    let mut buffers = Buffers {
        recycled,
        allocated: 0,
        capacity: PART_SIZE + zstd::zstd_safe::compress_bound(job.frame_size as usize) + 4096,
    };
    let mut out = buffers.next()?;
    let send = |piece: Piece| tx.blocking_send(piece).map_err(|_| UploadError::Abandoned);
    // Sends `out` as a part once it is full, continuing in another buffer.
    let mut flush = |out: &mut Vec<u8>| -> Result<(), UploadError> {
        if out.len() >= PART_SIZE {
            let next = buffers.next()?;
            send(Piece::Part(Bytes::from(std::mem::replace(out, next))))?;
        }
        Ok(())
    };
    let spec = Spec {
        id: Identity {
            category: &job.category,
            chunk: &job.chunk,
        },
        plain_size: job.plain_size,
        records_len: job.records_len,
        frame_size: job.frame_size,
        level: job.level,
    };
    let mut enc = Encoder::new(keys, iv, spec, &mut out)?;
    let mut buf = Vec::with_capacity(job.frame_size as usize);
    let mut messages = 0u64;
    loop {
        let n = enc.next_frame_len();
        if n == 0 {
            break;
        }
        source.read_frame(n, &mut buf)?;
        if buf.len() != n {
            return Err(FormatError::Misuse("source gave a frame of the wrong length").into());
        }
        messages += memchr::memchr_iter(b'\n', &buf).count() as u64;
        enc.frame(&buf, &mut out)?;
        flush(&mut out)?;
    }
    loop {
        source.read_records(&mut buf)?;
        if buf.is_empty() {
            break;
        }
        enc.records(&buf, &mut out)?;
        flush(&mut out)?;
    }
    let encoded = enc.finish(&mut out)?;
    send(Piece::Last(Bytes::from(out)))?;
    Ok(Streamed { encoded, messages })
}

/// The async side: channel → store. An upload that ends without its last
/// part (the encoder failed, or `stop`) is aborted.
async fn send_parts(
    store: &AnyStore,
    key: &str,
    mut rx: mpsc::Receiver<Piece>,
    recycle: std_mpsc::Sender<Vec<u8>>,
    stop: &CancellationToken,
) -> Result<(), UploadError> {
    let mut upload = store.begin(key).await?;
    loop {
        let piece = tokio::select! {
            p = rx.recv() => p,
            () = stop.cancelled() => {
                upload.abort().await;
                return Err(UploadError::Stopped);
            }
        };
        match piece {
            Some(Piece::Part(bytes)) => {
                if let Err(e) = upload.part(bytes.clone()).await {
                    upload.abort().await;
                    return Err(e.into());
                }
                // The store is done with the part: hand its buffer back.
                let buf = match bytes.try_into_mut() {
                    Ok(mut b) => {
                        b.clear();
                        b.into()
                    }
                    Err(_) => Vec::new(),
                };
                let _ = recycle.send(buf);
            }
            Some(Piece::Last(bytes)) => return upload.finish(bytes).await.map_err(Into::into),
            None => {
                upload.abort().await;
                return Err(UploadError::Abandoned);
            }
        }
    }
}

impl From<StoreError> for UploadError {
    fn from(e: StoreError) -> Self {
        Self::Put(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::format::decode_all;
    use crate::tier::keys::KeyRing;
    use crate::tier::store::LocalStore;

    /// Plaintext from memory; fails at byte `fail_at` if set.
    struct Mem {
        data: Vec<u8>,
        pos: usize,
        records: Option<Vec<u8>>,
        fail_at: Option<usize>,
    }

    impl PlainSource for Mem {
        fn read_frame(&mut self, len: usize, buf: &mut Vec<u8>) -> Result<(), UploadError> {
            if self.fail_at.is_some_and(|f| f < self.pos + len) {
                return Err(UploadError::Read {
                    path: "mem".into(),
                    source: std::io::Error::other("injected"),
                });
            }
            buf.clear();
            buf.extend_from_slice(&self.data[self.pos..self.pos + len]);
            self.pos += len;
            Ok(())
        }

        fn read_records(&mut self, buf: &mut Vec<u8>) -> Result<(), UploadError> {
            *buf = self.records.take().unwrap_or_default();
            Ok(())
        }
    }

    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn job(plain_size: u64) -> Job {
        Job {
            key: "c/n1-chunk000000001".into(),
            category: "c".into(),
            chunk: "n1-chunk000000001".into(),
            plain_size,
            records_len: 3,
            frame_size: 1 << 20,
            level: 1,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_multi_part_object_streams_and_a_failed_source_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::Local(LocalStore::open(dir.path()).unwrap());
        let keys = Keys::derive(&[4u8; 32]);
        // Incompressible: three parts.
        let data = noise(20 << 20);
        let src = Mem {
            data: data.clone(),
            pos: 0,
            records: Some(b"rec".to_vec()),
            fail_at: None,
        };
        let stop = CancellationToken::new();
        let done = stream(&store, job(20 << 20), keys.clone(), src, &stop)
            .await
            .unwrap();
        let obj = std::fs::read(dir.path().join("c/n1-chunk000000001")).unwrap();
        assert_eq!(done.encoded.object_len, obj.len() as u64);
        assert!(obj.len() > 2 * PART_SIZE);
        let id = Identity {
            category: "c",
            chunk: "n1-chunk000000001",
        };
        let (plain, records) =
            decode_all(&obj, &KeyRing::new(keys.clone(), Vec::new()), id).unwrap();
        assert!(plain == data && records == b"rec");
        // A source failing after two parts: the old object stays, no temp
        // file is left, and the encoder's error is reported.
        let src = Mem {
            data,
            pos: 0,
            records: None,
            fail_at: Some(18 << 20),
        };
        let e = stream(&store, job(20 << 20), keys, src, &stop)
            .await
            .unwrap_err();
        assert!(matches!(e, UploadError::Read { .. }), "{e}");
        assert_eq!(
            std::fs::read(dir.path().join("c/n1-chunk000000001")).unwrap(),
            obj
        );
        assert_eq!(std::fs::read_dir(dir.path().join("c")).unwrap().count(), 1);
    }
}
