//! The writing side of the tiered object format (version 2): a streaming
//! encoder fed one plaintext frame at a time, then the records section in
//! pieces, appending object bytes to a caller's buffer. Pure: no I/O, and
//! its memory is one frame's scratch plus the frame index (16 bytes per
//! frame), whatever the chunk size.
//!
//! Everything a tag covers is known before the first frame: the header
//! holds sizes only (no section offsets), and the identity (category,
//! chunk) is fixed. The order of calls is enforced: exactly
//! `frame_count` frames of `frame_size` bytes (the last may be shorter),
//! then exactly `records_len` bytes of records, then [`Encoder::finish`].

use aes::cipher::StreamCipher;
use hmac::Mac;

use super::format::{
    self, Aes256Ctr, Entry, FormatError, Header, Identity, Tagger, ENTRY_LEN, HEADER_LEN,
    INDEX_LABEL, RECORDS_FRAME, TAG_LEN,
};
use super::keys::{HmacSha256, Keys};

/// What a finished object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// Object length in bytes.
    pub object_len: u64,
    /// SHA-256 of the header (recorded in the manifest).
    pub header_digest: [u8; 32],
    /// Key id it was written with.
    pub key_id: [u8; 8],
}

/// The shape of one object to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec<'a> {
    /// The chunk it holds.
    pub id: Identity<'a>,
    /// Bytes of the chunk.
    pub plain_size: u64,
    /// Bytes of its batch index records.
    pub records_len: u32,
    /// Plaintext bytes per frame.
    pub frame_size: u32,
    /// zstd level.
    pub level: i32,
}

/// The records section in progress.
struct Records {
    cipher: Aes256Ctr,
    mac: HmacSha256,
    left: u64,
}

/// A streaming encoder of one object.
pub struct Encoder {
    keys: Keys,
    header: Header,
    tagger: Tagger,
    compressor: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
    next_frame: u32,
    plain_left: u64,
    offset: u64,
    index: Vec<u8>,
    records: Option<Records>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("header", &self.header)
            .field("next_frame", &self.next_frame)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// An encoder of the object `spec` with a fresh `iv`; the header is
    /// written to `out`.
    ///
    /// # Errors
    /// Frame size out of range, too many frames, or zstd failed to start.
    pub fn new(
        keys: &Keys,
        iv: [u8; 16],
        spec: Spec<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Self, FormatError> {
        let header = Header::new_v2(
            keys.id,
            iv,
            spec.plain_size,
            spec.frame_size,
            spec.records_len,
        )?;
        let frame_size = spec.frame_size;
        let tagger = Tagger::new(keys, &header, spec.id);
        let compressor = zstd::bulk::Compressor::new(spec.level)
            .map_err(|e| FormatError::Corrupt(format!("zstd: {e}")))?;
        out.extend_from_slice(header.bytes());
        Ok(Self {
            keys: keys.clone(),
            header,
            tagger,
            compressor,
            scratch: Vec::with_capacity(zstd::zstd_safe::compress_bound(frame_size as usize)),
            next_frame: 0,
            plain_left: spec.plain_size,
            offset: HEADER_LEN as u64,
            index: Vec::with_capacity(header.frame_count as usize * ENTRY_LEN),
            records: None,
        })
    }

    /// The object's header.
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Plaintext bytes the next frame must have (0 once all are written).
    #[must_use]
    pub fn next_frame_len(&self) -> usize {
        usize::try_from(self.plain_left.min(u64::from(self.header.frame_size))).unwrap_or(0)
    }

    /// Compresses, encrypts and authenticates the next frame, appending
    /// ciphertext ‖ tag to `out`.
    ///
    /// # Errors
    /// `plain` is not [`Encoder::next_frame_len`] bytes, or zstd failed.
    pub fn frame(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        if plain.is_empty() || plain.len() != self.next_frame_len() {
            return Err(FormatError::Misuse("frame of the wrong length"));
        }
        self.compressor
            .compress_to_buffer(plain, &mut self.scratch)
            .map_err(|e| FormatError::Corrupt(format!("zstd: {e}")))?;
        let i = self.next_frame;
        format::crypt(&self.keys, &self.header.iv, i, &mut self.scratch);
        let tag = self.tagger.tag(&i.to_le_bytes(), &self.scratch);
        let entry = Entry {
            offset: self.offset,
            len: u32::try_from(self.scratch.len())
                .map_err(|_| FormatError::Misuse("frame over 4 GiB"))?,
            plain_len: plain.len() as u32,
        };
        self.index.extend_from_slice(&entry.encode());
        out.extend_from_slice(&self.scratch);
        out.extend_from_slice(&tag);
        self.offset = entry.end();
        self.plain_left -= plain.len() as u64;
        self.next_frame += 1;
        Ok(())
    }

    /// Encrypts the next piece of the records section into `out` (after
    /// every frame).
    ///
    /// # Errors
    /// Frames are missing, or more records than announced.
    pub fn records(&mut self, piece: &[u8], out: &mut Vec<u8>) -> Result<(), FormatError> {
        let r = self.records_state()?;
        r.left = r
            .left
            .checked_sub(piece.len() as u64)
            .ok_or(FormatError::Misuse("more records than announced"))?;
        let start = out.len();
        out.extend_from_slice(piece);
        r.cipher.apply_keystream(&mut out[start..]);
        r.mac.update(&out[start..]);
        self.offset += piece.len() as u64;
        Ok(())
    }

    fn records_state(&mut self) -> Result<&mut Records, FormatError> {
        if self.plain_left > 0 {
            return Err(FormatError::Misuse("records before the last frame"));
        }
        Ok(self.records.get_or_insert_with(|| Records {
            cipher: format::cipher(&self.keys, &self.header.iv, RECORDS_FRAME),
            mac: self.tagger.start(&RECORDS_FRAME.to_le_bytes()),
            left: u64::from(self.header.records_len),
        }))
    }

    /// Appends the records tag, the frame index and its tag to `out`.
    ///
    /// # Errors
    /// Frames or records are missing.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<Encoded, FormatError> {
        let r = self.records_state()?;
        if r.left != 0 {
            return Err(FormatError::Misuse("fewer records than announced"));
        }
        let mac = r.mac.clone();
        out.extend_from_slice(&mac.finalize().into_bytes());
        let itag = self.tagger.tag(INDEX_LABEL, &self.index);
        out.extend_from_slice(&self.index);
        out.extend_from_slice(&itag);
        let object_len = self.offset + TAG_LEN as u64 + self.index.len() as u64 + TAG_LEN as u64;
        Ok(Encoded {
            object_len,
            header_digest: self.header.digest(),
            key_id: self.header.key_id,
        })
    }
}

/// Encodes a whole chunk (`plain`) and its batch index records in memory:
/// for tests and the bench. The tierer streams with [`Encoder`].
///
/// # Errors
/// As [`Encoder`]; `records` over 4 GiB.
pub fn encode(
    plain: &[u8],
    records: &[u8],
    keys: &Keys,
    iv: [u8; 16],
    id: Identity<'_>,
    level: i32,
    frame_size: u32,
) -> Result<Vec<u8>, FormatError> {
    let records_len =
        u32::try_from(records.len()).map_err(|_| FormatError::Misuse("records over 4 GiB"))?;
    let mut out = Vec::with_capacity(plain.len() / 2 + 4096);
    let spec = Spec {
        id,
        plain_size: plain.len() as u64,
        records_len,
        frame_size,
        level,
    };
    let mut enc = Encoder::new(keys, iv, spec, &mut out)?;
    for frame in plain.chunks(frame_size as usize) {
        enc.frame(frame, &mut out)?;
    }
    enc.records(records, &mut out)?;
    let done = enc.finish(&mut out)?;
    debug_assert_eq!(done.object_len, out.len() as u64);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Identity<'static> = Identity {
        category: "c",
        chunk: "n1-chunk000000001",
    };

    #[test]
    fn streaming_in_pieces_equals_encoding_at_once() {
        let keys = Keys::derive(&[9u8; 32]);
        let plain: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let records: Vec<u8> = (0..100u8).collect();
        let whole = encode(&plain, &records, &keys, [1; 16], ID, 1, 4096).unwrap();
        let mut out = Vec::new();
        let spec = Spec {
            id: ID,
            plain_size: 50_000,
            records_len: 100,
            frame_size: 4096,
            level: 1,
        };
        let mut enc = Encoder::new(&keys, [1; 16], spec, &mut out).unwrap();
        let mut at = 0;
        while enc.next_frame_len() > 0 {
            let n = enc.next_frame_len();
            enc.frame(&plain[at..at + n], &mut out).unwrap();
            at += n;
        }
        for piece in records.chunks(7) {
            enc.records(piece, &mut out).unwrap();
        }
        let done = enc.finish(&mut out).unwrap();
        assert_eq!(out, whole);
        assert_eq!(done.object_len, whole.len() as u64);
        assert_eq!(done.header_digest, format::digest(&whole[..HEADER_LEN]));
    }

    #[test]
    fn misuse_is_an_error_not_a_bad_object() {
        let keys = Keys::derive(&[9u8; 32]);
        let mut out = Vec::new();
        let spec = Spec {
            id: ID,
            plain_size: 5000,
            records_len: 4,
            frame_size: 4096,
            level: 1,
        };
        let mut enc = Encoder::new(&keys, [0; 16], spec, &mut out).unwrap();
        assert!(
            enc.records(b"x", &mut out).is_err(),
            "records before frames"
        );
        assert!(enc.frame(&[0; 100], &mut out).is_err(), "short frame");
        enc.frame(&[0; 4096], &mut out).unwrap();
        enc.frame(&[0; 904], &mut out).unwrap();
        assert!(enc.frame(&[0; 1], &mut out).is_err(), "extra frame");
        assert!(enc.records(b"12345", &mut out).is_err(), "too many records");
        enc.records(b"12", &mut out).unwrap();
        assert!(enc.finish(&mut out).is_err(), "too few records");
    }
}
