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

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::Mac;

use super::keys::{HmacSha256, KeyRing, Keys};

/// AES-256 in counter mode, the counter the whole 128-bit block (big-endian).
pub(super) type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

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

/// Which chunk an object holds: bound into every tag of a version-2
/// object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    /// Category name.
    pub category: &'a str,
    /// Chunk name.
    pub chunk: &'a str,
}

impl Identity<'_> {
    /// `u16 len ‖ category ‖ u16 len ‖ chunk`, as the MAC sees it.
    fn absorb(&self, m: &mut HmacSha256) {
        for part in [self.category, self.chunk] {
            let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
            m.update(&len.to_le_bytes());
            m.update(part.as_bytes());
        }
    }
}

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

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
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

/// Where frame `i` is in the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Object offset of the ciphertext.
    pub offset: u64,
    /// Ciphertext length (the tag follows it).
    pub len: u32,
    /// Plaintext length of the frame.
    pub plain_len: u32,
}

impl Entry {
    /// Object offset just past the frame's tag.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len) + TAG_LEN as u64
    }

    /// The 16 index bytes of this entry.
    #[must_use]
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut e = [0u8; ENTRY_LEN];
        e[0..8].copy_from_slice(&self.offset.to_le_bytes());
        e[8..12].copy_from_slice(&self.len.to_le_bytes());
        e[12..16].copy_from_slice(&self.plain_len.to_le_bytes());
        e
    }
}

/// The MAC of one object: HMAC-SHA-256 keyed with the MAC key, over the
/// header (and, from version 2, the identity) before every label and body.
/// The common prefix is absorbed once and the state cloned per tag.
#[derive(Clone)]
pub struct Tagger {
    base: HmacSha256,
}

impl std::fmt::Debug for Tagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tagger").finish_non_exhaustive()
    }
}

impl Tagger {
    /// The MAC of the object with `header`, holding chunk `id`.
    #[must_use]
    pub fn new(keys: &Keys, header: &Header, id: Identity<'_>) -> Self {
        let mut base = <HmacSha256 as Mac>::new_from_slice(&keys.mac)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        base.update(&header.raw);
        if header.version != VERSION_1 {
            id.absorb(&mut base);
        }
        Self { base }
    }

    /// A MAC over prefix ‖ `label`, to be fed the body.
    #[must_use]
    pub fn start(&self, label: &[u8]) -> HmacSha256 {
        let mut m = self.base.clone();
        m.update(label);
        m
    }

    /// The tag of `body` under `label`.
    #[must_use]
    pub fn tag(&self, label: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
        let mut m = self.start(label);
        m.update(body);
        m.finalize().into_bytes().into()
    }

    fn verify(
        &self,
        label: &[u8],
        body: &[u8],
        tag: &[u8],
        what: &'static str,
    ) -> Result<(), FormatError> {
        let mut m = self.start(label);
        m.update(body);
        m.verify_slice(tag).map_err(|_| FormatError::BadTag(what))
    }
}

/// Applies the keystream of counter range `frame` of an object to `buf`.
pub(super) fn crypt(keys: &Keys, iv: &[u8; 16], frame: u32, buf: &mut [u8]) {
    cipher(keys, iv, frame).apply_keystream(buf);
}

/// The cipher positioned at the start of counter range `frame`.
pub(super) fn cipher(keys: &Keys, iv: &[u8; 16], frame: u32) -> Aes256Ctr {
    let counter = u128::from_be_bytes(*iv).wrapping_add(u128::from(frame) << 32);
    Aes256Ctr::new((&keys.enc).into(), (&counter.to_be_bytes()).into())
}

/// The keys an object was written with.
///
/// # Errors
/// [`FormatError::UnknownKey`].
pub fn keys_for<'a>(header: &Header, ring: &'a KeyRing) -> Result<&'a Keys, FormatError> {
    ring.by_id(&header.key_id)
        .ok_or_else(|| FormatError::UnknownKey(super::keys::hex(&header.key_id)))
}

/// Authenticates and parses the frame index (`bytes` = index ‖ tag, from
/// `layout.index_offset`).
///
/// # Errors
/// [`FormatError::BadTag`] or entries that do not tile the frames area.
pub fn parse_index(
    header: &Header,
    layout: &Layout,
    tagger: &Tagger,
    bytes: &[u8],
) -> Result<Vec<Entry>, FormatError> {
    let want = usize::try_from(header.index_len()).unwrap_or(usize::MAX);
    let bytes = bytes.get(..want).ok_or(FormatError::Truncated("index"))?;
    let (index, tag) = bytes.split_at(want - TAG_LEN);
    tagger.verify(INDEX_LABEL, index, tag, "frame index")?;
    let mut entries = Vec::with_capacity(header.frame_count as usize);
    let mut next = HEADER_LEN as u64;
    let mut plain = 0u64;
    for e in index.chunks_exact(ENTRY_LEN) {
        let entry = Entry {
            offset: u64_at(e, 0),
            len: u32_at(e, 8),
            plain_len: u32_at(e, 12),
        };
        if entry.offset != next || entry.plain_len == 0 || entry.plain_len > header.frame_size {
            return Err(FormatError::Corrupt("frame index entries".into()));
        }
        next = entry.end();
        plain += u64::from(entry.plain_len);
        entries.push(entry);
    }
    if next != layout.records_offset || plain != header.plain_size {
        return Err(FormatError::Corrupt(
            "frame index does not cover the chunk".into(),
        ));
    }
    Ok(entries)
}

/// The ciphertext and tag of frame `entry` at the start of `bytes`.
fn frame_parts<'b>(entry: &Entry, bytes: &'b [u8]) -> Result<(&'b [u8], &'b [u8]), FormatError> {
    let len = entry.len as usize;
    let bytes = bytes
        .get(..len + TAG_LEN)
        .ok_or(FormatError::Truncated("frame"))?;
    Ok(bytes.split_at(len))
}

/// Authenticates frame `i` (`bytes` = ciphertext ‖ tag) without
/// decrypting it: the check of an upload read back.
///
/// # Errors
/// [`FormatError::BadTag`] or a short buffer.
pub fn verify_frame(
    tagger: &Tagger,
    i: u32,
    entry: &Entry,
    bytes: &[u8],
) -> Result<(), FormatError> {
    let (ct, tag) = frame_parts(entry, bytes)?;
    tagger.verify(&i.to_le_bytes(), ct, tag, "frame")
}

/// Authenticates, decrypts and decompresses frame `i` (`bytes` =
/// ciphertext ‖ tag, as located by `entry`).
///
/// # Errors
/// [`FormatError::BadTag`], or a frame that does not decompress to its
/// recorded length.
pub fn decode_frame(
    header: &Header,
    keys: &Keys,
    tagger: &Tagger,
    i: u32,
    entry: &Entry,
    bytes: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let (ct, tag) = frame_parts(entry, bytes)?;
    tagger.verify(&i.to_le_bytes(), ct, tag, "frame")?;
    let mut buf = ct.to_vec();
    crypt(keys, &header.iv, i, &mut buf);
    let plain = zstd::bulk::decompress(&buf, entry.plain_len as usize)
        .map_err(|e| FormatError::Corrupt(format!("frame {i} does not decompress: {e}")))?;
    if plain.len() != entry.plain_len as usize {
        return Err(FormatError::Corrupt(format!(
            "frame {i} has {} bytes, expected {}",
            plain.len(),
            entry.plain_len
        )));
    }
    Ok(plain)
}

/// Authenticates and decrypts the records section (`bytes` = ciphertext ‖ tag).
///
/// # Errors
/// [`FormatError::BadTag`] or a short buffer.
pub fn decode_records(
    header: &Header,
    keys: &Keys,
    tagger: &Tagger,
    bytes: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let len = header.records_len as usize;
    let bytes = bytes
        .get(..len + TAG_LEN)
        .ok_or(FormatError::Truncated("records"))?;
    let (ct, tag) = bytes.split_at(len);
    tagger.verify(&RECORDS_FRAME.to_le_bytes(), ct, tag, "records")?;
    let mut buf = ct.to_vec();
    crypt(keys, &header.iv, RECORDS_FRAME, &mut buf);
    Ok(buf)
}

/// Decodes a whole object of chunk `id`: (chunk bytes, records).
///
/// # Errors
/// Any [`FormatError`].
pub fn decode_all(
    object: &[u8],
    ring: &KeyRing,
    id: Identity<'_>,
) -> Result<(Vec<u8>, Vec<u8>), FormatError> {
    let header = Header::parse(object)?;
    let layout = header.layout(object.len() as u64)?;
    let keys = keys_for(&header, ring)?;
    let tagger = Tagger::new(keys, &header, id);
    let at = |off: u64| usize::try_from(off).unwrap_or(usize::MAX);
    let entries = parse_index(
        &header,
        &layout,
        &tagger,
        &object[at(layout.index_offset)..],
    )?;
    let mut plain = Vec::with_capacity(at(header.plain_size));
    for (i, e) in entries.iter().enumerate() {
        plain.extend(decode_frame(
            &header,
            keys,
            &tagger,
            i as u32,
            e,
            &object[at(e.offset)..],
        )?);
    }
    let records = decode_records(&header, keys, &tagger, &object[at(layout.records_offset)..])?;
    Ok((plain, records))
}

#[cfg(test)]
mod tests {
    use super::super::encode::encode;
    use super::*;
    use proptest::prelude::*;

    const ID: Identity<'static> = Identity {
        category: "events",
        chunk: "node1-chunk000000003",
    };

    fn ring() -> KeyRing {
        KeyRing::new(Keys::derive(&[7u8; 32]), Vec::new())
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| b"abcdefgh\n"[i % 9]).collect()
    }

    /// A version-1 object, as the previous writer made it.
    fn encode_v1(plain: &[u8], records: &[u8], keys: &Keys, iv: [u8; 16], frame: u32) -> Vec<u8> {
        let frames: Vec<Vec<u8>> = plain
            .chunks(frame as usize)
            .map(|c| zstd::bulk::compress(c, 1).unwrap())
            .collect();
        let body: usize = frames.iter().map(|f| f.len() + TAG_LEN).sum();
        let records_offset = (HEADER_LEN + body) as u64;
        let index_offset = records_offset + records.len() as u64 + TAG_LEN as u64;
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&1u32.to_le_bytes());
        h[16..24].copy_from_slice(&keys.id);
        h[24..40].copy_from_slice(&iv);
        h[40..48].copy_from_slice(&(plain.len() as u64).to_le_bytes());
        h[48..52].copy_from_slice(&frame.to_le_bytes());
        h[52..56].copy_from_slice(&(frames.len() as u32).to_le_bytes());
        h[56..64].copy_from_slice(&records_offset.to_le_bytes());
        h[64..68].copy_from_slice(&(records.len() as u32).to_le_bytes());
        h[72..80].copy_from_slice(&index_offset.to_le_bytes());
        let tag = |label: &[u8], body: &[u8]| -> Vec<u8> {
            let mut m = <HmacSha256 as Mac>::new_from_slice(&keys.mac).unwrap();
            m.update(&h);
            m.update(label);
            m.update(body);
            m.finalize().into_bytes().to_vec()
        };
        let mut out = h.to_vec();
        let mut index = Vec::new();
        for (i, (f, c)) in frames.iter().zip(plain.chunks(frame as usize)).enumerate() {
            let mut ct = f.clone();
            crypt(keys, &iv, i as u32, &mut ct);
            let e = Entry {
                offset: out.len() as u64,
                len: ct.len() as u32,
                plain_len: c.len() as u32,
            };
            index.extend_from_slice(&e.encode());
            out.extend_from_slice(&ct);
            out.extend(tag(&(i as u32).to_le_bytes(), &ct));
        }
        let mut rec = records.to_vec();
        crypt(keys, &iv, RECORDS_FRAME, &mut rec);
        out.extend_from_slice(&rec);
        out.extend(tag(&RECORDS_FRAME.to_le_bytes(), &rec));
        out.extend_from_slice(&index);
        out.extend(tag(INDEX_LABEL, &index));
        out
    }

    #[test]
    fn round_trip_across_frames() {
        let plain = sample(10_000);
        let obj = encode(&plain, b"recs", ring().current(), [1; 16], ID, 3, 4096).unwrap();
        let (p, r) = decode_all(&obj, &ring(), ID).unwrap();
        assert_eq!(p, plain);
        assert_eq!(r, b"recs");
        assert!(obj.len() < plain.len(), "compressed");
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let plain = sample(9000);
        let obj = encode(
            &plain,
            b"0123456789abcdef",
            ring().current(),
            [9; 16],
            ID,
            1,
            4096,
        )
        .unwrap();
        for i in 0..obj.len() {
            let mut bad = obj.clone();
            bad[i] ^= 0x01;
            assert!(
                decode_all(&bad, &ring(), ID).is_err(),
                "flip at {i} accepted"
            );
        }
        for cut in [0, 10, HEADER_LEN, obj.len() - 1] {
            assert!(
                decode_all(&obj[..cut], &ring(), ID).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_object_is_valid_only_as_its_own_chunk() {
        let obj = encode(&sample(5000), b"r", ring().current(), [3; 16], ID, 1, 4096).unwrap();
        for other in [
            Identity {
                category: "other",
                chunk: ID.chunk,
            },
            Identity {
                category: ID.category,
                chunk: "node1-chunk000000004",
            },
            // Length prefixes keep the split unambiguous.
            Identity {
                category: "eventsnode1",
                chunk: "-chunk000000003",
            },
        ] {
            let e = decode_all(&obj, &ring(), other).unwrap_err();
            assert!(matches!(e, FormatError::BadTag(_)), "{other:?}: {e}");
        }
    }

    #[test]
    fn version_1_objects_still_decode_whatever_the_identity() {
        let keys = ring().current().clone();
        let plain = sample(12_345);
        let obj = encode_v1(&plain, b"records!", &keys, [4; 16], 4096);
        let (p, r) = decode_all(&obj, &ring(), ID).unwrap();
        assert_eq!(
            (p.as_slice(), r.as_slice()),
            (plain.as_slice(), &b"records!"[..])
        );
        for i in 0..obj.len() {
            let mut bad = obj.clone();
            bad[i] ^= 0x80;
            assert!(
                decode_all(&bad, &ring(), ID).is_err(),
                "v1 flip at {i} accepted"
            );
        }
    }

    #[test]
    fn a_header_must_fit_the_recorded_object_length() {
        let obj = encode(&sample(20_000), b"", ring().current(), [2; 16], ID, 1, 4096).unwrap();
        let h = Header::parse(&obj).unwrap();
        assert!(h.layout(obj.len() as u64).is_ok());
        for len in [0, 100, HEADER_LEN as u64 + h.index_len()] {
            assert!(h.layout(len).is_err(), "{len}");
        }
        // A header claiming 2^32 − 1 frames does not fit a small object.
        let mut forged = *h.bytes();
        forged[40..48].copy_from_slice(&(4096 * u64::from(u32::MAX)).to_le_bytes());
        forged[52..56].copy_from_slice(&u32::MAX.to_le_bytes());
        let f = Header::parse(&forged).unwrap();
        assert!(f.layout(obj.len() as u64).is_err());
        // Huge lengths never overflow (a real object that long would fit).
        assert!(f.layout(u64::MAX).is_ok());
        assert!(f.layout(f.index_len() + 31).is_err());
    }

    #[test]
    fn wrong_key_is_an_error_and_old_keys_still_read() {
        let old = Keys::derive(&[1u8; 32]);
        let obj = encode(&sample(100), b"", &old, [0; 16], ID, 1, 4096).unwrap();
        let e = decode_all(&obj, &ring(), ID).unwrap_err();
        assert!(matches!(e, FormatError::UnknownKey(_)), "{e}");
        let rotated = KeyRing::new(Keys::derive(&[2u8; 32]), vec![old.clone()]);
        assert_eq!(decode_all(&obj, &rotated, ID).unwrap().0, sample(100));
        // A different key that claims the old key's id fails authentication.
        let mut forged = Keys::derive(&[3u8; 32]);
        forged.id = old.id;
        let e = decode_all(&obj, &KeyRing::new(forged, Vec::new()), ID).unwrap_err();
        assert!(matches!(e, FormatError::BadTag(_)), "{e}");
    }

    proptest! {
        #[test]
        fn round_trip_random(data in proptest::collection::vec(any::<u8>(), 0..20_000),
                             recs in proptest::collection::vec(any::<u8>(), 0..64),
                             frame in 4096u32..9000) {
            let obj = encode(&data, &recs, ring().current(), [5; 16], ID, 1, frame).unwrap();
            let (p, r) = decode_all(&obj, &ring(), ID).unwrap();
            prop_assert_eq!(p, data);
            prop_assert_eq!(r, recs);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&data, &ring(), ID);
        }
    }
}
