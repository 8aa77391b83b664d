//! The fixed-size object header of format versions 1 and 2: built for a
//! new object, parsed (not authenticated) and checked against the object
//! length the manifest recorded, and its digest. Pure: never does I/O,
//! never checks a tag (that is [`super::Tagger`]'s job).

use super::{
    FormatError, ENTRY_LEN, HEADER_LEN, MAGIC, MAX_FRAME_SIZE, MIN_FRAME_SIZE, RECORDS_FRAME,
    TAG_LEN, VERSION, VERSION_1,
};

/// Section offsets of a version-1 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct V1Offsets {
    records_offset: u64,
    index_offset: u64,
}

/// The fixed-size object header, as stored and as parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    raw: [u8; HEADER_LEN],
    /// Format version (1 or 2).
    pub version: u32,
    /// Id of the key the object was written with.
    pub key_id: [u8; 8],
    /// Initial counter block; frame `i` starts at `iv + (i << 32)`.
    pub iv: [u8; 16],
    /// Bytes of the chunk.
    pub plain_size: u64,
    /// Plaintext bytes per frame (the last may be shorter).
    pub frame_size: u32,
    /// Number of frames.
    pub frame_count: u32,
    /// Length of the records section (ciphertext, without its tag).
    pub records_len: u32,
    v1: Option<V1Offsets>,
}

/// Where the sections of one object are, given its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Object offset of the encrypted records section.
    pub records_offset: u64,
    /// Object offset of the frame index.
    pub index_offset: u64,
    /// Total object length.
    pub object_len: u64,
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Header {
    /// A version-2 header for a new object.
    ///
    /// # Errors
    /// A frame size out of range, or more than 2^32 − 2 frames.
    pub fn new_v2(
        key_id: [u8; 8],
        iv: [u8; 16],
        plain_size: u64,
        frame_size: u32,
        records_len: u32,
    ) -> Result<Self, FormatError> {
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&frame_size) {
            return Err(FormatError::Misuse("frame size out of range"));
        }
        let frame_count = u32::try_from(plain_size.div_ceil(u64::from(frame_size)))
            .ok()
            .filter(|&n| n < RECORDS_FRAME)
            .ok_or(FormatError::Misuse("too many frames"))?;
        let mut raw = [0u8; HEADER_LEN];
        raw[0..8].copy_from_slice(&MAGIC);
        raw[8..12].copy_from_slice(&VERSION.to_le_bytes());
        raw[16..24].copy_from_slice(&key_id);
        raw[24..40].copy_from_slice(&iv);
        raw[40..48].copy_from_slice(&plain_size.to_le_bytes());
        raw[48..52].copy_from_slice(&frame_size.to_le_bytes());
        raw[52..56].copy_from_slice(&frame_count.to_le_bytes());
        raw[56..60].copy_from_slice(&records_len.to_le_bytes());
        Ok(Self {
            raw,
            version: VERSION,
            key_id,
            iv,
            plain_size,
            frame_size,
            frame_count,
            records_len,
            v1: None,
        })
    }

    /// The header bytes as stored.
    #[must_use]
    pub fn bytes(&self) -> &[u8; HEADER_LEN] {
        &self.raw
    }

    /// SHA-256 of the header bytes: what the manifest records, so the
    /// object read back is the very one uploaded (the header holds the
    /// random IV, and every tag covers the header).
    #[must_use]
    pub fn digest(&self) -> [u8; 32] {
        digest(&self.raw)
    }

    /// Parses (does not authenticate) a header; checks that its numbers
    /// are consistent so a reader can size its requests from them.
    ///
    /// # Errors
    /// [`FormatError`] for a short buffer, bad magic or version, or
    /// inconsistent sizes.
    pub fn parse(b: &[u8]) -> Result<Self, FormatError> {
        let b = b
            .get(..HEADER_LEN)
            .ok_or(FormatError::Truncated("header"))?;
        if b[0..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = u32_at(b, 8);
        let (records_len, v1) = match version {
            VERSION_1 => {
                if u32_at(b, 12) != 0 || u32_at(b, 68) != 0 {
                    return Err(FormatError::Corrupt(
                        "reserved header fields are not zero".into(),
                    ));
                }
                let records_len = u32_at(b, 64);
                let v1 = V1Offsets {
                    records_offset: u64_at(b, 56),
                    index_offset: u64_at(b, 72),
                };
                let end = v1
                    .records_offset
                    .checked_add(u64::from(records_len) + TAG_LEN as u64);
                if v1.records_offset < HEADER_LEN as u64 || end != Some(v1.index_offset) {
                    return Err(FormatError::Corrupt("section offsets".into()));
                }
                (records_len, Some(v1))
            }
            VERSION => {
                if u32_at(b, 12) != 0 || b[60..HEADER_LEN].iter().any(|&x| x != 0) {
                    return Err(FormatError::Corrupt(
                        "reserved header fields are not zero".into(),
                    ));
                }
                (u32_at(b, 56), None)
            }
            v => return Err(FormatError::Version(v)),
        };
        let mut raw = [0u8; HEADER_LEN];
        raw.copy_from_slice(b);
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&b[16..24]);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&b[24..40]);
        let h = Self {
            raw,
            version,
            key_id,
            iv,
            plain_size: u64_at(b, 40),
            frame_size: u32_at(b, 48),
            frame_count: u32_at(b, 52),
            records_len,
            v1,
        };
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&h.frame_size) {
            return Err(FormatError::Corrupt(format!("frame size {}", h.frame_size)));
        }
        if u64::from(h.frame_count) != h.plain_size.div_ceil(u64::from(h.frame_size)) {
            return Err(FormatError::Corrupt(format!(
                "{} frames for {} bytes of {}-byte frames",
                h.frame_count, h.plain_size, h.frame_size
            )));
        }
        Ok(h)
    }

    /// Bytes of the frame index plus its tag.
    #[must_use]
    pub fn index_len(&self) -> u64 {
        u64::from(self.frame_count) * ENTRY_LEN as u64 + TAG_LEN as u64
    }

    /// Where the sections are in an object of `object_len` bytes (the
    /// length the manifest recorded): checked against the header before
    /// anything but the header is fetched, so a forged header can never
    /// make a reader fetch or allocate more than the recorded object.
    ///
    /// # Errors
    /// [`FormatError::Corrupt`] when the header's sections do not fit
    /// `object_len` exactly (version 1) or at all (version 2).
    pub fn layout(&self, object_len: u64) -> Result<Layout, FormatError> {
        let bad =
            || FormatError::Corrupt(format!("header does not fit a {object_len}-byte object"));
        let (records_offset, index_offset) = match self.v1 {
            Some(v1) => {
                if v1.index_offset.checked_add(self.index_len()) != Some(object_len) {
                    return Err(bad());
                }
                (v1.records_offset, v1.index_offset)
            }
            None => {
                let index_offset = object_len.checked_sub(self.index_len()).ok_or_else(bad)?;
                let records_offset = index_offset
                    .checked_sub(u64::from(self.records_len) + TAG_LEN as u64)
                    .filter(|&r| r >= HEADER_LEN as u64)
                    .ok_or_else(bad)?;
                (records_offset, index_offset)
            }
        };
        // Every frame costs at least its tag.
        let frames_area = records_offset - HEADER_LEN as u64;
        if frames_area < u64::from(self.frame_count) * TAG_LEN as u64 {
            return Err(bad());
        }
        Ok(Layout {
            records_offset,
            index_offset,
            object_len,
        })
    }

    /// The frame holding plaintext offset `off`.
    #[must_use]
    pub fn frame_of(&self, off: u64) -> u32 {
        u32::try_from(off / u64::from(self.frame_size)).unwrap_or(u32::MAX)
    }
}

/// SHA-256 of `bytes`.
#[must_use]
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
