//! The binding of an object to its chunk, checked before a reader trusts
//! anything in it: fetch the 80-byte header, compare it with the
//! manifest entry (header digest; plain size and key id; format 1 only
//! for entries without a digest), check that the sections it describes
//! fit the object length the manifest recorded, and only then fetch and
//! authenticate the frame index (its tag covers the header and, from
//! format 2, the category and chunk name). So a planted or swapped object
//! costs one 80-byte GET and a `502`, never a large fetch or allocation.
//!
//! An entry recorded before format 2 (no digest) whose object is already
//! in format 2 — an upgrade uploaded it and the manifest line is not
//! written yet, or a crash came in between — is read with the length the
//! store reports: its tags bind it to this chunk, and its index length
//! follows from the recorded chunk size. Never decrypts frames, never
//! caches (that is `reader.rs`).

use super::format::{self, Entry, FormatError, Header, Identity, Layout, Tagger, HEADER_LEN};
use super::keys::KeyRing;
use super::manifest::TieredChunk;
use super::reader::TierReadError;
use super::store::{AnyStore, ObjectStore};

/// An object as the manifest knows it.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    /// Object key in the store.
    pub key: &'a str,
    /// The chunk it must hold.
    pub id: Identity<'a>,
    /// The manifest entry (or, right after an upload, the one about to be
    /// recorded).
    pub entry: TieredChunk,
}

impl ObjectRef<'_> {
    fn mismatch(&self, what: impl Into<String>) -> TierReadError {
        TierReadError::Mismatch {
            key: self.key.to_owned(),
            what: what.into(),
        }
    }

    fn bad(&self, source: FormatError) -> TierReadError {
        TierReadError::Format {
            key: self.key.to_owned(),
            source,
        }
    }
}

/// Header, layout and authenticated index of one object.
#[derive(Debug)]
pub(super) struct Meta {
    pub(super) header: Header,
    pub(super) layout: Layout,
    pub(super) entries: Vec<Entry>,
    pub(super) tagger: Tagger,
}

/// Checks the first bytes of an object against its manifest entry.
///
/// # Errors
/// [`TierReadError::Mismatch`] when the header is not the recorded one,
/// [`TierReadError::Format`] when it does not parse.
pub(super) fn check_header(obj: &ObjectRef<'_>, head: &[u8]) -> Result<Header, TierReadError> {
    let head = head
        .get(..HEADER_LEN)
        .ok_or_else(|| obj.bad(FormatError::Truncated("header")))?;
    if let Some(want) = obj.entry.header_digest {
        if format::digest(head) != want {
            return Err(obj.mismatch(
                "its header differs from the one recorded at upload (replaced, swapped or planted)",
            ));
        }
    }
    let header = Header::parse(head).map_err(|e| obj.bad(e))?;
    if header.version == format::VERSION_1 && obj.entry.header_digest.is_some() {
        return Err(obj.mismatch("a format-1 object where format 2 was uploaded"));
    }
    if header.plain_size != obj.entry.size {
        return Err(obj.mismatch(format!(
            "it holds {} bytes, the chunk has {}",
            header.plain_size, obj.entry.size
        )));
    }
    if header.key_id != obj.entry.key_id {
        return Err(obj.mismatch("it was written with another key than recorded"));
    }
    Ok(header)
}

/// Whether an object's length must come from the store: a format-2
/// object under an entry recorded before format 2 (module docs).
fn length_from_store(obj: &ObjectRef<'_>, header: &Header) -> bool {
    header.version != format::VERSION_1 && obj.entry.header_digest.is_none()
}

/// Fetches and checks the header, then fetches and authenticates the
/// frame index.
///
/// # Errors
/// Store failures, and everything [`check_header`] and
/// [`format::parse_index`] refuse.
pub(super) async fn fetch(
    store: &AnyStore,
    ring: &KeyRing,
    obj: &ObjectRef<'_>,
) -> Result<Meta, TierReadError> {
    let head = store.get_range(obj.key, 0, HEADER_LEN as u64).await?;
    let header = check_header(obj, &head)?;
    let object_len = if length_from_store(obj, &header) {
        store.size(obj.key).await?
    } else {
        obj.entry.object_len
    };
    let layout = header.layout(object_len).map_err(|e| obj.bad(e))?;
    let index = store
        .get_range(obj.key, layout.index_offset, layout.object_len)
        .await?;
    assemble(ring, obj, header, layout, &index)
}

/// Checks a whole object held in memory (`bytes`, exactly
/// `obj.entry.object_len` long) as [`fetch`] would, without fetching.
///
/// # Errors
/// As [`fetch`].
pub(super) fn from_bytes(
    ring: &KeyRing,
    obj: &ObjectRef<'_>,
    bytes: &[u8],
) -> Result<Meta, TierReadError> {
    let header = check_header(obj, bytes)?;
    let layout = header
        .layout(obj.entry.object_len)
        .map_err(|e| obj.bad(e))?;
    let at = usize::try_from(layout.index_offset).unwrap_or(usize::MAX);
    let index = bytes
        .get(at..)
        .ok_or_else(|| obj.bad(FormatError::Truncated("index")))?;
    assemble(ring, obj, header, layout, index)
}

/// The key, the MAC and the authenticated index of a checked header.
fn assemble(
    ring: &KeyRing,
    obj: &ObjectRef<'_>,
    header: Header,
    layout: Layout,
    index: &[u8],
) -> Result<Meta, TierReadError> {
    let keys = format::keys_for(&header, ring).map_err(|e| obj.bad(e))?;
    let tagger = Tagger::new(keys, &header, obj.id);
    let entries = format::parse_index(&header, &layout, &tagger, index).map_err(|e| obj.bad(e))?;
    Ok(Meta {
        header,
        layout,
        entries,
        tagger,
    })
}

#[cfg(test)]
mod tests {
    use super::super::encode::encode;
    use super::super::keys::Keys;
    use super::*;

    const ID: Identity<'static> = Identity {
        category: "c",
        chunk: "n1-chunk000000002",
    };

    fn object() -> (Vec<u8>, TieredChunk) {
        let keys = Keys::derive(&[5u8; 32]);
        let plain = vec![b'x'; 10_000];
        let obj = encode(&plain, b"", &keys, [8; 16], ID, 1, 4096).unwrap();
        let entry = TieredChunk {
            size: 10_000,
            messages: 0,
            object_len: obj.len() as u64,
            key_id: keys.id,
            header_digest: Some(format::digest(&obj[..HEADER_LEN])),
        };
        (obj, entry)
    }

    fn check(head: &[u8], entry: TieredChunk) -> Result<Layout, TierReadError> {
        let obj = ObjectRef {
            key: "c/n1-chunk000000002",
            id: ID,
            entry,
        };
        let h = check_header(&obj, head)?;
        h.layout(entry.object_len).map_err(|e| obj.bad(e))
    }

    #[test]
    fn the_recorded_header_passes_and_any_other_is_refused() {
        let (obj, entry) = object();
        assert!(check(&obj, entry).is_ok());
        for i in 0..HEADER_LEN {
            let mut h = obj[..HEADER_LEN].to_vec();
            h[i] ^= 1;
            assert!(
                matches!(check(&h, entry), Err(TierReadError::Mismatch { .. })),
                "byte {i}"
            );
        }
        // Another upload of the same chunk (fresh IV): not this one.
        let keys = Keys::derive(&[5u8; 32]);
        let again = encode(&vec![b'x'; 10_000], b"", &keys, [9; 16], ID, 1, 4096).unwrap();
        assert!(check(&again, entry).is_err());
    }

    #[test]
    fn without_a_digest_size_key_and_length_must_still_match() {
        let (obj, entry) = object();
        let legacy = TieredChunk {
            header_digest: None,
            ..entry
        };
        assert!(check(&obj, legacy).is_ok());
        for bad in [
            TieredChunk {
                size: 9_999,
                ..legacy
            },
            TieredChunk {
                key_id: [0; 8],
                ..legacy
            },
            TieredChunk {
                object_len: 40,
                ..legacy
            },
        ] {
            assert!(check(&obj, bad).is_err(), "{bad:?}");
        }
        assert!(check(&obj[..HEADER_LEN - 1], legacy).is_err(), "short");
    }
}
