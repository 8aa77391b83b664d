//! Batch selection for `/peer/fetch`, pure and shared by local chunks
//! (records read from the `.idx` sidecar) and tiered chunks (records from
//! the object): which index records form the next batches from record
//! `first` at `off`, up to `max_bytes`. Never does I/O: callers feed the
//! records they read.

use super::index::Record;
use super::window::RuleError;

/// Picks the index records of the next batches of a chunk: starting with
/// the record that starts at `off`, each continuing the previous one, none
/// past the published end, as many whole batches as fit in `max_bytes`
/// (at least one). Callers feed records in order with [`BatchSelector::offer`]
/// until it says stop.
#[derive(Debug)]
pub struct BatchSelector {
    next: u64,
    end: u64,
    max_bytes: u64,
    taken: u64,
    off: u64,
    out: Vec<Record>,
}

impl BatchSelector {
    /// A selector of batches from `off` of a chunk published up to `end`.
    #[must_use]
    pub fn new(off: u64, end: u64, max_bytes: u64) -> Self {
        Self {
            next: off,
            end,
            max_bytes,
            taken: 0,
            off,
            out: Vec::new(),
        }
    }

    /// Whether no record can be taken any more (no need to read more).
    #[must_use]
    pub fn done(&self) -> bool {
        self.next >= self.end || (!self.out.is_empty() && self.taken >= self.max_bytes)
    }

    /// Offers the next record; returns whether to offer more.
    pub fn offer(&mut self, rec: Record) -> bool {
        if self.done() {
            return false;
        }
        let len = u64::from(rec.len);
        let continues = !rec.is_seal() && len > 0 && rec.offset == self.next;
        if !continues || rec.offset.checked_add(len).is_none_or(|e| e > self.end) {
            self.next = self.end; // stop
            return false;
        }
        if !self.out.is_empty() && self.taken.saturating_add(len) > self.max_bytes {
            self.taken = self.max_bytes; // stop
            return false;
        }
        self.taken += len;
        self.next += len;
        self.out.push(rec);
        !self.done()
    }

    /// The records taken. Empty when `off` is at or past the end.
    ///
    /// # Errors
    /// [`RuleError::NotBoundary`] when no record starts at `off` (and it is
    /// before the end).
    pub fn finish(self) -> Result<Vec<Record>, RuleError> {
        if self.out.is_empty() && self.off < self.end {
            return Err(RuleError::NotBoundary { off: self.off });
        }
        Ok(self.out)
    }
}

/// Chunk end of the last record taken, or `off` if none.
#[must_use]
pub fn batches_end(records: &[Record], off: u64) -> u64 {
    records.last().map_or(off, |r| r.offset + u64::from(r.len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn records(lens: &[u32]) -> Vec<Record> {
        let mut at = 0u64;
        let mut out = Vec::new();
        for &l in lens {
            out.push(Record::batch(at, l, 0));
            at += u64::from(l);
        }
        out.push(Record::seal(at));
        out
    }

    fn select(
        recs: &[Record],
        first: usize,
        off: u64,
        end: u64,
        max: u64,
    ) -> Result<Vec<Record>, RuleError> {
        let mut s = BatchSelector::new(off, end, max);
        for r in recs.iter().skip(first) {
            if !s.offer(*r) {
                break;
            }
        }
        s.finish()
    }

    #[test]
    fn batch_cases() {
        let r = records(&[4, 6, 3]);
        assert_eq!(select(&r, 0, 0, 13, 1).unwrap().len(), 1); // at least one
        assert_eq!(select(&r, 0, 0, 13, 10).unwrap().len(), 2);
        assert_eq!(select(&r, 0, 0, 13, 12).unwrap().len(), 2);
        assert_eq!(select(&r, 0, 0, 13, 100).unwrap().len(), 3);
        assert_eq!(select(&r, 1, 4, 13, 100).unwrap().len(), 2);
        assert_eq!(select(&r, 0, 0, 10, 100).unwrap().len(), 2); // published end
        assert_eq!(select(&r, 1, 13, 13, 100), Ok(Vec::new()));
        assert_eq!(
            select(&r, 1, 5, 13, 100),
            Err(RuleError::NotBoundary { off: 5 })
        );
        assert_eq!(
            select(&r, 0, 4, 13, 100),
            Err(RuleError::NotBoundary { off: 4 })
        );
        assert_eq!(batches_end(&[r[1], r[2]], 4), 13);
        assert_eq!(batches_end(&[], 4), 4);
    }

    proptest! {
        /// Batches chain from `off`, stay within the end and the limit
        /// (except a single first batch), and stop only for a reason.
        #[test]
        fn batches_match_the_model(
            lens in proptest::collection::vec(1u32..20, 0..10),
            first in 0usize..12,
            end_cut in 0usize..12,
            max in 0u64..80,
        ) {
            let recs = records(&lens);
            let ends: Vec<u64> = recs.iter().map(|r| r.offset + u64::from(r.len)).collect();
            let end = ends.get(end_cut.min(lens.len()).wrapping_sub(1)).copied().unwrap_or(0);
            let off = recs.get(first).map_or(0, |r| r.offset);
            let got = select(&recs, first, off, end, max);
            if off >= end {
                prop_assert_eq!(got, Ok(Vec::new()));
            } else if first >= lens.len() {
                prop_assert_eq!(got, Err(RuleError::NotBoundary { off }));
            } else {
                let got = got.unwrap();
                let mut want = Vec::new();
                let mut taken = 0u64;
                for r in &recs[first..lens.len()] {
                    let e = r.offset + u64::from(r.len);
                    if e > end || (!want.is_empty() && taken + u64::from(r.len) > max) {
                        break;
                    }
                    taken += u64::from(r.len);
                    want.push(*r);
                    if taken >= max { break; }
                }
                prop_assert_eq!(got, want);
            }
        }
    }
}
