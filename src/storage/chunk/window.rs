//! The read rules, once, as pure functions shared by local reads (through
//! the mapping, `chunk::read`) and tiered reads (through the object store,
//! `tier::read`):
//!
//! - [`ReadRequest`]: which bytes a `/read` at `off` of at most `max_size`
//!   bytes must look at, and which whole-message window it answers with (or
//!   why it is refused: offset past the end, not a message boundary,
//!   `max_size` too small for the next message).
//! - [`boundary`]: whether an offset is a message boundary (group acks).
//!
//! The batch rules of `/peer/fetch` are next door, in [`super::batches`].
//! This module never does I/O and never knows where the bytes come from:
//! callers fetch what it asks for and hand it in.

use std::ops::Range;

use super::format;
use crate::storage::StorageError;

/// Why a read cannot be answered with data. Callers name the chunk with
/// [`RuleError::for_chunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleError {
    /// `off` is past the published end.
    OffsetBeyondEnd {
        /// Offset asked for.
        off: u64,
        /// The published end.
        end: u64,
    },
    /// `off` is inside a message.
    NotBoundary {
        /// Offset asked for.
        off: u64,
    },
    /// The message at `off` is longer than `max_size`.
    MaxSizeTooSmall {
        /// The limit given.
        max_size: u64,
        /// Length of the message at `off`.
        next_len: u64,
    },
}

impl RuleError {
    /// The storage error for this refusal of a read of chunk `name`.
    #[must_use]
    pub fn for_chunk(self, name: &impl ToString) -> StorageError {
        match self {
            Self::OffsetBeyondEnd { off, end } => StorageError::OffsetBeyondEnd {
                name: name.to_string(),
                off,
                size: end,
            },
            Self::NotBoundary { off } => StorageError::NotBoundary {
                name: name.to_string(),
                off,
            },
            Self::MaxSizeTooSmall { max_size, next_len } => {
                StorageError::MaxSizeTooSmall { max_size, next_len }
            }
        }
    }
}

/// A read of whole messages from `off`, at most `max_size` bytes, of a
/// chunk whose published end (always a message boundary) is `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    /// Offset asked for.
    pub off: u64,
    /// Most bytes to answer with.
    pub max_size: u64,
    /// The chunk's published end.
    pub end: u64,
}

/// What [`ReadRequest::window`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// The answer: this range of the given bytes, the longest run of whole
    /// messages from `off` within `max_size` (never empty).
    Data(Range<usize>),
    /// The next message does not fit in `max_size`, and the given bytes do
    /// not show where it ends: look further with [`ReadRequest::next_len`].
    TooSmallNeedLen,
}

impl ReadRequest {
    /// Step 1: checks `off` against the published end. `Ok(None)`: `off` is
    /// the end (an empty answer). `Ok(Some(span))`: the chunk bytes to look
    /// at, from the byte before `off` (which tells whether `off` is a
    /// boundary) up to `off + max_size`, within the end.
    ///
    /// # Errors
    /// [`RuleError::OffsetBeyondEnd`].
    pub fn span(&self) -> Result<Option<Range<u64>>, RuleError> {
        if self.off > self.end {
            return Err(RuleError::OffsetBeyondEnd {
                off: self.off,
                end: self.end,
            });
        }
        if self.off == self.end {
            return Ok(None); // the published end is always a boundary
        }
        let from = self.off.saturating_sub(1);
        let to = self.off.saturating_add(self.max_size).min(self.end);
        Ok(Some(from..to))
    }

    /// Step 2: decides the answer from `bytes`, the chunk's bytes from
    /// `span().start` on, covering at least the span (more, up to the end,
    /// is allowed and lets the refusal name the next message's length).
    ///
    /// # Errors
    /// [`RuleError::NotBoundary`], or [`RuleError::MaxSizeTooSmall`] when
    /// the bytes show the next message's length.
    pub fn window(&self, bytes: &[u8]) -> Result<Window, RuleError> {
        let lead = usize::from(self.off > 0);
        if self.off > 0 && bytes.first() != Some(&b'\n') {
            return Err(RuleError::NotBoundary { off: self.off });
        }
        let from_off = bytes.get(lead..).unwrap_or_default();
        let room = usize::try_from(self.max_size.min(self.end - self.off)).unwrap_or(usize::MAX);
        let take = format::last_complete_message_end(&from_off[..room.min(from_off.len())]);
        if take > 0 {
            return Ok(Window::Data(lead..lead + take));
        }
        match self.next_len(from_off) {
            Some(next_len) => Err(RuleError::MaxSizeTooSmall {
                max_size: self.max_size,
                next_len,
            }),
            None => Ok(Window::TooSmallNeedLen),
        }
    }

    /// Length of the message at `off`, given the chunk's bytes from `off`
    /// on; `None` if they end before it does and before the chunk's end.
    #[must_use]
    pub fn next_len(&self, from_off: &[u8]) -> Option<u64> {
        match format::first_message_len(from_off) {
            Some(n) => Some(n as u64),
            None => (from_off.len() as u64 >= self.end - self.off).then(|| self.end - self.off),
        }
    }

    /// The refusal once [`ReadRequest::next_len`] found the length.
    #[must_use]
    pub fn too_small(&self, next_len: u64) -> RuleError {
        RuleError::MaxSizeTooSmall {
            max_size: self.max_size,
            next_len,
        }
    }
}

/// Whether `off` is a message boundary of a chunk whose published end is
/// `end`. `Ok(None)`: it is (0 and the end always are). `Ok(Some(at))`:
/// it is if the byte at `at` (just before `off`) is a newline; see
/// [`boundary_byte`].
///
/// # Errors
/// [`RuleError::OffsetBeyondEnd`].
pub fn boundary(off: u64, end: u64) -> Result<Option<u64>, RuleError> {
    if off > end {
        return Err(RuleError::OffsetBeyondEnd { off, end });
    }
    if off == 0 || off == end {
        return Ok(None);
    }
    Ok(Some(off - 1))
}

/// The verdict of [`boundary`] given the byte before `off`.
///
/// # Errors
/// [`RuleError::NotBoundary`] unless `before` is a newline.
pub fn boundary_byte(off: u64, before: Option<u8>) -> Result<(), RuleError> {
    if before == Some(b'\n') {
        Ok(())
    } else {
        Err(RuleError::NotBoundary { off })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs a whole read against all of `data` as the local path does.
    fn local(data: &[u8], off: u64, max_size: u64) -> Result<Option<Vec<u8>>, RuleError> {
        let req = ReadRequest {
            off,
            max_size,
            end: data.len() as u64,
        };
        let Some(span) = req.span()? else {
            return Ok(None);
        };
        let bytes = &data[span.start as usize..];
        match req.window(bytes)? {
            Window::Data(r) => Ok(Some(bytes[r].to_vec())),
            Window::TooSmallNeedLen => unreachable!("all bytes given"),
        }
    }

    /// The same read as the tiered path does: only the span, then probes.
    fn tiered(data: &[u8], off: u64, max_size: u64) -> Result<Option<Vec<u8>>, RuleError> {
        let req = ReadRequest {
            off,
            max_size,
            end: data.len() as u64,
        };
        let Some(span) = req.span()? else {
            return Ok(None);
        };
        let bytes = &data[span.start as usize..span.end as usize];
        match req.window(bytes)? {
            Window::Data(r) => Ok(Some(bytes[r].to_vec())),
            Window::TooSmallNeedLen => {
                let mut probe = span.end;
                loop {
                    if let Some(n) = req.next_len(&data[off as usize..probe as usize]) {
                        return Err(req.too_small(n));
                    }
                    probe = (probe + 3).min(data.len() as u64);
                }
            }
        }
    }

    /// Reference model: messages, boundaries, the longest fitting run.
    fn model(data: &[u8], off: u64, max_size: u64) -> Result<Option<Vec<u8>>, RuleError> {
        let end = data.len() as u64;
        if off > end {
            return Err(RuleError::OffsetBeyondEnd { off, end });
        }
        if off == end {
            return Ok(None);
        }
        let mut bounds = vec![0u64];
        bounds.extend(
            data.iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i as u64 + 1),
        );
        if !bounds.contains(&off) {
            return Err(RuleError::NotBoundary { off });
        }
        let last = bounds
            .iter()
            .copied()
            .filter(|&b| b > off && b - off <= max_size)
            .max();
        match last {
            Some(b) => Ok(Some(data[off as usize..b as usize].to_vec())),
            None => {
                let next = bounds.iter().copied().find(|&b| b > off).unwrap_or(end);
                Err(RuleError::MaxSizeTooSmall {
                    max_size,
                    next_len: next - off,
                })
            }
        }
    }

    #[test]
    fn read_cases() {
        let d = b"ab\ncdef\ng\n";
        assert_eq!(local(d, 0, 100), Ok(Some(d.to_vec())));
        assert_eq!(local(d, 3, 5), Ok(Some(b"cdef\n".to_vec())));
        assert_eq!(local(d, 3, 7), Ok(Some(b"cdef\ng\n".to_vec())));
        assert_eq!(local(d, 10, 1), Ok(None));
        assert_eq!(
            local(d, 11, 1),
            Err(RuleError::OffsetBeyondEnd { off: 11, end: 10 })
        );
        assert_eq!(local(d, 1, 5), Err(RuleError::NotBoundary { off: 1 }));
        assert_eq!(
            local(d, 3, 4),
            Err(RuleError::MaxSizeTooSmall {
                max_size: 4,
                next_len: 5
            })
        );
        assert_eq!(tiered(d, 3, 2), local(d, 3, 2));
        assert_eq!(
            local(d, 0, 0),
            Err(RuleError::MaxSizeTooSmall {
                max_size: 0,
                next_len: 3
            })
        );
    }

    #[test]
    fn boundary_cases() {
        assert_eq!(boundary(0, 5), Ok(None));
        assert_eq!(boundary(5, 5), Ok(None));
        assert_eq!(boundary(3, 5), Ok(Some(2)));
        assert_eq!(
            boundary(6, 5),
            Err(RuleError::OffsetBeyondEnd { off: 6, end: 5 })
        );
        assert_eq!(boundary_byte(3, Some(b'\n')), Ok(()));
        assert_eq!(
            boundary_byte(3, Some(b'x')),
            Err(RuleError::NotBoundary { off: 3 })
        );
        assert_eq!(
            boundary_byte(3, None),
            Err(RuleError::NotBoundary { off: 3 })
        );
    }

    proptest! {
        /// Local (all bytes) and tiered (span, then probes) reads give
        /// exactly the reference model's answer for any offset and limit.
        #[test]
        fn reads_match_the_model(
            msgs in proptest::collection::vec(proptest::collection::vec(b'a'..=b'z', 0..12), 0..12),
            off in 0u64..140,
            max_size in 0u64..60,
        ) {
            let mut data = Vec::new();
            for m in &msgs {
                data.extend_from_slice(m);
                data.push(b'\n');
            }
            let expect = model(&data, off, max_size);
            prop_assert_eq!(local(&data, off, max_size), expect.clone());
            prop_assert_eq!(tiered(&data, off, max_size), expect);
        }
    }
}
