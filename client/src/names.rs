//! The chunk-name syntax, `<server>-chunk<9 digits>`, and the one parser
//! for it: the server's `ChunkName` is built on [`parse_chunk_name`], so a
//! name the client accepts is exactly a name the server can produce. This
//! module only parses strings; it never builds paths or does I/O.

/// What joins the owner and the index: `<server>-chunk<index>`.
pub const CHUNK_INFIX: &str = "-chunk";
/// Number of decimal digits in a chunk index (zero-padded).
pub const CHUNK_INDEX_DIGITS: usize = 9;
/// Largest chunk index representable in a chunk name.
pub const MAX_CHUNK_INDEX: u64 = 999_999_999;
/// Longest server name (the owner part of a chunk name), in bytes.
pub const MAX_SERVER_NAME_LEN: usize = 64;

const _: () = assert!(MAX_CHUNK_INDEX == 10u64.pow(CHUNK_INDEX_DIGITS as u32) - 1);

/// Splits a chunk name into (owner, index).
///
/// Accepts exactly `<server>-chunk<9 digits>` where the server name is 1–64
/// characters of `[A-Za-z0-9_-]` (it may itself contain `-chunk`: the name
/// is split at its fixed-length suffix). Anything else is `None`: another
/// number of digits, an empty or over-long owner, other characters,
/// non-ASCII.
///
/// # Examples
/// ```
/// use chunkbus_client::names::parse_chunk_name;
///
/// assert_eq!(parse_chunk_name("node-1-chunk000000007"), Some(("node-1", 7)));
/// assert_eq!(parse_chunk_name("node1-chunk7"), None);
/// ```
#[must_use]
pub fn parse_chunk_name(name: &str) -> Option<(&str, u64)> {
    let suffix_len = CHUNK_INFIX.len() + CHUNK_INDEX_DIGITS;
    // ASCII only, so every byte offset below is a char boundary.
    if name.len() <= suffix_len || !name.is_ascii() {
        return None;
    }
    let (owner, suffix) = name.split_at(name.len() - suffix_len);
    let digits = suffix.strip_prefix(CHUNK_INFIX)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !is_server_name(owner) {
        return None;
    }
    Some((owner, digits.parse().ok()?))
}

/// 1–64 characters of `[A-Za-z0-9_-]` (the server's `ServerName` rule).
fn is_server_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SERVER_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_digits_parse_with_dashes_in_the_owner() {
        assert_eq!(parse_chunk_name("n1-chunk000000000"), Some(("n1", 0)));
        assert_eq!(
            parse_chunk_name("node-1-chunk000000007"),
            Some(("node-1", 7))
        );
        assert_eq!(
            parse_chunk_name("a_b-chunk-chunk999999999"),
            Some(("a_b-chunk", MAX_CHUNK_INDEX))
        );
        let longest = "x".repeat(MAX_SERVER_NAME_LEN);
        assert_eq!(
            parse_chunk_name(&format!("{longest}-chunk000000001")),
            Some((longest.as_str(), 1))
        );
    }

    #[test]
    fn other_digit_counts_are_rejected() {
        for bad in [
            "n-chunk",
            "n-chunk1",
            "n-chunk00000001",
            "n-chunk0000000001",
            "n-chunk00000000x",
            "n-chunk+00000001",
        ] {
            assert_eq!(parse_chunk_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bad_owners_are_rejected() {
        let too_long = format!("{}-chunk000000001", "x".repeat(MAX_SERVER_NAME_LEN + 1));
        for bad in [
            "",
            "chunk000000001",
            "-chunk000000001",
            "n/x-chunk000000001",
            "../n-chunk000000001",
            "n.x-chunk000000001",
            "n x-chunk000000001",
            "n\0-chunk000000001",
            "n_chunk000000001",
            "n-chunk000000001.idx",
            too_long.as_str(),
        ] {
            assert_eq!(parse_chunk_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn non_ascii_is_rejected_without_panicking() {
        for bad in [
            "é-chunk000000001",
            "nœud-chunk000000001",
            "n-chunk00000000١",
            "n-chunk０00000001",
            "ééééééééééééééééé",
        ] {
            assert_eq!(parse_chunk_name(bad), None, "{bad:?}");
        }
    }
}
