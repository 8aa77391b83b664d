//! What a [`Consumer`](crate::Consumer) hands out and what the application
//! stores: [`Batch`] (whole messages of one chunk) with its [`Messages`]
//! iterator, and [`Position`]/[`Positions`] (where to resume).
//!
//! Pure data: never does I/O, never talks to a server.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::names::parse_chunk_name;

/// A place in one owner's stream: everything before `offset` of `chunk`
/// (and all of that owner's older chunks) has been processed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Chunk name, `<owner>-chunk<9 digits>`.
    pub chunk: String,
    /// Byte offset in the chunk (a message boundary).
    pub offset: u64,
}

/// Acknowledged positions of a category, one per chunk owner. Serializes
/// to JSON as `{"owner": {"chunk": …, "offset": …}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Positions(pub BTreeMap<String, Position>);

/// Whole messages read from one chunk.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The chunk's owner (server name).
    pub owner: Arc<str>,
    /// Chunk name.
    pub chunk: Arc<str>,
    /// Offset of `data` in the chunk.
    pub offset: u64,
    /// One or more messages, each ending in `\n`.
    pub data: Bytes,
    /// Whether this batch ends a sealed chunk. With `chunk_acks`, a batch
    /// may be empty: it then only marks the end of a sealed chunk whose
    /// last messages were delivered before the reader knew it was sealed;
    /// ack it like any other.
    pub ends_chunk: bool,
}

impl Batch {
    /// Offset just past this batch: the position to store once processed.
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// # let batch = Batch::from_parts("n1-chunk000000000", 10, "a\nbb\n");
    /// assert_eq!(batch.end(), 15);
    /// ```
    #[must_use]
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }

    /// The messages, each with its trailing newline.
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// # let batch = Batch::from_parts("n1-chunk000000000", 0, "a\nbb\n");
    /// let msgs: Vec<&[u8]> = batch.messages().collect();
    /// assert_eq!(msgs, [&b"a\n"[..], &b"bb\n"[..]]);
    /// ```
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        self.data.split_inclusive(|&b| b == b'\n')
    }

    /// The messages with their offsets in the chunk (where each starts):
    /// `(offset, message)`, the message with its trailing newline. Also
    /// what `for (offset, msg) in &batch` iterates.
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// # let batch = Batch::from_parts("n1-chunk000000000", 10, "a\nbb\n");
    /// let got: Vec<(u64, &[u8])> = batch.iter().collect();
    /// assert_eq!(got, [(10, &b"a\n"[..]), (12, &b"bb\n"[..])]);
    /// for (offset, msg) in &batch {
    ///     println!("{offset}: {}", String::from_utf8_lossy(msg));
    /// }
    /// ```
    #[must_use]
    pub fn iter(&self) -> Messages<'_> {
        Messages {
            rest: &self.data,
            offset: self.offset,
        }
    }

    /// Number of messages in the batch (counts newlines).
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// # let batch = Batch::from_parts("n1-chunk000000000", 0, "a\nbb\n");
    /// assert_eq!(batch.len(), 2);
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        memchr::memchr_iter(b'\n', &self.data).count()
    }

    /// Whether the batch holds no message (only an end-of-chunk marker).
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// assert!(Batch::from_parts("n1-chunk000000000", 7, "").is_empty());
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Where to resume after this batch.
    ///
    /// ```
    /// # use chunkbus_client::Batch;
    /// # let batch = Batch::from_parts("n1-chunk000000000", 10, "a\n");
    /// let p = batch.position();
    /// assert_eq!((p.chunk.as_str(), p.offset), ("n1-chunk000000000", 12));
    /// ```
    #[must_use]
    pub fn position(&self) -> Position {
        Position {
            chunk: self.chunk.to_string(),
            offset: self.end(),
        }
    }

    /// A batch of `data` read from `chunk` at `offset` (for tests and
    /// examples; the consumer makes the real ones). The owner is taken
    /// from the chunk name.
    ///
    /// ```
    /// use chunkbus_client::Batch;
    /// let b = Batch::from_parts("node1-chunk000000003", 0, "hello\n");
    /// assert_eq!(&*b.owner, "node1");
    /// ```
    #[must_use]
    pub fn from_parts(chunk: &str, offset: u64, data: impl Into<Bytes>) -> Self {
        let owner = parse_chunk_name(chunk).map_or(chunk, |(o, _)| o);
        Self {
            owner: owner.into(),
            chunk: chunk.into(),
            offset,
            data: data.into(),
            ends_chunk: false,
        }
    }
}

/// The messages of a [`Batch`] with their offsets ([`Batch::iter`]).
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    offset: u64,
}

impl<'a> Iterator for Messages<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let len = memchr::memchr(b'\n', self.rest).map_or(self.rest.len(), |i| i + 1);
        let (msg, rest) = self.rest.split_at(len);
        let at = self.offset;
        self.rest = rest;
        self.offset += len as u64;
        Some((at, msg))
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = (u64, &'a [u8]);
    type IntoIter = Messages<'a>;

    fn into_iter(self) -> Messages<'a> {
        self.iter()
    }
}
