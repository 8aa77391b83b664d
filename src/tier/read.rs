//! Reads of tiered chunks: `/read`, the boundary check of group acks, and
//! `/peer/fetch` batches. The rules are the local ones
//! (`storage::chunk::window` and `storage::chunk::batches`): this file only fetches, through the cached
//! [`TierReader`](super::reader::TierReader), the bytes and index records
//! they ask for. Never writes, never touches local chunk files.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::format::Identity;
use super::meta::ObjectRef;
use super::reader::TierReadError;
use super::{TierError, Tiering};
use crate::names::{Category, ChunkName};
use crate::storage::chunk::batches::{self, BatchSelector};
use crate::storage::chunk::index::{IndexFormat, Record};
use crate::storage::chunk::window::{self, ReadRequest, Window};
use crate::storage::chunk::{Chunk, ReadOutcome};

/// The object key and chunk name of a tiered chunk (the category is
/// borrowed), for its identity.
struct Names<'c> {
    key: String,
    category: &'c Category,
    chunk: String,
}

impl Tiering {
    fn names<'c>(&self, category: &'c Category, chunk: &ChunkName) -> Names<'c> {
        Names {
            key: self.key(category, chunk),
            category,
            chunk: chunk.to_string(),
        }
    }

    /// The object of a tiered chunk as the manifest records it.
    fn object<'a>(
        &self,
        category: &Category,
        chunk: &ChunkName,
        names: &'a Names<'_>,
    ) -> Result<ObjectRef<'a>, TierReadError> {
        let entry = self
            .manifest
            .get(category, chunk)
            .ok_or_else(|| TierReadError::NotTiered(names.key.clone()))?;
        Ok(ObjectRef {
            key: &names.key,
            id: Identity {
                category: names.category.as_str(),
                chunk: &names.chunk,
            },
            entry,
        })
    }

    /// A `/read` of a tiered chunk: whole messages from `off`, at most
    /// `max_size` bytes; same rules as a local read.
    ///
    /// # Errors
    /// Store or authentication failures ([`TierError::Read`]), and the
    /// usual offset errors ([`TierError::Storage`]).
    pub async fn read(
        &self,
        category: &Category,
        chunk: &Chunk,
        off: u64,
        max_size: u64,
    ) -> Result<ReadOutcome, TierError> {
        let req = ReadRequest {
            off,
            max_size,
            end: chunk.state().end,
        };
        let Some(span) = req.span().map_err(|e| e.for_chunk(chunk.name()))? else {
            return Ok(ReadOutcome::Empty { sealed: true });
        };
        let names = self.names(category, chunk.name());
        let result = match self.object(category, chunk.name(), &names) {
            Ok(obj) => self.read_span(&obj, chunk.name(), req, span).await,
            Err(e) => Err(e.into()),
        };
        if matches!(result, Err(TierError::Read(_))) {
            self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn read_span(
        &self,
        obj: &ObjectRef<'_>,
        name: &ChunkName,
        req: ReadRequest,
        span: std::ops::Range<u64>,
    ) -> Result<ReadOutcome, TierError> {
        let bytes = self.reader.read_range(obj, span.start, span.end).await?;
        match req.window(&bytes).map_err(|e| e.for_chunk(name))? {
            Window::Data(r) => Ok(ReadOutcome::Data(bytes.slice(r))),
            Window::TooSmallNeedLen => {
                // The next message is longer than max_size: say how long,
                // reading on 1 MiB at a time.
                let mut probe_end = span.end;
                let next_len = loop {
                    probe_end = probe_end.saturating_add(1 << 20).min(req.end);
                    let more = self.reader.read_range(obj, req.off, probe_end).await?;
                    if let Some(n) = req.next_len(&more) {
                        break n;
                    }
                    if probe_end >= req.end {
                        break req.end - req.off;
                    }
                };
                Err(req.too_small(next_len).for_chunk(name).into())
            }
        }
    }

    /// Whether `off` is a message boundary of a tiered chunk.
    ///
    /// # Errors
    /// As [`Tiering::read`].
    pub async fn check_boundary(
        &self,
        category: &Category,
        chunk: &Chunk,
        off: u64,
    ) -> Result<(), TierError> {
        let end = chunk.state().end;
        let Some(at) = window::boundary(off, end).map_err(|e| e.for_chunk(chunk.name()))? else {
            return Ok(());
        };
        let names = self.names(category, chunk.name());
        let obj = self.object(category, chunk.name(), &names)?;
        let b = self.reader.read_range(&obj, at, off).await?;
        window::boundary_byte(off, b.first().copied()).map_err(|e| e.for_chunk(chunk.name()).into())
    }

    /// The batch records and bytes of a tiered chunk from record `rec` at
    /// offset `off`, at most `max_size` bytes (at least one batch): a
    /// `/peer/fetch` of a tiered chunk. Batches are chosen as for a local
    /// chunk ([`BatchSelector`]).
    ///
    /// # Errors
    /// As [`Tiering::read`], and `NotBoundary` when record `rec` does not
    /// start at `off`.
    pub async fn fetch_batches(
        &self,
        category: &Category,
        chunk: &Chunk,
        rec: u64,
        off: u64,
        max_size: u64,
    ) -> Result<(Vec<Record>, Bytes), TierError> {
        let names = self.names(category, chunk.name());
        let obj = self.object(category, chunk.name(), &names)?;
        let raw = self.reader.records(&obj).await?;
        let mut select = BatchSelector::new(off, chunk.state().end, max_size);
        // Objects hold version-1 records (producer tags stay local).
        for r in IndexFormat::V1.records_from(&raw, rec) {
            if !select.offer(r) {
                break;
            }
        }
        let out = select.finish().map_err(|e| e.for_chunk(chunk.name()))?;
        if out.is_empty() {
            return Ok((Vec::new(), Bytes::new()));
        }
        let data = self
            .reader
            .read_range(&obj, off, batches::batches_end(&out, off))
            .await?;
        Ok((out, data))
    }
}
