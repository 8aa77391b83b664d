//! Reads of tiered chunks: check and fetch the header and frame index once
//! per object (`meta.rs`), then only the frames a read needs (one range
//! GET for adjacent frames); every frame is authenticated before it is
//! decrypted. Decoded frames stay in an LRU cache bounded in bytes, so
//! re-reads cost no I/O. Also the check of an upload: the whole object
//! read back and every tag verified, in bounded pieces.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use hmac::Mac;
use parking_lot::Mutex;

use super::format::{self, FormatError, HEADER_LEN, RECORDS_FRAME, TAG_LEN};
use super::keys::KeyRing;
use super::meta::{self, Meta, ObjectRef};
use super::store::{AnyStore, ObjectStore, StoreError};

/// Largest range fetched at once when an upload is read back.
const VERIFY_SPAN: u64 = 4 << 20;

/// A read of a tiered chunk failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TierReadError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object is corrupt, forged, another chunk's, or needs a key
    /// that is not configured.
    #[error("tiered object {key}: {source}")]
    Format {
        /// Object key.
        key: String,
        /// What failed.
        #[source]
        source: FormatError,
    },
    /// The object is not the one the manifest recorded for its chunk.
    #[error("tiered object {key} is not the one recorded for its chunk: {what}")]
    Mismatch {
        /// Object key.
        key: String,
        /// How it differs.
        what: String,
    },
    /// The chunk has no entry in the tier manifest.
    #[error("chunk {0} is not in the tier manifest")]
    NotTiered(String),
}

#[derive(Debug, Default)]
struct Lru {
    frames: HashMap<(String, u32), Bytes>,
    order: VecDeque<(String, u32)>,
    bytes: usize,
}

/// Cached, authenticated reads of tiered objects.
#[derive(Debug)]
pub struct TierReader {
    store: AnyStore,
    ring: KeyRing,
    metas: Mutex<HashMap<String, Arc<Meta>>>,
    cache: Mutex<Lru>,
    cache_limit: usize,
}

impl TierReader {
    /// A reader over `store` with a frame cache of `cache_limit` bytes.
    #[must_use]
    pub fn new(store: AnyStore, ring: KeyRing, cache_limit: usize) -> Self {
        Self {
            store,
            ring,
            metas: Mutex::new(HashMap::new()),
            cache: Mutex::new(Lru::default()),
            cache_limit,
        }
    }

    fn bad(key: &str, source: FormatError) -> TierReadError {
        TierReadError::Format {
            key: key.to_owned(),
            source,
        }
    }

    async fn meta(&self, obj: &ObjectRef<'_>) -> Result<Arc<Meta>, TierReadError> {
        if let Some(m) = self.metas.lock().get(obj.key) {
            return Ok(Arc::clone(m));
        }
        let meta = match meta::fetch(&self.store, &self.ring, obj).await {
            // A header and an index fetched across a replacement of the
            // object (an upgrade) do not authenticate: fetch both again
            // once. A damaged object fails the second time too.
            Err(TierReadError::Format { .. }) => meta::fetch(&self.store, &self.ring, obj).await?,
            r => r?,
        };
        let meta = Arc::new(meta);
        let mut metas = self.metas.lock();
        if metas.len() > 10_000 {
            metas.clear(); // bounded: headers are cheap to fetch again
        }
        metas.insert(obj.key.to_owned(), Arc::clone(&meta));
        Ok(meta)
    }

    /// Whether the object under `obj.key` now has another header than the
    /// one `used` was read from (it was replaced, e.g. upgraded, while a
    /// read was using `used`). Compared with the header the failed read
    /// used, not with the cache: the replacer forgets the cache, and
    /// another reader may already have cached the new header.
    async fn replaced_since(&self, obj: &ObjectRef<'_>, used: &Meta) -> bool {
        match self.store.get_range(obj.key, 0, HEADER_LEN as u64).await {
            Ok(head) => head.as_ref() != used.header.bytes(),
            Err(_) => false,
        }
    }

    /// Fetches, checks and caches an object's header and index ahead of
    /// reads.
    ///
    /// # Errors
    /// Store, binding or format errors.
    pub async fn prefetch(&self, obj: &ObjectRef<'_>) -> Result<(), TierReadError> {
        self.meta(obj).await.map(drop)
    }

    /// Reads the whole object back and checks it end to end before its
    /// chunk's local copy may go: the stored size, the header against
    /// `obj.entry` (digest), the index, every frame's tag and the records'
    /// tag. An object of up to 4 MiB is fetched with one GET; a larger one
    /// in range GETs of at most 4 MiB (whole frames).
    ///
    /// # Errors
    /// The object is missing, of the wrong size, or does not authenticate.
    pub async fn verify_object(&self, obj: &ObjectRef<'_>) -> Result<(), TierReadError> {
        self.forget(obj.key);
        let len = obj.entry.object_len;
        let wrong_size = |size: u64| {
            Self::bad(
                obj.key,
                FormatError::Corrupt(format!("store holds {size} bytes, uploaded {len}")),
            )
        };
        if len <= VERIFY_SPAN {
            // One byte more than uploaded, to see a longer object too.
            let all = self.store.get_range(obj.key, 0, len + 1).await?;
            if all.len() as u64 != len {
                return Err(wrong_size(all.len() as u64));
            }
            let meta = meta::from_bytes(&self.ring, obj, &all)?;
            let last = meta.entries.len().saturating_sub(1);
            Self::verify_frames(obj.key, &meta, 0, last, &all, 0)?;
            let mut mac = meta.tagger.start(&RECORDS_FRAME.to_le_bytes());
            let at = usize::try_from(meta.layout.records_offset).unwrap_or(usize::MAX);
            let (records, tag) = all
                .get(at..usize::try_from(meta.layout.index_offset).unwrap_or(usize::MAX))
                .and_then(|r| r.split_at_checked(meta.header.records_len as usize))
                .ok_or_else(|| Self::bad(obj.key, FormatError::Truncated("records")))?;
            mac.update(records);
            return mac
                .verify_slice(tag)
                .map_err(|_| Self::bad(obj.key, FormatError::BadTag("records")));
        }
        let size = self.store.size(obj.key).await?;
        if size != len {
            return Err(wrong_size(size));
        }
        let meta = meta::fetch(&self.store, &self.ring, obj).await?;
        let mut i = 0usize;
        while let Some(first) = meta.entries.get(i) {
            let mut j = i;
            while meta
                .entries
                .get(j + 1)
                .is_some_and(|e| e.end() - first.offset <= VERIFY_SPAN)
            {
                j += 1;
            }
            let raw = self
                .store
                .get_range(obj.key, first.offset, meta.entries[j].end())
                .await?;
            Self::verify_frames(obj.key, &meta, i, j, &raw, first.offset)?;
            i = j + 1;
        }
        let mut mac = meta.tagger.start(&RECORDS_FRAME.to_le_bytes());
        let (mut at, end) = (
            meta.layout.records_offset,
            meta.layout.records_offset + u64::from(meta.header.records_len),
        );
        while at < end {
            let to = end.min(at + VERIFY_SPAN);
            let piece = self.store.get_range(obj.key, at, to).await?;
            if piece.len() as u64 != to - at {
                return Err(Self::bad(obj.key, FormatError::Truncated("records")));
            }
            mac.update(&piece);
            at = to;
        }
        let tag = self
            .store
            .get_range(obj.key, end, end + TAG_LEN as u64)
            .await?;
        mac.verify_slice(&tag)
            .map_err(|_| Self::bad(obj.key, FormatError::BadTag("records")))
    }

    /// Checks the tags of frames `i..=j`, held in `raw` from object offset
    /// `base`.
    fn verify_frames(
        key: &str,
        meta: &Meta,
        i: usize,
        j: usize,
        raw: &[u8],
        base: u64,
    ) -> Result<(), TierReadError> {
        for (n, e) in meta
            .entries
            .get(i..=j)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let at = usize::try_from(e.offset - base).unwrap_or(usize::MAX);
            let frame = u32::try_from(i + n).unwrap_or(u32::MAX);
            format::verify_frame(&meta.tagger, frame, e, raw.get(at..).unwrap_or_default())
                .map_err(|err| Self::bad(key, err))?;
        }
        Ok(())
    }

    /// Decoded frames `first..=last`, from the cache or one range GET.
    async fn frames(
        &self,
        key: &str,
        meta: &Meta,
        first: u32,
        last: u32,
    ) -> Result<Vec<Bytes>, TierReadError> {
        let mut out: Vec<Option<Bytes>> = {
            let c = self.cache.lock();
            (first..=last)
                .map(|i| c.frames.get(&(key.to_owned(), i)).cloned())
                .collect()
        };
        let missing: Vec<u32> = (first..=last)
            .filter(|i| out[(i - first) as usize].is_none())
            .collect();
        if let (Some(&lo), Some(&hi)) = (missing.first(), missing.last()) {
            let (a, b) = (&meta.entries[lo as usize], &meta.entries[hi as usize]);
            let start = a.offset;
            let raw = self.store.get_range(key, start, b.end()).await?;
            let keys = format::keys_for(&meta.header, &self.ring).map_err(|e| Self::bad(key, e))?;
            for i in lo..=hi {
                let e = &meta.entries[i as usize];
                let at = usize::try_from(e.offset - start).unwrap_or(usize::MAX);
                let bytes = raw.get(at..).unwrap_or_default();
                let plain = Bytes::from(
                    format::decode_frame(&meta.header, keys, &meta.tagger, i, e, bytes)
                        .map_err(|err| Self::bad(key, err))?,
                );
                self.remember(key, i, plain.clone());
                if (first..=last).contains(&i) {
                    out[(i - first) as usize] = Some(plain);
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn remember(&self, key: &str, i: u32, frame: Bytes) {
        let mut c = self.cache.lock();
        let k = (key.to_owned(), i);
        if c.frames.contains_key(&k) {
            return;
        }
        c.bytes += frame.len();
        c.frames.insert(k.clone(), frame);
        c.order.push_back(k);
        while c.bytes > self.cache_limit {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some(f) = c.frames.remove(&old) {
                c.bytes -= f.len();
            }
        }
    }

    /// Plaintext bytes `[start, end)` of the chunk in `obj` (clamped to
    /// its size). An object replaced while it was read (an upgrade) is
    /// read again once, with its new header.
    ///
    /// # Errors
    /// Store, binding or format errors.
    pub async fn read_range(
        &self,
        obj: &ObjectRef<'_>,
        start: u64,
        end: u64,
    ) -> Result<Bytes, TierReadError> {
        let meta = self.meta(obj).await?;
        self.read_range_from(obj, meta, start, end).await
    }

    /// [`read_range`](Self::read_range) with the header and index `meta`
    /// fetched before.
    async fn read_range_from(
        &self,
        obj: &ObjectRef<'_>,
        meta: Arc<Meta>,
        start: u64,
        end: u64,
    ) -> Result<Bytes, TierReadError> {
        match self.read_range_with(obj.key, &meta, start, end).await {
            Err(TierReadError::Format { .. }) if self.replaced_since(obj, &meta).await => {
                self.forget(obj.key);
                let meta = self.meta(obj).await?;
                self.read_range_with(obj.key, &meta, start, end).await
            }
            r => r,
        }
    }

    async fn read_range_with(
        &self,
        key: &str,
        meta: &Meta,
        start: u64,
        end: u64,
    ) -> Result<Bytes, TierReadError> {
        let end = end.min(meta.header.plain_size);
        if start >= end {
            return Ok(Bytes::new());
        }
        let (first, last) = (meta.header.frame_of(start), meta.header.frame_of(end - 1));
        let frames = self.frames(key, meta, first, last).await?;
        let base = u64::from(first) * u64::from(meta.header.frame_size);
        let (s, e) = (
            usize::try_from(start - base).unwrap_or(usize::MAX),
            usize::try_from(end - base).unwrap_or(usize::MAX),
        );
        if frames.len() == 1 {
            return Ok(frames[0].slice(s..e));
        }
        let mut buf = Vec::with_capacity(e - s);
        let mut pos = 0usize;
        for f in &frames {
            let (fs, fe) = (pos, pos + f.len());
            let (a, b) = (s.max(fs), e.min(fe));
            if a < b {
                buf.extend_from_slice(&f[a - fs..b - fs]);
            }
            pos = fe;
        }
        Ok(Bytes::from(buf))
    }

    /// The chunk's batch index records (as in its `.idx` sidecar, without
    /// the header). An object replaced while it was read is read again
    /// once, as in [`read_range`](Self::read_range).
    ///
    /// # Errors
    /// Store, binding or format errors.
    pub async fn records(&self, obj: &ObjectRef<'_>) -> Result<Vec<u8>, TierReadError> {
        let meta = self.meta(obj).await?;
        match self.records_with(obj.key, &meta).await {
            Err(TierReadError::Format { .. }) if self.replaced_since(obj, &meta).await => {
                self.forget(obj.key);
                let meta = self.meta(obj).await?;
                self.records_with(obj.key, &meta).await
            }
            r => r,
        }
    }

    async fn records_with(&self, key: &str, meta: &Meta) -> Result<Vec<u8>, TierReadError> {
        let (h, at) = (&meta.header, meta.layout.records_offset);
        let raw = self
            .store
            .get_range(key, at, at + u64::from(h.records_len) + TAG_LEN as u64)
            .await?;
        let keys = format::keys_for(h, &self.ring).map_err(|e| Self::bad(key, e))?;
        format::decode_records(h, keys, &meta.tagger, &raw).map_err(|e| Self::bad(key, e))
    }

    /// Drops cached data of an object (deleted or replaced).
    pub fn forget(&self, key: &str) {
        self.metas.lock().remove(key);
        let mut c = self.cache.lock();
        let keys: Vec<_> = c.frames.keys().filter(|(k, _)| k == key).cloned().collect();
        for k in keys {
            if let Some(f) = c.frames.remove(&k) {
                c.bytes -= f.len();
            }
        }
        c.order.retain(|(k, _)| k != key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::encode::encode;
    use crate::tier::format::Identity;
    use crate::tier::keys::Keys;
    use crate::tier::manifest::TieredChunk;
    use crate::tier::store::{LocalStore, ObjectUpload};

    const ID: Identity<'static> = Identity {
        category: "c",
        chunk: "n1-chunk000000001",
    };

    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    async fn put(store: &AnyStore, key: &str, bytes: &[u8]) {
        let up = store.begin(key).await.unwrap();
        up.finish(Bytes::copy_from_slice(bytes)).await.unwrap();
    }

    /// A read that fetched the header before the object was replaced (an
    /// upgrade re-encodes it with another IV) and its frames after, with
    /// the cache forgotten by the replacer in between, reads the new
    /// object instead of failing (hit once in CI as a `502`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_across_a_replacement_of_its_object_reads_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::Local(LocalStore::open(dir.path()).unwrap());
        let keys = Keys::derive(&[6u8; 32]);
        let reader = TierReader::new(store.clone(), KeyRing::new(keys.clone(), Vec::new()), 0);
        let plain = noise(200_000);
        let records = noise(64);
        let old = encode(&plain, &records, &keys, [3; 16], ID, 1, 1 << 16).unwrap();
        let new = encode(&plain, &records, &keys, [4; 16], ID, 1, 1 << 16).unwrap();
        let r = ObjectRef {
            key: "c/n1-chunk000000001",
            id: ID,
            entry: TieredChunk {
                size: plain.len() as u64,
                messages: 0,
                object_len: old.len() as u64,
                key_id: keys.id,
                header_digest: None,
            },
        };
        put(&store, r.key, &old).await;
        let before = reader.meta(&r).await.unwrap();
        put(&store, r.key, &new).await;
        reader.forget(r.key);
        let got = reader
            .read_range_from(&r, Arc::clone(&before), 1000, 150_000)
            .await
            .unwrap();
        assert_eq!(got, plain[1000..150_000]);
        // The same for the records, with the old header cached again.
        reader.metas.lock().insert(r.key.to_owned(), before);
        assert_eq!(reader.records(&r).await.unwrap(), records);
        // A damaged object is still an error, not a retry loop.
        let mut bad = new.clone();
        bad[HEADER_LEN + 10] ^= 1;
        put(&store, r.key, &bad).await;
        reader.forget(r.key);
        assert!(reader.read_range(&r, 0, 100).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flipped_byte_anywhere_fails_the_read_back_small_or_large() {
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::Local(LocalStore::open(dir.path()).unwrap());
        let keys = Keys::derive(&[6u8; 32]);
        let reader = TierReader::new(
            store.clone(),
            KeyRing::new(keys.clone(), Vec::new()),
            1 << 20,
        );
        // 300 KB (one GET) and 10 MB (range GETs) of incompressible bytes.
        for plain in [noise(300_000), noise(10_000_000)] {
            let records = noise(5000);
            let obj = encode(&plain, &records, &keys, [3; 16], ID, 1, 1 << 20).unwrap();
            let entry = TieredChunk {
                size: plain.len() as u64,
                messages: 0,
                object_len: obj.len() as u64,
                key_id: keys.id,
                header_digest: Some(format::digest(&obj[..HEADER_LEN])),
            };
            let r = ObjectRef {
                key: "c/n1-chunk000000001",
                id: ID,
                entry,
            };
            put(&store, r.key, &obj).await;
            reader.verify_object(&r).await.unwrap();
            // A middle frame, the records, the index, one byte too many.
            for at in [
                obj.len() / 2,
                obj.len() - 16 * 12 - 32 - 100,
                obj.len() - 40,
            ] {
                let mut bad = obj.clone();
                bad[at] ^= 4;
                put(&store, r.key, &bad).await;
                assert!(
                    reader.verify_object(&r).await.is_err(),
                    "flip at {at} of {}",
                    obj.len()
                );
            }
            let mut longer = obj.clone();
            longer.push(0);
            put(&store, r.key, &longer).await;
            assert!(reader.verify_object(&r).await.is_err(), "longer object");
            // Read as another chunk: refused.
            put(&store, r.key, &obj).await;
            let other = ObjectRef {
                id: Identity {
                    category: "c",
                    chunk: "n1-chunk000000002",
                },
                ..r
            };
            assert!(reader.verify_object(&other).await.is_err());
        }
    }
}
