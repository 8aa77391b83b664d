//! The sidecar index format (`<chunk>.idx`) and its pure scanner.
//!
//! A chunk file holds only message bytes, so newline framing cannot tell a
//! torn write from a complete one. Every appended batch therefore gets a
//! record here with its offset, length and CRC32C; sealing appends a seal
//! record. Two versions exist: version 1 (16-byte header and records,
//! chunks written before idempotent producers) and version 2 (32-byte
//! header and records that also carry the batch's producer tag, so the
//! dedup state of idempotent producers survives restarts and travels with
//! copies). New chunks are written in version 2; version 1 stays readable.
//! Recovery trusts exactly the batches whose record and bytes verify. See
//! `docs/formats.md` for the byte diagrams. No I/O in this module.

/// File name suffix of the index sidecar.
pub const INDEX_SUFFIX: &str = ".idx";
/// Magic bytes at the start of every index file.
pub const MAGIC: [u8; 8] = *b"CBCHIDX\0";
/// `crc` value of a seal record (`len == 0`): ASCII "SEAL" little-endian.
pub const SEAL_MARK: u32 = u32::from_le_bytes(*b"SEAL");
/// The longest header or record of any version.
pub const MAX_RECORD_LEN: usize = 32;

/// The version of an index file: its header and record layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexFormat {
    /// 16-byte header and records: offset, length, CRC32C.
    V1,
    /// 32-byte header and records: producer id, producer sequence, offset,
    /// length, CRC32C. Records never straddle a 4 KiB page.
    V2,
}

impl IndexFormat {
    /// The version new indexes are written in.
    pub const CURRENT: Self = Self::V2;

    /// The version number in the header.
    #[must_use]
    pub const fn version(self) -> u32 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// Header length in bytes.
    #[must_use]
    pub const fn header_len(self) -> usize {
        self.record_len()
    }

    /// Length of one record in bytes.
    #[must_use]
    pub const fn record_len(self) -> usize {
        match self {
            Self::V1 => 16,
            Self::V2 => 32,
        }
    }

    /// The header of an index in this version: magic, version, zeroes.
    #[must_use]
    pub fn header(self) -> Vec<u8> {
        let mut h = vec![0u8; self.header_len()];
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&self.version().to_le_bytes());
        h
    }

    /// The version of the index starting with `head` (at least its first
    /// 16 bytes), if it is a chunkbus index header.
    #[must_use]
    pub fn detect(head: &[u8]) -> Option<Self> {
        let magic = head.get(..8)?;
        let version = u32::from_le_bytes(head.get(8..12)?.try_into().ok()?);
        let format = match version {
            1 => Self::V1,
            2 => Self::V2,
            _ => return None,
        };
        let rest = head.get(12..format.header_len())?;
        (magic == MAGIC && rest.iter().all(|&b| b == 0)).then_some(format)
    }

    /// Byte position of record number `n` in an index file (just after the
    /// header and the `n` records before it), or `None` if it does not fit
    /// in a `u64` (a record number no index can hold).
    #[must_use]
    pub const fn record_pos(self, n: u64) -> Option<u64> {
        match n.checked_mul(self.record_len() as u64) {
            Some(b) => b.checked_add(self.header_len() as u64),
            None => None,
        }
    }

    /// Number of whole records in an index file of `len` bytes (0 for a
    /// file shorter than its header). The inverse of
    /// [`record_pos`](Self::record_pos).
    #[must_use]
    pub const fn record_count(self, len: u64) -> u64 {
        len.saturating_sub(self.header_len() as u64) / self.record_len() as u64
    }

    /// Decodes the whole records of `raw` (records only, no header) from
    /// record number `first` on; a trailing partial record is ignored.
    pub fn records_from(self, raw: &[u8], first: u64) -> impl Iterator<Item = Record> + '_ {
        let start = usize::try_from(first)
            .ok()
            .and_then(|n| n.checked_mul(self.record_len()));
        start
            .and_then(|s| raw.get(s..))
            .unwrap_or_default()
            .chunks_exact(self.record_len())
            .map(move |r| Record::decode(self, r))
    }
}

/// Which idempotent producer wrote a batch, and its sequence number there
/// (`producer == 0`: an untagged write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ProducerTag {
    /// Producer id chosen by the client (never 0 for a tagged batch).
    pub producer: u64,
    /// The batch's sequence number for this producer and category.
    pub seq: u64,
}

impl ProducerTag {
    /// Whether the batch was written with a producer id.
    #[must_use]
    pub fn is_tagged(&self) -> bool {
        self.producer != 0
    }
}

/// One index record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Offset of the batch's first byte in the chunk.
    pub offset: u64,
    /// Batch length in bytes; 0 marks a seal record.
    pub len: u32,
    /// CRC32C of the batch bytes, or [`SEAL_MARK`] for a seal record.
    pub crc: u32,
    /// The idempotent producer's tag (version 2 only; untagged in version 1).
    pub tag: ProducerTag,
}

impl Record {
    /// A record for an untagged batch.
    #[must_use]
    pub fn batch(offset: u64, len: u32, crc: u32) -> Self {
        Self {
            offset,
            len,
            crc,
            tag: ProducerTag::default(),
        }
    }

    /// This record with producer tag `tag`.
    #[must_use]
    pub fn tagged(self, tag: ProducerTag) -> Self {
        Self { tag, ..self }
    }

    /// The seal record of a chunk whose final size is `size`.
    #[must_use]
    pub fn seal(size: u64) -> Self {
        Self::batch(size, 0, SEAL_MARK)
    }

    /// Whether this is a seal record.
    #[must_use]
    pub fn is_seal(&self) -> bool {
        self.len == 0 && self.crc == SEAL_MARK
    }

    /// Little-endian encoding in `format` (the first
    /// [`IndexFormat::record_len`] bytes of the result). Version 2 puts the
    /// tag first, so a record torn anywhere fails its offset, length or
    /// CRC check rather than keeping a wrong tag.
    #[must_use]
    pub fn encode(&self, format: IndexFormat) -> [u8; MAX_RECORD_LEN] {
        let mut b = [0u8; MAX_RECORD_LEN];
        let at = match format {
            IndexFormat::V1 => 0,
            IndexFormat::V2 => {
                b[..8].copy_from_slice(&self.tag.producer.to_le_bytes());
                b[8..16].copy_from_slice(&self.tag.seq.to_le_bytes());
                16
            }
        };
        b[at..at + 8].copy_from_slice(&self.offset.to_le_bytes());
        b[at + 8..at + 12].copy_from_slice(&self.len.to_le_bytes());
        b[at + 12..at + 16].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    /// Decodes one record of `format` from the start of `b`; missing bytes
    /// (a slice shorter than a record) read as zeroes.
    #[must_use]
    pub fn decode(format: IndexFormat, b: &[u8]) -> Self {
        let mut r = [0u8; MAX_RECORD_LEN];
        let n = b.len().min(format.record_len());
        r[..n].copy_from_slice(&b[..n]);
        let u64_at = |i: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&r[i..i + 8]);
            u64::from_le_bytes(v)
        };
        let u32_at = |i: usize| {
            let mut v = [0u8; 4];
            v.copy_from_slice(&r[i..i + 4]);
            u32::from_le_bytes(v)
        };
        let (at, tag) = match format {
            IndexFormat::V1 => (0, ProducerTag::default()),
            IndexFormat::V2 => (
                16,
                ProducerTag {
                    producer: u64_at(0),
                    seq: u64_at(8),
                },
            ),
        };
        Self {
            offset: u64_at(at),
            len: u32_at(at + 8),
            crc: u32_at(at + 12),
            tag,
        }
    }
}

/// Errors that mean the index is not ours or not recoverable automatically.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexFormatError {
    /// The header holds bytes that are not a chunkbus index header.
    #[error("not a chunkbus index (bad magic or version)")]
    BadHeader,
}

/// Why the scan stopped before the end of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailIssue {
    /// The index ends inside a record.
    PartialRecord,
    /// A record's offset does not continue the previous batch, or its length is 0.
    BadRecord,
    /// A record points past the end of the chunk file.
    PastDataEnd,
    /// The batch bytes do not match the record's CRC32C.
    ChecksumMismatch,
    /// Records follow the seal record.
    AfterSeal,
}

/// Result of scanning an index against its chunk bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The index's version (the current one for an empty index).
    pub format: IndexFormat,
    /// Number of leading batch records that verified.
    pub records: usize,
    /// End of the last verified batch: the chunk's valid length.
    pub valid_end: u64,
    /// Whether a valid seal record follows the verified batches.
    pub sealed: bool,
    /// Why the scan stopped early, if it did; everything from there is cut.
    pub tail_issue: Option<TailIssue>,
    /// Index bytes that are kept (header + verified records [+ seal]).
    pub index_len: usize,
}

/// Scans `idx` (the whole index file) against `data` (the chunk file bytes).
///
/// Keeps the longest prefix of records that each continue the previous batch
/// and whose bytes match their CRC32C. An index shorter than its header (a
/// crash while creating it) or a header of zeroes is an empty chunk.
///
/// # Errors
/// [`IndexFormatError::BadHeader`] when the header is present, not all
/// zeroes, and not ours.
pub fn scan(idx: &[u8], data: &[u8]) -> Result<Scan, IndexFormatError> {
    let mut out = Scan {
        format: IndexFormat::CURRENT,
        records: 0,
        valid_end: 0,
        sealed: false,
        tail_issue: None,
        index_len: 0,
    };
    // Shorter than a version-1 header, a first 16 bytes of zeroes, or a
    // version-2 header cut short by a crash while it was created: an
    // empty chunk.
    let v2 = IndexFormat::V2.header();
    if idx.len() < IndexFormat::V1.header_len()
        || idx[..IndexFormat::V1.header_len()].iter().all(|&b| b == 0)
        || (idx.len() < v2.len() && v2.starts_with(idx))
    {
        return Ok(out);
    }
    let format = IndexFormat::detect(idx).ok_or(IndexFormatError::BadHeader)?;
    let record_len = format.record_len();
    out.format = format;
    out.index_len = format.header_len();
    let mut pos = format.header_len();
    while pos < idx.len() {
        let Some(raw) = idx.get(pos..pos + record_len) else {
            out.tail_issue = Some(TailIssue::PartialRecord);
            break;
        };
        let rec = Record::decode(format, raw);
        if out.sealed {
            out.tail_issue = Some(TailIssue::AfterSeal);
            break;
        }
        if rec.offset != out.valid_end {
            out.tail_issue = Some(TailIssue::BadRecord);
            break;
        }
        if rec.is_seal() {
            out.sealed = true;
            pos += record_len;
            out.index_len = pos;
            continue;
        }
        if rec.len == 0 {
            out.tail_issue = Some(TailIssue::BadRecord);
            break;
        }
        let end = rec.offset + u64::from(rec.len);
        let Some(bytes) = usize::try_from(rec.offset)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| data.get(s..e))
        else {
            out.tail_issue = Some(TailIssue::PastDataEnd);
            break;
        };
        if crc32c::crc32c(bytes) != rec.crc {
            out.tail_issue = Some(TailIssue::ChecksumMismatch);
            break;
        }
        out.records += 1;
        out.valid_end = end;
        pos += record_len;
        out.index_len = pos;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMATS: [IndexFormat; 2] = [IndexFormat::V1, IndexFormat::V2];

    fn tag(i: usize) -> ProducerTag {
        ProducerTag {
            producer: 0x0102_0304_0506_0708,
            seq: i as u64 + 1,
        }
    }

    fn build_as(format: IndexFormat, batches: &[&[u8]], seal: bool) -> (Vec<u8>, Vec<u8>) {
        let rl = format.record_len();
        let mut idx = format.header();
        let mut data = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            let len = u32::try_from(b.len()).unwrap();
            let rec = Record::batch(data.len() as u64, len, crc32c::crc32c(b)).tagged(tag(i));
            idx.extend_from_slice(&rec.encode(format)[..rl]);
            data.extend_from_slice(b);
        }
        if seal {
            idx.extend_from_slice(&Record::seal(data.len() as u64).encode(format)[..rl]);
        }
        (idx, data)
    }

    fn build(batches: &[&[u8]], seal: bool) -> (Vec<u8>, Vec<u8>) {
        build_as(IndexFormat::CURRENT, batches, seal)
    }

    #[test]
    fn clean_and_sealed_in_both_versions() {
        for f in FORMATS {
            let (idx, data) = build_as(f, &[b"a\n", b"bc\nd\n"], true);
            let s = scan(&idx, &data).unwrap();
            assert_eq!(
                (s.format, s.records, s.valid_end, s.sealed, s.tail_issue),
                (f, 2, 7, true, None)
            );
            assert_eq!(s.index_len, idx.len());
        }
    }

    #[test]
    fn version_2_records_keep_their_tags_and_version_1_drops_them() {
        let (idx, _) = build_as(IndexFormat::V2, &[b"a\n", b"b\n"], false);
        let recs: Vec<Record> = IndexFormat::V2
            .records_from(&idx[IndexFormat::V2.header_len()..], 0)
            .collect();
        assert_eq!(
            recs.iter().map(|r| r.tag).collect::<Vec<_>>(),
            [tag(0), tag(1)]
        );
        assert_eq!((recs[1].offset, recs[1].len), (2, 2));
        let (idx, _) = build_as(IndexFormat::V1, &[b"a\n"], false);
        let r = IndexFormat::V1.records_from(&idx[16..], 0).next().unwrap();
        assert!(!r.tag.is_tagged());
        // Pinned bytes of a version-2 record: tag first, then the v1 fields.
        let b = Record::batch(0x10, 3, 0xAABB_CCDD).tagged(ProducerTag {
            producer: 7,
            seq: 9,
        });
        let e = b.encode(IndexFormat::V2);
        assert_eq!(e[..8], 7u64.to_le_bytes());
        assert_eq!(e[8..16], 9u64.to_le_bytes());
        assert_eq!(e[16..32], b.encode(IndexFormat::V1)[..16]);
        assert_eq!(Record::decode(IndexFormat::V2, &e), b);
    }

    #[test]
    fn every_cut_of_index_and_data_keeps_a_verified_prefix() {
        let batches: [&[u8]; 3] = [b"one\n", b"two\nthree\n", b"four\n"];
        for f in FORMATS {
            let (idx, data) = build_as(f, &batches, false);
            let ends = [0u64, 4, 14, 19];
            for icut in 0..=idx.len() {
                for dcut in 0..=data.len() {
                    let s = scan(&idx[..icut], &data[..dcut]).unwrap();
                    let full_records = icut.saturating_sub(f.header_len()) / f.record_len();
                    let expect = ends
                        .iter()
                        .take(full_records + 1)
                        .copied()
                        .filter(|&e| e as usize <= dcut)
                        .max()
                        .unwrap();
                    assert_eq!(s.valid_end, expect, "{f:?} icut={icut} dcut={dcut}");
                    assert!(!s.sealed);
                }
            }
        }
    }

    #[test]
    fn a_version_2_record_torn_anywhere_is_cut_not_kept_with_a_wrong_tag() {
        let (idx, data) = build(&[b"one\n", b"two\n"], false);
        let last = idx.len() - 32;
        for cut in 1..32 {
            // The torn record's unwritten bytes read as zeroes.
            let mut torn = idx[..last + cut].to_vec();
            torn.resize(idx.len(), 0);
            let s = scan(&torn, &data).unwrap();
            if s.records == 2 {
                // Only a tear inside the CRC's high zero bytes can pass: the
                // record then is complete in every byte that matters.
                let r = Record::decode(IndexFormat::V2, &torn[last..]);
                assert_eq!(r.tag, tag(1), "cut {cut}");
            } else {
                assert_eq!((s.records, s.valid_end), (1, 4), "cut {cut}");
            }
        }
    }

    #[test]
    fn corrupted_byte_in_last_batch_is_cut() {
        let (idx, data) = build(&[b"one\n", b"two\n"], false);
        for i in 4..8 {
            let mut d = data.clone();
            d[i] ^= 0x40;
            let s = scan(&idx, &d).unwrap();
            assert_eq!(s.valid_end, 4);
            assert_eq!(s.tail_issue, Some(TailIssue::ChecksumMismatch));
        }
    }

    #[test]
    fn zero_or_short_header_is_empty_and_foreign_header_is_error() {
        assert_eq!(scan(&[0u8; 40], b"").unwrap().valid_end, 0);
        let v2 = IndexFormat::V2.header();
        for cut in 0..v2.len() {
            let s = scan(&v2[..cut], b"").unwrap();
            assert_eq!((s.valid_end, s.index_len), (0, 0), "cut {cut}");
        }
        assert_eq!(
            scan(b"garbage-garbage-", b""),
            Err(IndexFormatError::BadHeader)
        );
        let mut v3 = v2.clone();
        v3[8] = 3;
        assert_eq!(scan(&v3, b""), Err(IndexFormatError::BadHeader));
    }

    proptest::proptest! {
        /// Any index and data bytes (valid, cut or corrupted anywhere): an
        /// error only for a foreign header, else a prefix whose every
        /// record verifies against the data, never a panic.
        #[test]
        fn scan_keeps_only_a_verified_prefix(
            v1 in proptest::prelude::any::<bool>(),
            batches in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40), 0..6),
            seal in proptest::prelude::any::<bool>(),
            icut in 0usize..400,
            dcut in 0usize..300,
            flips in proptest::collection::vec((0usize..400, 1u8..=255), 0..3),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        ) {
            let f = if v1 { IndexFormat::V1 } else { IndexFormat::V2 };
            let refs: Vec<&[u8]> = batches.iter().map(Vec::as_slice).collect();
            let (mut idx, mut data) = build_as(f, &refs, seal);
            idx.extend_from_slice(&garbage);
            for (at, x) in &flips {
                if *at < idx.len() { idx[*at] ^= x; } else if at - idx.len() < data.len() { let i = at - idx.len(); data[i] ^= x; }
            }
            let idx = &idx[..icut.min(idx.len())];
            let data = &data[..dcut.min(data.len())];
            match scan(idx, data) {
                Err(IndexFormatError::BadHeader) => {
                    proptest::prop_assert!(IndexFormat::detect(idx).is_none());
                }
                Ok(s) => {
                    proptest::prop_assert!(s.valid_end as usize <= data.len());
                    proptest::prop_assert!(s.index_len <= idx.len());
                    // Every kept record chains and verifies.
                    let mut end = 0u64;
                    let g = s.format;
                    for i in 0..s.records {
                        let at = g.header_len() + i * g.record_len();
                        let r = Record::decode(g, &idx[at..at + g.record_len()]);
                        proptest::prop_assert_eq!(r.offset, end);
                        let e = end + u64::from(r.len);
                        proptest::prop_assert_eq!(crc32c::crc32c(&data[end as usize..e as usize]), r.crc);
                        end = e;
                    }
                    proptest::prop_assert_eq!(end, s.valid_end);
                }
            }
        }
    }

    #[test]
    fn record_positions_are_checked_and_invert() {
        for f in FORMATS {
            let (h, r) = (f.header_len(), f.record_len());
            assert_eq!(f.record_pos(0), Some(h as u64));
            assert_eq!(f.record_pos(3), Some((h + 3 * r) as u64));
            assert_eq!(f.record_pos(u64::MAX), None);
            assert_eq!(f.record_pos(u64::MAX / r as u64), None);
            for n in [0u64, 1, 7, 1 << 40] {
                let pos = f.record_pos(n).unwrap();
                assert_eq!(f.record_count(pos), n);
                assert_eq!(f.record_count(pos + r as u64 - 1), n);
            }
            assert_eq!(f.record_count(0), 0);
            assert_eq!(f.record_count(h as u64 - 1), 0);
        }
    }

    #[test]
    fn records_from_skips_and_ignores_partial_tail() {
        for f in FORMATS {
            let (idx, _) = build_as(f, &[b"a\n", b"bc\n", b"d\n"], false);
            let raw = &idx[f.header_len()..];
            let all: Vec<Record> = f.records_from(raw, 0).collect();
            assert_eq!(all.len(), 3);
            assert_eq!(f.records_from(raw, 1).next(), Some(all[1]));
            assert_eq!(f.records_from(&raw[..raw.len() - 1], 2).count(), 0);
            assert_eq!(f.records_from(raw, 3).count(), 0);
            assert_eq!(f.records_from(raw, u64::MAX).count(), 0);
        }
    }

    #[test]
    fn zero_records_after_valid_ones_are_cut() {
        let (mut idx, data) = build(&[b"x\n"], false);
        idx.extend_from_slice(&[0u8; 32]);
        let s = scan(&idx, &data).unwrap();
        assert_eq!((s.valid_end, s.tail_issue), (2, Some(TailIssue::BadRecord)));
    }
}
