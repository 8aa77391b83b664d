//! The frame index and decoding: authenticating and parsing the index,
//! then authenticating, decrypting and decompressing frames and the
//! records section, or a whole object at once. Pure: never does I/O,
//! never decrypts before the tag is checked.

use super::header::{u32_at, u64_at};
use super::{
    crypt, keys_for, FormatError, Header, Identity, Layout, Tagger, ENTRY_LEN, HEADER_LEN,
    INDEX_LABEL, RECORDS_FRAME, TAG_LEN,
};
use crate::tier::keys::{KeyRing, Keys};

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
