//! The bearer token that clients and peers send (`--token`): validation,
//! a redacting `Debug`, and the constant-time comparison. This module never
//! decides which endpoints need it (that is `http`'s routing).

/// A bearer token (its `Debug` never shows it).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Validates a token: 1–4096 visible ASCII characters.
    ///
    /// # Errors
    /// What is allowed (the value is not echoed).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 4096 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("expected 1-4096 visible ASCII characters (no spaces)".into());
        }
        Ok(Self(s.to_owned()))
    }

    /// The token text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token, compared in constant time.
    #[must_use]
    pub fn matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(given.ct_eq(self.0.as_bytes()))
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
}
