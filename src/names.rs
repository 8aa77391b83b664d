//! Validated names: [`Category`], [`GroupName`], [`ServerName`] and
//! [`ChunkName`].
//!
//! These newtypes are the only way user-supplied strings become part of a
//! filesystem path. Their parsers accept exactly the character sets of the
//! SPEC (`[A-Za-z0-9_-]`), so `.`/`..`, slashes, NUL, spaces and unicode can
//! never reach a `Path::join`. This module never touches the filesystem.
//!
//! The chunk-name syntax itself is the client crate's
//! [`chunkbus_client::names`], so client and server accept the same names;
//! [`ChunkName`] adds the typed owner.

use std::fmt;

use chunkbus_client::names::{parse_chunk_name, CHUNK_INFIX};
pub use chunkbus_client::names::{CHUNK_INDEX_DIGITS, MAX_CHUNK_INDEX, MAX_SERVER_NAME_LEN};

/// Longest category (and consumer group) name, in bytes.
pub const MAX_CATEGORY_LEN: usize = 128;

/// A name that failed validation; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Bad category name.
    #[error("invalid category {0:?}: use 1-128 characters of A-Z a-z 0-9 _ -")]
    Category(String),
    /// Bad server name.
    #[error("invalid server name {0:?}: use 1-64 characters of A-Z a-z 0-9 _ -")]
    Server(String),
    /// Bad consumer group name.
    #[error("invalid consumer group {0:?}: use 1-128 characters of A-Z a-z 0-9 _ -")]
    Group(String),
    /// Bad chunk name.
    #[error(
        "invalid chunk name {0:?}: expected <server>-chunk<9 digits>, e.g. node1-chunk000000007"
    )]
    Chunk(String),
}

impl crate::error::DomainError for NameError {
    /// An invalid name is always the request's fault.
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::BadRequest
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(is_name_byte)
}

/// A category (stream) name: 1–128 chars of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Category(String);

impl Category {
    /// Validates `s` as a category name.
    ///
    /// # Errors
    /// [`NameError::Category`] when `s` is empty, too long or has a
    /// character outside `[A-Za-z0-9_-]`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if valid_name(s, MAX_CATEGORY_LEN) {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Category(truncate_for_error(s)))
        }
    }

    /// The name as a string slice (safe to use as one path component).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A consumer group name: the same rules as a category name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupName(String);

impl GroupName {
    /// Validates `s` as a consumer group name.
    ///
    /// # Errors
    /// [`NameError::Group`] when `s` is empty, too long or has a character
    /// outside `[A-Za-z0-9_-]`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if valid_name(s, MAX_CATEGORY_LEN) {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Group(truncate_for_error(s)))
        }
    }

    /// The name as a string slice (safe to use as one path component).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A server name (`--name`): 1–64 chars of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerName(String);

impl ServerName {
    /// Validates `s` as a server name.
    ///
    /// # Errors
    /// [`NameError::Server`] when `s` is empty, longer than 64 bytes or has a
    /// character outside `[A-Za-z0-9_-]`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if valid_name(s, MAX_SERVER_NAME_LEN) {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Server(truncate_for_error(s)))
        }
    }

    /// The name as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A chunk file name: `<server>-chunk<9 digits>`.
///
/// Ordering is by owner, then index: the order `listChunks` reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkName {
    owner: ServerName,
    index: u64,
}

impl ChunkName {
    /// Builds the name of chunk `index` owned by `owner`.
    ///
    /// # Errors
    /// [`NameError::Chunk`] when `index` needs more than 9 digits.
    pub fn new(owner: ServerName, index: u64) -> Result<Self, NameError> {
        if index > MAX_CHUNK_INDEX {
            return Err(NameError::Chunk(format!("{owner}{CHUNK_INFIX}{index}")));
        }
        Ok(Self { owner, index })
    }

    /// Parses `<server>-chunk<9 digits>` with the client crate's
    /// [`parse_chunk_name`] (the server part may itself contain `-`, so the
    /// name is split at its fixed-length suffix), then checks the owner as a
    /// [`ServerName`].
    ///
    /// # Errors
    /// [`NameError::Chunk`] for anything else.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let err = || NameError::Chunk(truncate_for_error(s));
        let (owner, index) = parse_chunk_name(s).ok_or_else(err)?;
        let owner = ServerName::parse(owner).map_err(|_| err())?;
        Ok(Self { owner, index })
    }

    /// The server that owns (writes) this chunk.
    #[must_use]
    pub fn owner(&self) -> &ServerName {
        &self.owner
    }

    /// The chunk's index among its owner's chunks of one category.
    #[must_use]
    pub fn index(&self) -> u64 {
        self.index
    }
}

impl fmt::Display for ChunkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{CHUNK_INFIX}{:0width$}",
            self.owner,
            self.index,
            width = CHUNK_INDEX_DIGITS
        )
    }
}

/// Keeps error messages one short line even for huge inputs.
fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 160;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn category_accepts_allowed_charset() {
        for ok in ["a", "A-z_09", &"x".repeat(128)] {
            assert!(Category::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn category_rejects_traversal_and_odd_bytes() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/etc",
            "a/b",
            "a\\b",
            "a\0b",
            "a b",
            "é",
            "a.b",
            &"x".repeat(129),
        ] {
            assert!(Category::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunk_name_round_trips_with_dashes_in_owner() {
        let n = ChunkName::parse("node-1-chunk000000007").unwrap();
        assert_eq!(n.owner().as_str(), "node-1");
        assert_eq!(n.index(), 7);
        assert_eq!(n.to_string(), "node-1-chunk000000007");
    }

    #[test]
    fn chunk_name_rejects_malformed() {
        for bad in [
            "chunk000000001",
            "-chunk000000001",
            "n-chunk00000001",
            "n-chunk0000000001",
            "n-chunk00000000x",
            "n/x-chunk000000001",
            "../n-chunk000000001",
            "n-chunk000000001.idx",
            "n_chunk000000001",
        ] {
            assert!(ChunkName::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn category_parse_never_yields_path_separators(s in "\\PC{0,140}") {
            if let Ok(c) = Category::parse(&s) {
                prop_assert!(!c.as_str().contains(['/', '.', '\\', '\0']));
                prop_assert!(c.as_str().len() <= MAX_CATEGORY_LEN);
            }
        }

        #[test]
        fn chunk_name_display_parse_round_trip(owner in "[A-Za-z0-9_-]{1,64}", index in 0u64..=MAX_CHUNK_INDEX) {
            let name = ChunkName::new(ServerName::parse(&owner).unwrap(), index).unwrap();
            prop_assert_eq!(ChunkName::parse(&name.to_string()).unwrap(), name);
        }
    }
}
