//! Pure message framing over `&[u8]`: where messages end, whether an offset
//! is a boundary, and incremental validation of producer bodies.
//!
//! A message is a run of bytes ending in `\n` (the newline is part of it), so
//! message boundaries are exactly the positions just after a `\n`. Nothing in
//! this module performs I/O; readers, recovery and the HTTP body checker all
//! build on it.

/// Length of the longest prefix of `buf` made of whole messages.
///
/// A trailing partial message is the normal "incomplete" case, not an error.
#[must_use]
pub fn last_complete_message_end(buf: &[u8]) -> usize {
    memchr::memrchr(b'\n', buf).map_or(0, |i| i + 1)
}

/// Whether `off` is a message boundary of `data` (0, or just after a `\n`).
/// Offsets past the end of `data` are not boundaries.
#[must_use]
pub fn is_message_boundary(data: &[u8], off: usize) -> bool {
    off == 0 || (off <= data.len() && data[off - 1] == b'\n')
}

/// Length of the first message in `buf` (newline included), or `None` if
/// `buf` holds no complete message.
#[must_use]
pub fn first_message_len(buf: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', buf).map(|i| i + 1)
}

/// Why a producer body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body had no bytes.
    #[error("empty body: send one or more messages, each ending in \\n")]
    Empty,
    /// The last message lacks its newline.
    #[error(
        "body does not end in \\n: every message, including the last, must end with a newline"
    )]
    MissingFinalNewline,
    /// One message is longer than the limit.
    #[error("message of at least {len} bytes exceeds max_message_size of {max} bytes (newline included)")]
    MessageTooLarge {
        /// Bytes seen so far in the offending message.
        len: u64,
        /// The configured limit.
        max: u64,
    },
    /// The whole body is longer than the limit.
    #[error("body of at least {len} bytes exceeds max_batch_size of {max} bytes")]
    BodyTooLarge {
        /// Bytes seen so far.
        len: u64,
        /// The configured limit.
        max: u64,
    },
}

/// Validates a producer body piece by piece as it arrives, so oversize input
/// is refused without buffering it, and computes the body's CRC32C on the way.
#[derive(Debug)]
pub struct BodyChecker {
    max_message: u64,
    max_body: u64,
    total: u64,
    current_message: u64,
    messages: u64,
    crc: u32,
    last_byte: Option<u8>,
}

impl BodyChecker {
    /// A checker for the given limits (bytes, newline included).
    #[must_use]
    pub fn new(max_message: u64, max_body: u64) -> Self {
        Self {
            max_message,
            max_body,
            total: 0,
            current_message: 0,
            messages: 0,
            crc: 0,
            last_byte: None,
        }
    }

    /// Feeds the next piece of the body.
    ///
    /// # Errors
    /// [`BodyError::BodyTooLarge`] or [`BodyError::MessageTooLarge`] as soon
    /// as a limit is crossed.
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), BodyError> {
        if piece.is_empty() {
            return Ok(());
        }
        self.total += piece.len() as u64;
        if self.total > self.max_body {
            return Err(BodyError::BodyTooLarge {
                len: self.total,
                max: self.max_body,
            });
        }
        let mut start = 0usize;
        for nl in memchr::memchr_iter(b'\n', piece) {
            let len = self.current_message + (nl + 1 - start) as u64;
            if len > self.max_message {
                return Err(BodyError::MessageTooLarge {
                    len,
                    max: self.max_message,
                });
            }
            self.current_message = 0;
            self.messages += 1;
            start = nl + 1;
        }
        self.current_message += (piece.len() - start) as u64;
        if self.current_message > self.max_message {
            return Err(BodyError::MessageTooLarge {
                len: self.current_message,
                max: self.max_message,
            });
        }
        self.crc = crc32c::crc32c_append(self.crc, piece);
        self.last_byte = piece.last().copied();
        Ok(())
    }

    /// Whole messages (newlines) fed so far.
    #[must_use]
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Ends the body: checks it is non-empty and ends in a newline.
    ///
    /// # Errors
    /// [`BodyError::Empty`] or [`BodyError::MissingFinalNewline`].
    pub fn finish(&self) -> Result<CheckedBody, BodyError> {
        match self.last_byte {
            None => Err(BodyError::Empty),
            Some(b'\n') => Ok(CheckedBody {
                len: self.total,
                crc: self.crc,
            }),
            Some(_) => Err(BodyError::MissingFinalNewline),
        }
    }
}

/// Summary of a validated body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedBody {
    /// Total length in bytes.
    pub len: u64,
    /// CRC32C (Castagnoli) of all bytes.
    pub crc: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn last_complete_end_cases() {
        assert_eq!(last_complete_message_end(b""), 0);
        assert_eq!(last_complete_message_end(b"abc"), 0);
        assert_eq!(last_complete_message_end(b"a\nb"), 2);
        assert_eq!(last_complete_message_end(b"a\nb\n"), 4);
    }

    #[test]
    fn boundaries() {
        let d = b"ab\ncd\n";
        assert!(is_message_boundary(d, 0));
        assert!(!is_message_boundary(d, 1));
        assert!(is_message_boundary(d, 3));
        assert!(is_message_boundary(d, 6));
        assert!(!is_message_boundary(d, 7));
    }

    #[test]
    fn checker_limits() {
        let mut c = BodyChecker::new(4, 100);
        c.feed(b"abc\n").unwrap();
        assert_eq!(
            c.feed(b"abcd\n"),
            Err(BodyError::MessageTooLarge { len: 5, max: 4 })
        );
        let mut c = BodyChecker::new(4, 100);
        c.feed(b"ab").unwrap();
        c.feed(b"c").unwrap();
        assert!(matches!(
            c.feed(b"de"),
            Err(BodyError::MessageTooLarge { .. })
        ));
        let mut c = BodyChecker::new(100, 5);
        assert!(matches!(
            c.feed(b"abcdef\n"),
            Err(BodyError::BodyTooLarge { .. })
        ));
        assert_eq!(BodyChecker::new(1, 1).finish(), Err(BodyError::Empty));
        let mut c = BodyChecker::new(10, 10);
        c.feed(b"a\nb").unwrap();
        assert_eq!(c.finish(), Err(BodyError::MissingFinalNewline));
    }

    proptest! {
        #[test]
        fn checker_matches_whole_body_rules(
            body in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..5),
            max_message in 1u64..40,
        ) {
            let mut c = BodyChecker::new(max_message, 1_000);
            let mut points: Vec<usize> = cuts.into_iter().filter(|&x| x <= body.len()).collect();
            points.sort_unstable();
            let mut prev = 0;
            let mut res = Ok(());
            for p in points.into_iter().chain([body.len()]) {
                if res.is_ok() { res = c.feed(&body[prev..p]); }
                prev = p;
            }
            let longest = body.split_inclusive(|&b| b == b'\n').map(|m| m.len() as u64).max().unwrap_or(0);
            if longest > max_message {
                let too_large = matches!(res, Err(BodyError::MessageTooLarge { .. }));
                prop_assert!(too_large, "expected MessageTooLarge, got {:?}", res);
            } else {
                prop_assert!(res.is_ok());
                let fin = c.finish();
                if body.is_empty() { prop_assert_eq!(fin, Err(BodyError::Empty)); }
                else if body.last() != Some(&b'\n') { prop_assert_eq!(fin, Err(BodyError::MissingFinalNewline)); }
                else {
                    let f = fin.unwrap();
                    prop_assert_eq!(f.crc, crc32c::crc32c(&body));
                    prop_assert_eq!(f.len, body.len() as u64);
                }
            }
        }
    }
}
