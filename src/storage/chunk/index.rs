//! The sidecar index format (`<chunk>.idx`) and its pure scanner.
//!
//! A chunk file holds only message bytes, so newline framing cannot tell a
//! torn write from a complete one. Every appended batch therefore gets a
//! 16-byte record here with its offset, length and CRC32C; sealing appends a
//! seal record. Recovery trusts exactly the batches whose record and bytes
//! verify. See `docs/formats.md` for the byte diagram. No I/O in this module.

/// File name suffix of the index sidecar.
pub const INDEX_SUFFIX: &str = ".idx";
/// Magic bytes at the start of every index file.
pub const MAGIC: [u8; 8] = *b"CBCHIDX\0";
/// Format version written in the header.
pub const VERSION: u32 = 1;
/// Header length in bytes (magic, version, reserved).
pub const HEADER_LEN: usize = 16;
/// Length of one record in bytes.
pub const RECORD_LEN: usize = 16;
/// `crc` value of a seal record (`len == 0`): ASCII "SEAL" little-endian.
pub const SEAL_MARK: u32 = u32::from_le_bytes(*b"SEAL");

/// The 16-byte index file header.
#[must_use]
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Byte position of record number `n` in an index file (just after the
/// header and the `n` records before it), or `None` if it does not fit in
/// a `u64` (a record number no index can hold).
#[must_use]
pub const fn record_pos(n: u64) -> Option<u64> {
    match n.checked_mul(RECORD_LEN as u64) {
        Some(b) => b.checked_add(HEADER_LEN as u64),
        None => None,
    }
}

/// Number of whole records in an index file of `len` bytes (0 for a file
/// shorter than its header). The inverse of [`record_pos`].
#[must_use]
pub const fn record_count(len: u64) -> u64 {
    len.saturating_sub(HEADER_LEN as u64) / RECORD_LEN as u64
}

/// Decodes the whole records of `raw` (records only, no header) from record
/// number `first` on; a trailing partial record is ignored.
pub fn records_from(raw: &[u8], first: u64) -> impl Iterator<Item = Record> + '_ {
    let start = usize::try_from(first)
        .ok()
        .and_then(|n| n.checked_mul(RECORD_LEN));
    start
        .and_then(|s| raw.get(s..))
        .unwrap_or_default()
        .chunks_exact(RECORD_LEN)
        .map(|r| {
            let mut b = [0u8; RECORD_LEN];
            b.copy_from_slice(r);
            Record::decode(&b)
        })
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
}

impl Record {
    /// A record for a batch.
    #[must_use]
    pub fn batch(offset: u64, len: u32, crc: u32) -> Self {
        Self { offset, len, crc }
    }

    /// The seal record of a chunk whose final size is `size`.
    #[must_use]
    pub fn seal(size: u64) -> Self {
        Self {
            offset: size,
            len: 0,
            crc: SEAL_MARK,
        }
    }

    /// Whether this is a seal record.
    #[must_use]
    pub fn is_seal(&self) -> bool {
        self.len == 0 && self.crc == SEAL_MARK
    }

    /// Little-endian encoding.
    #[must_use]
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..16].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    /// Decodes one record from exactly [`RECORD_LEN`] bytes.
    #[must_use]
    pub fn decode(b: &[u8; RECORD_LEN]) -> Self {
        let mut o = [0u8; 8];
        o.copy_from_slice(&b[..8]);
        let mut l = [0u8; 4];
        l.copy_from_slice(&b[8..12]);
        let mut c = [0u8; 4];
        c.copy_from_slice(&b[12..16]);
        Self {
            offset: u64::from_le_bytes(o),
            len: u32::from_le_bytes(l),
            crc: u32::from_le_bytes(c),
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
        records: 0,
        valid_end: 0,
        sealed: false,
        tail_issue: None,
        index_len: HEADER_LEN,
    };
    if idx.len() < HEADER_LEN || idx[..HEADER_LEN].iter().all(|&b| b == 0) {
        out.index_len = 0;
        return Ok(out);
    }
    if idx[..HEADER_LEN] != header() {
        return Err(IndexFormatError::BadHeader);
    }
    let mut pos = HEADER_LEN;
    while pos < idx.len() {
        let Some(raw) = idx.get(pos..pos + RECORD_LEN) else {
            out.tail_issue = Some(TailIssue::PartialRecord);
            break;
        };
        let mut buf = [0u8; RECORD_LEN];
        buf.copy_from_slice(raw);
        let rec = Record::decode(&buf);
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
            pos += RECORD_LEN;
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
        pos += RECORD_LEN;
        out.index_len = pos;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(batches: &[&[u8]], seal: bool) -> (Vec<u8>, Vec<u8>) {
        let mut idx = header().to_vec();
        let mut data = Vec::new();
        for b in batches {
            let len = u32::try_from(b.len()).unwrap();
            idx.extend_from_slice(
                &Record::batch(data.len() as u64, len, crc32c::crc32c(b)).encode(),
            );
            data.extend_from_slice(b);
        }
        if seal {
            idx.extend_from_slice(&Record::seal(data.len() as u64).encode());
        }
        (idx, data)
    }

    #[test]
    fn clean_and_sealed() {
        let (idx, data) = build(&[b"a\n", b"bc\nd\n"], true);
        let s = scan(&idx, &data).unwrap();
        assert_eq!(
            (s.records, s.valid_end, s.sealed, s.tail_issue),
            (2, 7, true, None)
        );
        assert_eq!(s.index_len, idx.len());
    }

    #[test]
    fn every_cut_of_index_and_data_keeps_a_verified_prefix() {
        let batches: [&[u8]; 3] = [b"one\n", b"two\nthree\n", b"four\n"];
        let (idx, data) = build(&batches, false);
        let ends = [0u64, 4, 14, 19];
        for icut in 0..=idx.len() {
            for dcut in 0..=data.len() {
                let s = scan(&idx[..icut], &data[..dcut]).unwrap();
                let full_records = icut.saturating_sub(HEADER_LEN) / RECORD_LEN;
                let expect = ends
                    .iter()
                    .take(full_records + 1)
                    .copied()
                    .filter(|&e| e as usize <= dcut)
                    .max()
                    .unwrap();
                assert_eq!(s.valid_end, expect, "icut={icut} dcut={dcut}");
                assert!(!s.sealed);
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
    fn zero_header_is_empty_and_foreign_header_is_error() {
        assert_eq!(scan(&[0u8; 40], b"").unwrap().valid_end, 0);
        assert_eq!(
            scan(b"garbage-garbage-", b""),
            Err(IndexFormatError::BadHeader)
        );
    }

    proptest::proptest! {
        /// Any index and data bytes (valid, cut or corrupted anywhere): an
        /// error only for a foreign header, else a prefix whose every
        /// record verifies against the data, never a panic.
        #[test]
        fn scan_keeps_only_a_verified_prefix(
            batches in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40), 0..6),
            seal in proptest::prelude::any::<bool>(),
            icut in 0usize..400,
            dcut in 0usize..300,
            flips in proptest::collection::vec((0usize..400, 1u8..=255), 0..3),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        ) {
            let refs: Vec<&[u8]> = batches.iter().map(Vec::as_slice).collect();
            let (mut idx, mut data) = build(&refs, seal);
            idx.extend_from_slice(&garbage);
            for (at, x) in &flips {
                if *at < idx.len() { idx[*at] ^= x; } else if at - idx.len() < data.len() { let i = at - idx.len(); data[i] ^= x; }
            }
            let idx = &idx[..icut.min(idx.len())];
            let data = &data[..dcut.min(data.len())];
            match scan(idx, data) {
                Err(IndexFormatError::BadHeader) => {
                    proptest::prop_assert!(idx.len() >= HEADER_LEN && idx[..HEADER_LEN] != header());
                }
                Ok(s) => {
                    proptest::prop_assert!(s.valid_end as usize <= data.len());
                    proptest::prop_assert!(s.index_len <= idx.len());
                    // Every kept record chains and verifies.
                    let mut end = 0u64;
                    for i in 0..s.records {
                        let at = HEADER_LEN + i * RECORD_LEN;
                        let mut b = [0u8; RECORD_LEN];
                        b.copy_from_slice(&idx[at..at + RECORD_LEN]);
                        let r = Record::decode(&b);
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
        assert_eq!(record_pos(0), Some(HEADER_LEN as u64));
        assert_eq!(record_pos(3), Some((HEADER_LEN + 3 * RECORD_LEN) as u64));
        assert_eq!(record_pos(u64::MAX), None);
        assert_eq!(record_pos(u64::MAX / RECORD_LEN as u64), None);
        for n in [0u64, 1, 7, 1 << 40] {
            let pos = record_pos(n).unwrap();
            assert_eq!(record_count(pos), n);
            assert_eq!(record_count(pos + RECORD_LEN as u64 - 1), n);
        }
        assert_eq!(record_count(0), 0);
        assert_eq!(record_count(HEADER_LEN as u64 - 1), 0);
    }

    #[test]
    fn records_from_skips_and_ignores_partial_tail() {
        let (idx, _) = build(&[b"a\n", b"bc\n", b"d\n"], false);
        let raw = &idx[HEADER_LEN..];
        let all: Vec<Record> = records_from(raw, 0).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(records_from(raw, 1).next(), Some(all[1]));
        assert_eq!(records_from(&raw[..raw.len() - 1], 2).count(), 0);
        assert_eq!(records_from(raw, 3).count(), 0);
        assert_eq!(records_from(raw, u64::MAX).count(), 0);
    }

    #[test]
    fn zero_records_after_valid_ones_are_cut() {
        let (mut idx, data) = build(&[b"x\n"], false);
        idx.extend_from_slice(&[0u8; 32]);
        let s = scan(&idx, &data).unwrap();
        assert_eq!((s.valid_end, s.tail_issue), (2, Some(TailIssue::BadRecord)));
    }
}
