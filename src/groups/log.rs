//! The position log of one consumer group in one category: a text file of
//! records `<crc32c:8 hex> <chunk> <offset>\n`, the CRC over
//! `<chunk> <offset>`. Appended (and fdatasync'd) once per ack; the last
//! record for a chunk wins. A torn or corrupt tail is cut off at load.
//! Pure functions: no I/O here.

use std::collections::BTreeMap;

use crate::names::ChunkName;

/// One record as bytes, newline included.
#[must_use]
pub fn encode(chunk: &ChunkName, offset: u64) -> Vec<u8> {
    let payload = format!("{chunk} {offset}");
    let crc = crc32c::crc32c(payload.as_bytes());
    format!("{crc:08x} {payload}\n").into_bytes()
}

/// Encodes every position (a compacted log).
#[must_use]
pub fn encode_all(positions: &BTreeMap<ChunkName, u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for (chunk, off) in positions {
        out.extend_from_slice(&encode(chunk, *off));
    }
    out
}

/// The positions in `bytes` and the length of its valid prefix (where the
/// first torn or corrupt record starts).
#[must_use]
pub fn decode(bytes: &[u8]) -> (BTreeMap<ChunkName, u64>, usize) {
    let mut positions = BTreeMap::new();
    let mut valid = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let Some(record) = line.strip_suffix(b"\n") else {
            break; // torn: no newline yet
        };
        let Some((chunk, off)) = parse(record) else {
            break;
        };
        positions.insert(chunk, off);
        valid += line.len();
    }
    (positions, valid)
}

fn parse(record: &[u8]) -> Option<(ChunkName, u64)> {
    let text = std::str::from_utf8(record).ok()?;
    let (crc, payload) = text.split_once(' ')?;
    if crc.len() != 8 || u32::from_str_radix(crc, 16).ok()? != crc32c::crc32c(payload.as_bytes()) {
        return None;
    }
    let (chunk, off) = payload.split_once(' ')?;
    Some((ChunkName::parse(chunk).ok()?, off.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: u64) -> ChunkName {
        ChunkName::parse(&format!("node1-chunk{i:09}")).unwrap()
    }

    #[test]
    fn last_record_wins_and_every_cut_keeps_a_valid_prefix() {
        let mut log = Vec::new();
        log.extend(encode(&name(0), 10));
        log.extend(encode(&name(0), 25));
        log.extend(encode(&name(1), 7));
        let (p, valid) = decode(&log);
        assert_eq!(valid, log.len());
        assert_eq!(p.get(&name(0)), Some(&25));
        assert_eq!(p.get(&name(1)), Some(&7));
        for cut in 0..log.len() {
            let (p, valid) = decode(&log[..cut]);
            assert!(valid <= cut);
            assert_eq!(log[..valid].last().copied().unwrap_or(b'\n'), b'\n');
            // Never a value that was not written.
            for (c, o) in &p {
                assert!([(name(0), 10), (name(0), 25), (name(1), 7)].contains(&(c.clone(), *o)));
            }
        }
    }

    #[test]
    fn a_flipped_byte_ends_the_valid_prefix() {
        let mut log = encode(&name(3), 99);
        let first = log.len();
        log.extend(encode(&name(3), 100));
        for i in first..log.len() - 1 {
            let mut bad = log.clone();
            bad[i] ^= 0x01;
            let (p, valid) = decode(&bad);
            assert_eq!(valid, first, "flip at {i}");
            assert_eq!(p.get(&name(3)), Some(&99));
        }
    }
}
