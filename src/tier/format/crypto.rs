//! What binds an object to its key and its chunk: the chunk [`Identity`],
//! the per-object MAC ([`Tagger`]), the AES-256-CTR counter ranges, and
//! the choice of key by the header's key id. Pure: never does I/O, never
//! parses the header or the frame index.

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::Mac;

use super::{FormatError, Header, TAG_LEN, VERSION_1};
use crate::tier::keys::{HmacSha256, KeyRing, Keys};

/// AES-256 in counter mode, the counter the whole 128-bit block (big-endian).
pub(in crate::tier) type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
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
        base.update(header.bytes());
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

    pub(super) fn verify(
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
pub(in crate::tier) fn crypt(keys: &Keys, iv: &[u8; 16], frame: u32, buf: &mut [u8]) {
    cipher(keys, iv, frame).apply_keystream(buf);
}

/// The cipher positioned at the start of counter range `frame`.
pub(in crate::tier) fn cipher(keys: &Keys, iv: &[u8; 16], frame: u32) -> Aes256Ctr {
    let counter = u128::from_be_bytes(*iv).wrapping_add(u128::from(frame) << 32);
    Aes256Ctr::new((&keys.enc).into(), (&counter.to_be_bytes()).into())
}

/// The keys an object was written with.
///
/// # Errors
/// [`FormatError::UnknownKey`].
pub fn keys_for<'a>(header: &Header, ring: &'a KeyRing) -> Result<&'a Keys, FormatError> {
    ring.by_id(&header.key_id)
        .ok_or_else(|| FormatError::UnknownKey(crate::tier::keys::hex(&header.key_id)))
}
