//! The bearer tokens clients (`--token`) and peers (`--peer-token`) send:
//! validation, a redacting `Debug`, and the comparison. This module never
//! decides which endpoints need which token (that is `http`'s routing).
//!
//! The comparison leaks neither the token nor its length: both sides are
//! hashed with SHA-256 and the two digests are compared in constant time,
//! so the time taken depends on neither the configured token's length nor
//! how much of it a guess got right.

use sha2::{Digest, Sha256};

/// A bearer token (its `Debug` never shows it).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    text: String,
    /// SHA-256 of `text`, compared against the digest of a given token.
    digest: [u8; 32],
}

impl Token {
    /// Validates a token: 1–4096 visible ASCII characters.
    ///
    /// # Errors
    /// What is allowed (the value is not echoed).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 4096 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("expected 1-4096 visible ASCII characters (no spaces)".into());
        }
        Ok(Self {
            text: s.to_owned(),
            digest: Sha256::digest(s.as_bytes()).into(),
        })
    }

    /// The token text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `given` is this token: the SHA-256 digests of both are
    /// compared in constant time, so neither the token's bytes nor its
    /// length show in the timing.
    #[must_use]
    pub fn matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let given: [u8; 32] = Sha256::digest(given).into();
        bool::from(given.ct_eq(&self.digest))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_match_and_redact() {
        let t = Token::parse("abc-123").unwrap();
        assert!(t.matches(b"abc-123"));
        assert!(!t.matches(b"abc-12") && !t.matches(b"abc-1234") && !t.matches(b""));
        assert_eq!(format!("{t:?}"), "Token(..)");
        for bad in ["", "a b", "é", &"x".repeat(4097)] {
            assert!(Token::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// The comparison works on fixed-size digests: a given value of any
    /// length (empty, longer than any token, a prefix or extension of the
    /// token) is compared as 32 bytes against 32 bytes.
    #[test]
    fn compares_digests_of_any_length() {
        let t = Token::parse(&"k".repeat(4096)).unwrap();
        assert!(t.matches("k".repeat(4096).as_bytes()));
        for given in [
            Vec::new(),
            b"k".to_vec(),
            "k".repeat(4095).into_bytes(),
            "k".repeat(4097).into_bytes(),
            vec![0u8; 1 << 20],
        ] {
            assert!(!t.matches(&given), "{} bytes", given.len());
        }
        assert_eq!(t.digest, <[u8; 32]>::from(Sha256::digest("k".repeat(4096))));
        assert!(!format!("{t:?}").contains("kk"));
    }
}
