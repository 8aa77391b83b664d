//! Upgrading objects written in format 1 (before objects were bound to
//! their chunk) to format 2. When no upload waits, the tierer takes one
//! manifest entry without a header digest and, in one streamed pass,
//! reads its object frame by frame (each authenticated, decrypted,
//! decompressed), re-encodes it as format 2 with the same key and frame
//! size (tags bound to the category and chunk name), checks that it holds
//! the recorded number of messages before the upload may finish, uploads
//! it over the old object, reads it back whole, and records its header
//! digest. A format-2 object already under such an entry (a crash after
//! the upload) is only verified and recorded. The old object stays
//! readable until the new one is complete; a reader that cached the old
//! header reads again once (`reader.rs`). Never touches local chunks.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::format::{self, FormatError, Identity, VERSION};
use super::keys::Keys;
use super::manifest::TieredChunk;
use super::meta::{self, Meta, ObjectRef};
use super::pipeline::{self, Job, PlainSource};
use super::reader::TierReadError;
use super::store::{AnyStore, ObjectStore};
use super::upload::UploadError;
use super::Tiering;
use crate::names::{Category, ChunkName};
use crate::storage::Storage;

/// Largest range of old frames fetched at once.
const FETCH_SPAN: u64 = 4 << 20;

/// A format-1 object as the encoder's plaintext source: frames fetched a
/// few MiB at a time and decoded one by one (on the encoder's blocking
/// thread, through the runtime's handle), then its records.
struct OldObject {
    store: AnyStore,
    key: String,
    meta: Arc<Meta>,
    keys: Keys,
    runtime: tokio::runtime::Handle,
    /// Fetched ciphertext of frames `first..=last`, with `first` and `last`.
    fetched: Option<(Bytes, usize, usize)>,
    next: usize,
    messages: u64,
    recorded_messages: u64,
    records_done: bool,
}

impl OldObject {
    fn bad(&self, e: FormatError) -> UploadError {
        UploadError::Source(TierReadError::Format {
            key: self.key.clone(),
            source: e,
        })
    }

    fn get(&self, start: u64, end: u64) -> Result<Bytes, UploadError> {
        self.runtime
            .block_on(self.store.get_range(&self.key, start, end))
            .map_err(|e| UploadError::Source(e.into()))
    }
}

impl PlainSource for OldObject {
    fn read_frame(&mut self, len: usize, buf: &mut Vec<u8>) -> Result<(), UploadError> {
        let entries = &self.meta.entries;
        let e = *entries
            .get(self.next)
            .ok_or_else(|| self.bad(FormatError::Truncated("frames")))?;
        let held = matches!(&self.fetched, Some((_, a, b)) if (*a..=*b).contains(&self.next));
        if !held {
            let mut last = self.next;
            while entries
                .get(last + 1)
                .is_some_and(|f| f.end() - e.offset <= FETCH_SPAN)
            {
                last += 1;
            }
            let raw = self.get(e.offset, entries[last].end())?;
            self.fetched = Some((raw, self.next, last));
        }
        let Some((raw, first, _)) = &self.fetched else {
            return Err(self.bad(FormatError::Truncated("frames")));
        };
        let at = usize::try_from(e.offset - entries[*first].offset).unwrap_or(usize::MAX);
        let frame = u32::try_from(self.next).unwrap_or(u32::MAX);
        let plain = format::decode_frame(
            &self.meta.header,
            &self.keys,
            &self.meta.tagger,
            frame,
            &e,
            raw.get(at..).unwrap_or_default(),
        )
        .map_err(|err| self.bad(err))?;
        if plain.len() != len {
            return Err(self.bad(FormatError::Corrupt(format!(
                "frame {frame} has {} bytes, expected {len}",
                plain.len()
            ))));
        }
        self.messages += memchr::memchr_iter(b'\n', &plain).count() as u64;
        *buf = plain;
        self.next += 1;
        Ok(())
    }

    fn read_records(&mut self, buf: &mut Vec<u8>) -> Result<(), UploadError> {
        buf.clear();
        if self.records_done {
            return Ok(());
        }
        // Every frame is read: the count must match before the upload can
        // finish (a source error abandons it).
        if self.messages != self.recorded_messages {
            return Err(UploadError::Messages {
                found: self.messages,
                recorded: self.recorded_messages,
            });
        }
        let h = &self.meta.header;
        let at = self.meta.layout.records_offset;
        let raw = self.get(at, at + u64::from(h.records_len) + format::TAG_LEN as u64)?;
        *buf = format::decode_records(h, &self.keys, &self.meta.tagger, &raw)
            .map_err(|e| self.bad(e))?;
        self.records_done = true;
        Ok(())
    }
}

impl Tiering {
    /// A tiered chunk whose manifest entry has no header digest (written
    /// before format 2) and is not backing off.
    pub(super) fn next_upgrade(&self) -> Option<(Category, ChunkName, TieredChunk)> {
        let failing = self.failing.lock();
        self.manifest.first_unbound(|cat, chunk| {
            failing
                .get(&(cat.clone(), chunk.clone()))
                .is_none_or(|f| f.retry_at <= Instant::now())
        })
    }

    /// Upgrades one object (module docs); failures back off like uploads.
    pub(super) async fn upgrade(
        &self,
        storage: &Storage,
        cat: &Category,
        chunk: &ChunkName,
        entry: TieredChunk,
        stop: &CancellationToken,
    ) {
        let started = Instant::now();
        let result = self.try_upgrade(storage, cat, chunk, entry, stop).await;
        if matches!(result, Err(UploadError::Stopped)) {
            return;
        }
        let what = (
            "upgraded a tiered object to format 2",
            "upgrading a tiered object to format 2 failed; the old one stays readable",
        );
        self.settle(cat, chunk, what, result, started);
    }

    async fn try_upgrade(
        &self,
        storage: &Storage,
        cat: &Category,
        chunk: &ChunkName,
        entry: TieredChunk,
        stop: &CancellationToken,
    ) -> Result<TieredChunk, UploadError> {
        let key = self.key(cat, chunk);
        let (c, n) = (cat.to_string(), chunk.to_string());
        let id = Identity {
            category: &c,
            chunk: &n,
        };
        let old = ObjectRef {
            key: &key,
            id,
            entry,
        };
        let meta = Arc::new(
            meta::fetch(&self.store, &self.ring, &old)
                .await
                .map_err(UploadError::Source)?,
        );
        let upgraded = if meta.header.version == VERSION {
            TieredChunk {
                header_digest: Some(meta.header.digest()),
                object_len: meta.layout.object_len,
                ..entry
            }
        } else {
            let keys = format::keys_for(&meta.header, &self.ring)
                .map_err(|e| {
                    UploadError::Source(TierReadError::Format {
                        key: key.clone(),
                        source: e,
                    })
                })?
                .clone();
            let job = Job {
                key: key.clone(),
                category: c.clone(),
                chunk: n.clone(),
                plain_size: entry.size,
                records_len: meta.header.records_len,
                frame_size: meta.header.frame_size,
                level: self.cfg.level,
            };
            let source = OldObject {
                store: self.store.clone(),
                key: key.clone(),
                meta: Arc::clone(&meta),
                keys: keys.clone(),
                runtime: tokio::runtime::Handle::current(),
                fetched: None,
                next: 0,
                messages: 0,
                recorded_messages: entry.messages,
                records_done: false,
            };
            let done = pipeline::stream(&self.store, job, keys, source, stop).await?;
            TieredChunk {
                object_len: done.encoded.object_len,
                header_digest: Some(done.encoded.header_digest),
                ..entry
            }
        };
        self.reader.forget(&key);
        let new = ObjectRef {
            entry: upgraded,
            ..old
        };
        self.reader
            .verify_object(&new)
            .await
            .map_err(UploadError::Verify)?;
        if storage.category(cat).and_then(|l| l.chunk(chunk)).is_none()
            || self.manifest.get(cat, chunk) != Some(entry)
        {
            // Deleted meanwhile: the next pass collects the object.
            return Err(UploadError::ChunkDeleted);
        }
        self.manifest.add(cat, chunk, upgraded)?;
        self.reader.forget(&key);
        Ok(upgraded)
    }
}
