//! Reads of tiered chunks: fetch the header and frame index once per
//! object, then only the frames a read needs (one range GET for adjacent
//! frames); every frame is authenticated before it is decrypted. Decoded
//! frames stay in an LRU cache bounded in bytes, so re-reads cost no I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::format::{self, Entry, FormatError, Header, HEADER_LEN, TAG_LEN};
use super::keys::KeyRing;
use super::store::{AnyStore, ObjectStore, StoreError};

/// A read of a tiered chunk failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TierReadError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object is corrupt, forged, or needs a key that is not configured.
    #[error("tiered object {key}: {source}")]
    Format {
        /// Object key.
        key: String,
        /// What failed.
        #[source]
        source: FormatError,
    },
}

/// Header and index of one object.
#[derive(Debug)]
struct Meta {
    header: Header,
    entries: Vec<Entry>,
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

    async fn meta(&self, key: &str) -> Result<Arc<Meta>, TierReadError> {
        if let Some(m) = self.metas.lock().get(key) {
            return Ok(Arc::clone(m));
        }
        let head = self.store.get_range(key, 0, HEADER_LEN as u64).await?;
        let header = Header::parse(&head).map_err(|e| Self::bad(key, e))?;
        let keys = format::keys_for(&header, &self.ring).map_err(|e| Self::bad(key, e))?;
        let index = self
            .store
            .get_range(key, header.index_offset, header.object_len())
            .await?;
        let entries = format::parse_index(&header, keys, &index).map_err(|e| Self::bad(key, e))?;
        let meta = Arc::new(Meta { header, entries });
        let mut metas = self.metas.lock();
        if metas.len() > 10_000 {
            metas.clear(); // bounded: headers are cheap to fetch again
        }
        metas.insert(key.to_owned(), Arc::clone(&meta));
        Ok(meta)
    }

    /// Fetches and caches an object's header and index ahead of reads.
    ///
    /// # Errors
    /// Store or format errors.
    pub async fn prefetch(&self, key: &str) -> Result<(), TierReadError> {
        self.meta(key).await.map(drop)
    }

    /// Checks the object end to end (header, index, last frame): used to
    /// confirm an upload before the local copy is removed.
    ///
    /// # Errors
    /// The object is missing, of the wrong size, or does not authenticate.
    pub async fn verify(&self, key: &str, object_len: u64) -> Result<(), TierReadError> {
        self.metas.lock().remove(key);
        let size = self.store.size(key).await?;
        if size != object_len {
            return Err(Self::bad(
                key,
                FormatError::Corrupt(format!("store holds {size} bytes, uploaded {object_len}")),
            ));
        }
        let meta = self.meta(key).await?;
        if let Some(last) = meta.header.frame_count.checked_sub(1) {
            self.frames(key, &meta, last, last).await?;
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
            let end = b.offset + u64::from(b.len) + TAG_LEN as u64;
            let raw = self.store.get_range(key, start, end).await?;
            let keys = format::keys_for(&meta.header, &self.ring).map_err(|e| Self::bad(key, e))?;
            for i in lo..=hi {
                let e = &meta.entries[i as usize];
                let at = usize::try_from(e.offset - start).unwrap_or(usize::MAX);
                let bytes = raw.get(at..).unwrap_or_default();
                let plain = Bytes::from(
                    format::decode_frame(&meta.header, keys, i, e, bytes)
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

    /// Plaintext bytes `[start, end)` of the chunk in object `key`
    /// (clamped to its size).
    ///
    /// # Errors
    /// Store or format errors.
    pub async fn read_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<Bytes, TierReadError> {
        let meta = self.meta(key).await?;
        let end = end.min(meta.header.plain_size);
        if start >= end {
            return Ok(Bytes::new());
        }
        let (first, last) = (meta.header.frame_of(start), meta.header.frame_of(end - 1));
        let frames = self.frames(key, &meta, first, last).await?;
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
    /// the header).
    ///
    /// # Errors
    /// Store or format errors.
    pub async fn records(&self, key: &str) -> Result<Vec<u8>, TierReadError> {
        let meta = self.meta(key).await?;
        let h = &meta.header;
        let raw = self
            .store
            .get_range(
                key,
                h.records_offset,
                h.records_offset + u64::from(h.records_len) + TAG_LEN as u64,
            )
            .await?;
        let keys = format::keys_for(h, &self.ring).map_err(|e| Self::bad(key, e))?;
        format::decode_records(h, keys, &raw).map_err(|e| Self::bad(key, e))
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
