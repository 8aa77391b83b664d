//! Round trips and tampering checks of the whole object format (both
//! versions), through the encoder and [`super::decode_all`]. Never
//! touches the network or the disk.

use super::*;
use crate::tier::encode::encode;
use crate::tier::keys::{HmacSha256, KeyRing, Keys};
use hmac::Mac;
use proptest::prelude::*;

const ID: Identity<'static> = Identity {
    category: "events",
    chunk: "node1-chunk000000003",
};

fn ring() -> KeyRing {
    KeyRing::new(Keys::derive(&[7u8; 32]), Vec::new())
}

fn sample(n: usize) -> Vec<u8> {
    (0..n).map(|i| b"abcdefgh\n"[i % 9]).collect()
}

/// A version-1 object, as the previous writer made it.
fn encode_v1(plain: &[u8], records: &[u8], keys: &Keys, iv: [u8; 16], frame: u32) -> Vec<u8> {
    let frames: Vec<Vec<u8>> = plain
        .chunks(frame as usize)
        .map(|c| zstd::bulk::compress(c, 1).unwrap())
        .collect();
    let body: usize = frames.iter().map(|f| f.len() + TAG_LEN).sum();
    let records_offset = (HEADER_LEN + body) as u64;
    let index_offset = records_offset + records.len() as u64 + TAG_LEN as u64;
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[16..24].copy_from_slice(&keys.id);
    h[24..40].copy_from_slice(&iv);
    h[40..48].copy_from_slice(&(plain.len() as u64).to_le_bytes());
    h[48..52].copy_from_slice(&frame.to_le_bytes());
    h[52..56].copy_from_slice(&(frames.len() as u32).to_le_bytes());
    h[56..64].copy_from_slice(&records_offset.to_le_bytes());
    h[64..68].copy_from_slice(&(records.len() as u32).to_le_bytes());
    h[72..80].copy_from_slice(&index_offset.to_le_bytes());
    let tag = |label: &[u8], body: &[u8]| -> Vec<u8> {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&keys.mac).unwrap();
        m.update(&h);
        m.update(label);
        m.update(body);
        m.finalize().into_bytes().to_vec()
    };
    let mut out = h.to_vec();
    let mut index = Vec::new();
    for (i, (f, c)) in frames.iter().zip(plain.chunks(frame as usize)).enumerate() {
        let mut ct = f.clone();
        crypt(keys, &iv, i as u32, &mut ct);
        let e = Entry {
            offset: out.len() as u64,
            len: ct.len() as u32,
            plain_len: c.len() as u32,
        };
        index.extend_from_slice(&e.encode());
        out.extend_from_slice(&ct);
        out.extend(tag(&(i as u32).to_le_bytes(), &ct));
    }
    let mut rec = records.to_vec();
    crypt(keys, &iv, RECORDS_FRAME, &mut rec);
    out.extend_from_slice(&rec);
    out.extend(tag(&RECORDS_FRAME.to_le_bytes(), &rec));
    out.extend_from_slice(&index);
    out.extend(tag(INDEX_LABEL, &index));
    out
}

#[test]
fn round_trip_across_frames() {
    let plain = sample(10_000);
    let obj = encode(&plain, b"recs", ring().current(), [1; 16], ID, 3, 4096).unwrap();
    let (p, r) = decode_all(&obj, &ring(), ID).unwrap();
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
        ID,
        1,
        4096,
    )
    .unwrap();
    for i in 0..obj.len() {
        let mut bad = obj.clone();
        bad[i] ^= 0x01;
        assert!(
            decode_all(&bad, &ring(), ID).is_err(),
            "flip at {i} accepted"
        );
    }
    for cut in [0, 10, HEADER_LEN, obj.len() - 1] {
        assert!(
            decode_all(&obj[..cut], &ring(), ID).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn an_object_is_valid_only_as_its_own_chunk() {
    let obj = encode(&sample(5000), b"r", ring().current(), [3; 16], ID, 1, 4096).unwrap();
    for other in [
        Identity {
            category: "other",
            chunk: ID.chunk,
        },
        Identity {
            category: ID.category,
            chunk: "node1-chunk000000004",
        },
        // Length prefixes keep the split unambiguous.
        Identity {
            category: "eventsnode1",
            chunk: "-chunk000000003",
        },
    ] {
        let e = decode_all(&obj, &ring(), other).unwrap_err();
        assert!(matches!(e, FormatError::BadTag(_)), "{other:?}: {e}");
    }
}

#[test]
fn version_1_objects_still_decode_whatever_the_identity() {
    let keys = ring().current().clone();
    let plain = sample(12_345);
    let obj = encode_v1(&plain, b"records!", &keys, [4; 16], 4096);
    let (p, r) = decode_all(&obj, &ring(), ID).unwrap();
    assert_eq!(
        (p.as_slice(), r.as_slice()),
        (plain.as_slice(), &b"records!"[..])
    );
    for i in 0..obj.len() {
        let mut bad = obj.clone();
        bad[i] ^= 0x80;
        assert!(
            decode_all(&bad, &ring(), ID).is_err(),
            "v1 flip at {i} accepted"
        );
    }
}

#[test]
fn a_header_must_fit_the_recorded_object_length() {
    let obj = encode(&sample(20_000), b"", ring().current(), [2; 16], ID, 1, 4096).unwrap();
    let h = Header::parse(&obj).unwrap();
    assert!(h.layout(obj.len() as u64).is_ok());
    for len in [0, 100, HEADER_LEN as u64 + h.index_len()] {
        assert!(h.layout(len).is_err(), "{len}");
    }
    // A header claiming 2^32 − 1 frames does not fit a small object.
    let mut forged = *h.bytes();
    forged[40..48].copy_from_slice(&(4096 * u64::from(u32::MAX)).to_le_bytes());
    forged[52..56].copy_from_slice(&u32::MAX.to_le_bytes());
    let f = Header::parse(&forged).unwrap();
    assert!(f.layout(obj.len() as u64).is_err());
    // Huge lengths never overflow (a real object that long would fit).
    assert!(f.layout(u64::MAX).is_ok());
    assert!(f.layout(f.index_len() + 31).is_err());
}

#[test]
fn wrong_key_is_an_error_and_old_keys_still_read() {
    let old = Keys::derive(&[1u8; 32]);
    let obj = encode(&sample(100), b"", &old, [0; 16], ID, 1, 4096).unwrap();
    let e = decode_all(&obj, &ring(), ID).unwrap_err();
    assert!(matches!(e, FormatError::UnknownKey(_)), "{e}");
    let rotated = KeyRing::new(Keys::derive(&[2u8; 32]), vec![old.clone()]);
    assert_eq!(decode_all(&obj, &rotated, ID).unwrap().0, sample(100));
    // A different key that claims the old key's id fails authentication.
    let mut forged = Keys::derive(&[3u8; 32]);
    forged.id = old.id;
    let e = decode_all(&obj, &KeyRing::new(forged, Vec::new()), ID).unwrap_err();
    assert!(matches!(e, FormatError::BadTag(_)), "{e}");
}

proptest! {
    #[test]
    fn round_trip_random(data in proptest::collection::vec(any::<u8>(), 0..20_000),
                         recs in proptest::collection::vec(any::<u8>(), 0..64),
                         frame in 4096u32..9000) {
        let obj = encode(&data, &recs, ring().current(), [5; 16], ID, 1, frame).unwrap();
        let (p, r) = decode_all(&obj, &ring(), ID).unwrap();
        prop_assert_eq!(p, data);
        prop_assert_eq!(r, recs);
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_all(&data, &ring(), ID);
    }
}
