//! Tiering keys: the master key from config or environment (64 hex digits
//! or `base64:` + 32 bytes), and the keys derived from it. The master key
//! never leaves the broker; objects carry only a key id.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA-256.
pub type HmacSha256 = Hmac<Sha256>;

/// A master key and its derived keys.
#[derive(Clone)]
pub struct Keys {
    /// Identifies the master key in object headers (not secret).
    pub id: [u8; 8],
    /// AES-256-CTR key.
    pub enc: [u8; 32],
    /// HMAC-SHA-256 key.
    pub mac: [u8; 32],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("id", &hex(&self.id))
            .finish_non_exhaustive()
    }
}

/// Lowercase hex of bytes.
#[must_use]
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length: this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(master)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(label);
    m.finalize().into_bytes().into()
}

/// What is wrong with a master key. The value itself is never echoed: no
/// variant holds it, and the base64 decoder's error is left out on purpose
/// (it names the offending byte of the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// `base64:` followed by something that is not base64.
    #[error("the base64: key is not valid base64")]
    NotBase64,
    /// Neither 64 hex digits nor `base64:`.
    #[error("expected 64 hex digits or base64: followed by base64 of 32 bytes")]
    BadForm,
    /// Hex digits that do not parse.
    #[error("the key is not valid hex")]
    NotHex(#[source] std::num::ParseIntError),
    /// Not 32 bytes.
    #[error("the key has {len} bytes; it must have 32")]
    WrongLength {
        /// Bytes given.
        len: usize,
    },
}

impl Keys {
    /// Derives the encryption key, MAC key and key id from `master`
    /// (HMAC-SHA-256 of fixed labels, so none reveals another).
    #[must_use]
    pub fn derive(master: &[u8; 32]) -> Self {
        let id_full = derive(master, b"chunkbus tier key id v1");
        let mut id = [0u8; 8];
        id.copy_from_slice(&id_full[..8]);
        Self {
            id,
            enc: derive(master, b"chunkbus tier encryption v1"),
            mac: derive(master, b"chunkbus tier mac v1"),
        }
    }

    /// Parses a master key: 64 hex digits, or `base64:` and the base64 of
    /// exactly 32 bytes.
    ///
    /// # Errors
    /// What is wrong with the value (the value itself is never echoed).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = if let Some(b64) = text.strip_prefix("base64:") {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| KeyError::NotBase64)?
        } else {
            if text.len() != 64 || !text.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(KeyError::BadForm);
            }
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(KeyError::NotHex)?
        };
        let master: [u8; 32] = bytes
            .try_into()
            .map_err(|v: Vec<u8>| KeyError::WrongLength { len: v.len() })?;
        Ok(Self::derive(&master))
    }
}

/// The current key (used to write) and old keys (still read after a
/// rotation), looked up by key id.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: Keys,
    old: Vec<Keys>,
}

impl KeyRing {
    /// A ring writing with `current`, reading also with `old`.
    #[must_use]
    pub fn new(current: Keys, old: Vec<Keys>) -> Self {
        Self { current, old }
    }

    /// The key new objects are written with.
    #[must_use]
    pub fn current(&self) -> &Keys {
        &self.current
    }

    /// Ids of every key, the current one first (to compare two rings
    /// without comparing key material).
    #[must_use]
    pub fn ids(&self) -> Vec<[u8; 8]> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .map(|k| k.id)
            .collect()
    }

    /// The key with id `id`, if configured.
    #[must_use]
    pub fn by_id(&self, id: &[u8; 8]) -> Option<&Keys> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| &k.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64_forms_give_the_same_keys() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let raw: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex_key[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let b64 = format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
        let a = Keys::parse(hex_key).unwrap();
        let b = Keys::parse(&b64).unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(a.enc, b.enc);
        assert_ne!(a.enc, a.mac);
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        for bad in ["", "abc", &"g".repeat(64), "base64:!!!", "base64:AAAA"] {
            let e = Keys::parse(bad).unwrap_err().to_string();
            assert!(bad.len() < 8 || !e.contains(bad), "{e}");
        }
    }
}
