//! The tiered object format (byte diagrams in `docs/tiering.md`), reading
//! side; the writing side is [`super::encode`]. Pure: no I/O.
//!
//! A chunk is cut into plaintext frames (1 MiB by default); each frame is
//! zstd-compressed, then AES-256-CTR-encrypted with its own counter range,
//! then authenticated with HMAC-SHA-256. The chunk's batch index records
//! travel encrypted in the same way, and an index of the frames is
//! authenticated too, so a reader fetches the header, the index and only
//! the frames it needs. Every tag is checked (in constant time) before
//! anything is decrypted.
//!
//! Two versions are read:
//! - **2** (written now): every tag covers header ‖ identity ‖ label ‖
//!   body, where the identity is the category and chunk name, so an
//!   object is only valid *as that chunk*. The header holds no section
//!   offsets (they are derived from the object length the manifest
//!   records), so it is known before the first frame is compressed and
//!   objects can be streamed.
//! - **1** (written before): tags cover header ‖ label ‖ body; the header
//!   holds the section offsets. Read only for manifest entries without a
//!   header digest, until the tierer upgrades them (`upgrade.rs`).
//!
//! Layout of this module (each file pure, none does I/O):
//! - `mod.rs`: the constants, [`FormatError`], and the re-exports.
//! - `header.rs`: the fixed-size header of both versions (build, parse,
//!   check against the recorded object length) and its digest.
//! - `crypto.rs`: the chunk [`Identity`], the per-object MAC ([`Tagger`]),
//!   the counter-mode cipher, and which key an object was written with.
//! - `frames.rs`: the frame index and the decoding of frames, records and
//!   whole objects.

mod crypto;
mod frames;
mod header;
#[cfg(test)]
mod tests;

pub(super) use crypto::{cipher, crypt, Aes256Ctr};
pub use crypto::{keys_for, Identity, Tagger};
pub use frames::{decode_all, decode_frame, decode_records, parse_index, verify_frame, Entry};
pub use header::{digest, Header, Layout};

/// Magic bytes at the start of every object.
pub const MAGIC: [u8; 8] = *b"CBTIER\0\x01";
/// The format version written now.
pub const VERSION: u32 = 2;
/// The first format version (read only).
pub const VERSION_1: u32 = 1;
/// Header length in bytes (both versions).
pub const HEADER_LEN: usize = 80;
/// HMAC-SHA-256 tag length.
pub const TAG_LEN: usize = 32;
/// Length of one frame-index entry.
pub const ENTRY_LEN: usize = 16;
/// Default plaintext bytes per frame.
pub const DEFAULT_FRAME_SIZE: u32 = 1 << 20;
/// Smallest frame size a reader accepts (the writer never used less).
pub const MIN_FRAME_SIZE: u32 = 4096;
/// Largest frame size a reader accepts (bounds its buffers).
pub const MAX_FRAME_SIZE: u32 = 64 << 20;
/// Frame number used for the records section's counter range and tag.
pub(super) const RECORDS_FRAME: u32 = u32::MAX;
/// Label of the frame index's tag.
pub(super) const INDEX_LABEL: &[u8] = b"index";

/// Why an object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Not a chunkbus tiered object.
    #[error("not a chunkbus tiered object (bad magic)")]
    BadMagic,
    /// A version this build cannot read.
    #[error("tiered object format version {0} is not supported")]
    Version(u32),
    /// Written with a key that is not configured.
    #[error("tiered object was written with key id {0}, which is not configured (add it to the old keys)")]
    UnknownKey(String),
    /// Fewer bytes than the format needs.
    #[error("tiered object is truncated ({0})")]
    Truncated(&'static str),
    /// An authentication tag did not verify: corrupted, tampered with,
    /// another chunk's object, or the wrong key.
    #[error("tiered object failed authentication ({0}): corrupted, tampered with, another chunk's object, or a wrong key")]
    BadTag(&'static str),
    /// Authenticated but inconsistent (a bug or a forged header).
    #[error("tiered object is inconsistent: {0}")]
    Corrupt(String),
    /// Encoding was fed more or less than it announced (a bug).
    #[error("tiered object encoder misuse: {0}")]
    Misuse(&'static str),
}
