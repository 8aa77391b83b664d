//! The tiered object format (byte diagram in `docs/tiering.md`). Pure: no
//! I/O. A chunk is cut into plaintext frames (1 MiB by default); each frame
//! is zstd-compressed, then AES-256-CTR-encrypted with its own counter
//! range, then authenticated with HMAC-SHA-256 over header ‖ frame number ‖
//! ciphertext. The chunk's batch index records travel encrypted in the same
//! way, and an index of the frames is authenticated over header ‖ index, so
//! a reader fetches the header, the index and only the frames it needs.
//! Every tag is checked (in constant time) before anything is decrypted.

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::Mac;

use super::keys::{HmacSha256, KeyRing, Keys};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Magic bytes at the start of every object.
pub const MAGIC: [u8; 8] = *b"CBTIER\0\x01";
/// Format version.
pub const VERSION: u32 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 80;
/// HMAC-SHA-256 tag length.
pub const TAG_LEN: usize = 32;
/// Length of one frame-index entry.
pub const ENTRY_LEN: usize = 16;
/// Default plaintext bytes per frame.
pub const DEFAULT_FRAME_SIZE: u32 = 1 << 20;
/// Largest frame size a reader accepts (bounds its buffers).
pub const MAX_FRAME_SIZE: u32 = 64 << 20;
/// Frame number used for the records section's counter range and tag.
const RECORDS_FRAME: u32 = u32::MAX;

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
    /// An authentication tag did not verify: corrupted, tampered with, or
    /// the wrong key.
    #[error("tiered object failed authentication ({0}): corrupted, tampered with, or a wrong key")]
    BadTag(&'static str),
    /// Authenticated but inconsistent (a bug or a forged header).
    #[error("tiered object is inconsistent: {0}")]
    Corrupt(String),
}

/// The fixed-size object header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
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
    /// Object offset of the encrypted records section.
    pub records_offset: u64,
    /// Length of the records section (ciphertext, without its tag).
    pub records_len: u32,
    /// Object offset of the frame index.
    pub index_offset: u64,
}

impl Header {
    /// Encodes the header.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[16..24].copy_from_slice(&self.key_id);
        h[24..40].copy_from_slice(&self.iv);
        h[40..48].copy_from_slice(&self.plain_size.to_le_bytes());
        h[48..52].copy_from_slice(&self.frame_size.to_le_bytes());
        h[52..56].copy_from_slice(&self.frame_count.to_le_bytes());
        h[56..64].copy_from_slice(&self.records_offset.to_le_bytes());
        h[64..68].copy_from_slice(&self.records_len.to_le_bytes());
        h[72..80].copy_from_slice(&self.index_offset.to_le_bytes());
        h
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
        if version != VERSION {
            return Err(FormatError::Version(version));
        }
        if u32_at(b, 12) != 0 || u32_at(b, 68) != 0 {
            // Reserved fields are zero; tags cover the re-encoded header.
            return Err(FormatError::Corrupt(
                "reserved header fields are not zero".into(),
            ));
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&b[16..24]);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&b[24..40]);
        let h = Self {
            key_id,
            iv,
            plain_size: u64_at(b, 40),
            frame_size: u32_at(b, 48),
            frame_count: u32_at(b, 52),
            records_offset: u64_at(b, 56),
            records_len: u32_at(b, 64),
            index_offset: u64_at(b, 72),
        };
        if h.frame_size == 0 || h.frame_size > MAX_FRAME_SIZE {
            return Err(FormatError::Corrupt(format!("frame size {}", h.frame_size)));
        }
        if u64::from(h.frame_count) != h.plain_size.div_ceil(u64::from(h.frame_size)) {
            return Err(FormatError::Corrupt(format!(
                "{} frames for {} bytes of {}-byte frames",
                h.frame_count, h.plain_size, h.frame_size
            )));
        }
        if h.records_offset < HEADER_LEN as u64
            || h.records_offset + u64::from(h.records_len) + TAG_LEN as u64 != h.index_offset
        {
            return Err(FormatError::Corrupt("section offsets".into()));
        }
        Ok(h)
    }

    /// Bytes of the frame index plus its tag.
    #[must_use]
    pub fn index_len(&self) -> u64 {
        u64::from(self.frame_count) * ENTRY_LEN as u64 + TAG_LEN as u64
    }

    /// Total object size.
    #[must_use]
    pub fn object_len(&self) -> u64 {
        self.index_offset + self.index_len()
    }

    /// The frame holding plaintext offset `off`.
    #[must_use]
    pub fn frame_of(&self, off: u64) -> u32 {
        u32::try_from(off / u64::from(self.frame_size)).unwrap_or(u32::MAX)
    }
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

fn mac(keys: &Keys, header: &[u8; HEADER_LEN], label: &[u8], body: &[u8]) -> HmacSha256 {
    let mut m = <HmacSha256 as Mac>::new_from_slice(&keys.mac)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(header);
    m.update(label);
    m.update(body);
    m
}

fn crypt(keys: &Keys, iv: &[u8; 16], frame: u32, buf: &mut [u8]) {
    let counter = u128::from_be_bytes(*iv).wrapping_add(u128::from(frame) << 32);
    let mut c = Aes256Ctr::new((&keys.enc).into(), (&counter.to_be_bytes()).into());
    c.apply_keystream(buf);
}

/// Encodes a chunk (`plain`) and its batch index records (`records`) as
/// an object, with a fresh `iv`.
///
/// # Errors
/// zstd failed, or the chunk has more than 2^32 − 2 frames.
pub fn encode(
    plain: &[u8],
    records: &[u8],
    keys: &Keys,
    iv: [u8; 16],
    level: i32,
    frame_size: u32,
) -> Result<Vec<u8>, FormatError> {
    let frame_size = frame_size.clamp(4096, MAX_FRAME_SIZE);
    let frame_count = u32::try_from(plain.len().div_ceil(frame_size as usize))
        .ok()
        .filter(|&n| n < RECORDS_FRAME)
        .ok_or_else(|| FormatError::Corrupt("too many frames".into()))?;
    let mut compressor = zstd::bulk::Compressor::new(level)
        .map_err(|e| FormatError::Corrupt(format!("zstd: {e}")))?;
    // Frames are compressed into one reused scratch buffer (fresh memory
    // is slow to touch on this kind of machine) and staged: the header
    // holds section offsets that depend on every compressed size, and
    // every tag covers the header. Then each frame is copied once into
    // the object, encrypted in place and authenticated.
    let mut scratch: Vec<u8> =
        Vec::with_capacity(zstd::zstd_safe::compress_bound(frame_size as usize));
    let mut body: Vec<u8> = Vec::with_capacity(plain.len() / 2 + 4096);
    let mut spans = Vec::with_capacity(frame_count as usize);
    for chunk in plain.chunks(frame_size as usize) {
        compressor
            .compress_to_buffer(chunk, &mut scratch)
            .map_err(|e| FormatError::Corrupt(format!("zstd: {e}")))?;
        spans.push((body.len(), scratch.len(), chunk.len() as u32));
        body.extend_from_slice(&scratch);
    }
    let body_len: usize = body.len() + spans.len() * TAG_LEN;
    let records_offset = (HEADER_LEN + body_len) as u64;
    let records_len = u32::try_from(records.len())
        .map_err(|_| FormatError::Corrupt("records section over 4 GiB".into()))?;
    let header = Header {
        key_id: keys.id,
        iv,
        plain_size: plain.len() as u64,
        frame_size,
        frame_count,
        records_offset,
        records_len,
        index_offset: records_offset + u64::from(records_len) + TAG_LEN as u64,
    };
    let h = header.encode();
    let mut out = Vec::with_capacity(usize::try_from(header.object_len()).unwrap_or(0));
    out.extend_from_slice(&h);
    let mut index = Vec::with_capacity(frame_count as usize * ENTRY_LEN);
    for (i, (at, len, plain_len)) in spans.into_iter().enumerate() {
        let i = i as u32;
        let start = out.len();
        out.extend_from_slice(&body[at..at + len]);
        crypt(keys, &iv, i, &mut out[start..]);
        let tag = mac(keys, &h, &i.to_le_bytes(), &out[start..])
            .finalize()
            .into_bytes();
        index.extend_from_slice(&(start as u64).to_le_bytes());
        index.extend_from_slice(&(len as u32).to_le_bytes());
        index.extend_from_slice(&plain_len.to_le_bytes());
        out.extend_from_slice(&tag);
    }
    let mut rec = records.to_vec();
    crypt(keys, &iv, RECORDS_FRAME, &mut rec);
    let tag = mac(keys, &h, &RECORDS_FRAME.to_le_bytes(), &rec)
        .finalize()
        .into_bytes();
    out.extend_from_slice(&rec);
    out.extend_from_slice(&tag);
    let itag = mac(keys, &h, b"index", &index).finalize().into_bytes();
    out.extend_from_slice(&index);
    out.extend_from_slice(&itag);
    debug_assert_eq!(out.len() as u64, header.object_len());
    Ok(out)
}

/// The keys an object was written with.
///
/// # Errors
/// [`FormatError::UnknownKey`].
pub fn keys_for<'a>(header: &Header, ring: &'a KeyRing) -> Result<&'a Keys, FormatError> {
    ring.by_id(&header.key_id)
        .ok_or_else(|| FormatError::UnknownKey(super::keys::hex(&header.key_id)))
}

/// Authenticates and parses the frame index (`bytes` = index ‖ tag).
///
/// # Errors
/// [`FormatError::BadTag`] or inconsistent entries.
pub fn parse_index(header: &Header, keys: &Keys, bytes: &[u8]) -> Result<Vec<Entry>, FormatError> {
    let want = usize::try_from(header.index_len()).unwrap_or(usize::MAX);
    let bytes = bytes.get(..want).ok_or(FormatError::Truncated("index"))?;
    let (index, tag) = bytes.split_at(want - TAG_LEN);
    mac(keys, &header.encode(), b"index", index)
        .verify_slice(tag)
        .map_err(|_| FormatError::BadTag("frame index"))?;
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
        next = entry.offset + u64::from(entry.len) + TAG_LEN as u64;
        plain += u64::from(entry.plain_len);
        entries.push(entry);
    }
    if next != header.records_offset || plain != header.plain_size {
        return Err(FormatError::Corrupt(
            "frame index does not cover the chunk".into(),
        ));
    }
    Ok(entries)
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
    i: u32,
    entry: &Entry,
    bytes: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let len = entry.len as usize;
    let bytes = bytes
        .get(..len + TAG_LEN)
        .ok_or(FormatError::Truncated("frame"))?;
    let (ct, tag) = bytes.split_at(len);
    mac(keys, &header.encode(), &i.to_le_bytes(), ct)
        .verify_slice(tag)
        .map_err(|_| FormatError::BadTag("frame"))?;
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
pub fn decode_records(header: &Header, keys: &Keys, bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
    let len = header.records_len as usize;
    let bytes = bytes
        .get(..len + TAG_LEN)
        .ok_or(FormatError::Truncated("records"))?;
    let (ct, tag) = bytes.split_at(len);
    mac(keys, &header.encode(), &RECORDS_FRAME.to_le_bytes(), ct)
        .verify_slice(tag)
        .map_err(|_| FormatError::BadTag("records"))?;
    let mut buf = ct.to_vec();
    crypt(keys, &header.iv, RECORDS_FRAME, &mut buf);
    Ok(buf)
}

/// Decodes a whole object: (chunk bytes, records).
///
/// # Errors
/// Any [`FormatError`].
pub fn decode_all(object: &[u8], ring: &KeyRing) -> Result<(Vec<u8>, Vec<u8>), FormatError> {
    let header = Header::parse(object)?;
    if object.len() as u64 != header.object_len() {
        return Err(FormatError::Truncated("object length"));
    }
    let keys = keys_for(&header, ring)?;
    let at = |off: u64| usize::try_from(off).unwrap_or(usize::MAX);
    let entries = parse_index(&header, keys, &object[at(header.index_offset)..])?;
    let mut plain = Vec::with_capacity(at(header.plain_size));
    for (i, e) in entries.iter().enumerate() {
        plain.extend(decode_frame(
            &header,
            keys,
            i as u32,
            e,
            &object[at(e.offset)..],
        )?);
    }
    let records = decode_records(&header, keys, &object[at(header.records_offset)..])?;
    Ok((plain, records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> KeyRing {
        KeyRing::new(Keys::derive(&[7u8; 32]), Vec::new())
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| b"abcdefgh\n"[i % 9]).collect()
    }

    #[test]
    fn round_trip_across_frames() {
        let plain = sample(10_000);
        let obj = encode(&plain, b"recs", ring().current(), [1; 16], 3, 4096).unwrap();
        let (p, r) = decode_all(&obj, &ring()).unwrap();
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
            1,
            4096,
        )
        .unwrap();
        for i in 0..obj.len() {
            let mut bad = obj.clone();
            bad[i] ^= 0x01;
            assert!(decode_all(&bad, &ring()).is_err(), "flip at {i} accepted");
        }
        for cut in [0, 10, HEADER_LEN, obj.len() - 1] {
            assert!(decode_all(&obj[..cut], &ring()).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn wrong_key_is_an_error_and_old_keys_still_read() {
        let old = Keys::derive(&[1u8; 32]);
        let obj = encode(&sample(100), b"", &old, [0; 16], 1, 4096).unwrap();
        let e = decode_all(&obj, &ring()).unwrap_err();
        assert!(matches!(e, FormatError::UnknownKey(_)), "{e}");
        let rotated = KeyRing::new(Keys::derive(&[2u8; 32]), vec![old.clone()]);
        assert_eq!(decode_all(&obj, &rotated).unwrap().0, sample(100));
        // A different key that claims the old key's id fails authentication.
        let mut forged = Keys::derive(&[3u8; 32]);
        forged.id = old.id;
        let e = decode_all(&obj, &KeyRing::new(forged, Vec::new())).unwrap_err();
        assert!(matches!(e, FormatError::BadTag(_)), "{e}");
    }

    proptest! {
        #[test]
        fn round_trip_random(data in proptest::collection::vec(any::<u8>(), 0..20_000),
                             recs in proptest::collection::vec(any::<u8>(), 0..64),
                             frame in 4096u32..9000) {
            let obj = encode(&data, &recs, ring().current(), [5; 16], 1, frame).unwrap();
            let (p, r) = decode_all(&obj, &ring()).unwrap();
            prop_assert_eq!(p, data);
            prop_assert_eq!(r, recs);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&data, &ring());
        }
    }
}
