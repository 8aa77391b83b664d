//! Decompression of produced record batches under a size cap, so a small
//! compressed batch cannot expand into unbounded memory (a decompression
//! bomb). Used as the codec's custom decompressor; pure (no I/O beyond
//! memory).

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::records::Compression;

/// Header of xerial-framed snappy ("\x82SNAPPY\0" + version fields), as
/// Java producers send it.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Bytes of the xerial header (magic, version, compatible version).
const XERIAL_HEADER: usize = 16;

/// Why a batch did not decompress.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    /// The records expand beyond the cap.
    #[error("records decompress to more than {max} bytes")]
    TooLarge {
        /// The cap.
        max: usize,
    },
    /// The compressed bytes are invalid.
    #[error("invalid {codec} data")]
    Invalid {
        /// Which codec.
        codec: &'static str,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
}

/// Decompresses `data` (records of one batch) to at most `max` bytes.
///
/// # Errors
/// [`DecompressError::TooLarge`] past `max`, [`DecompressError::Invalid`]
/// for corrupt input.
pub fn decompress(data: &[u8], codec: Compression, max: usize) -> Result<Bytes, DecompressError> {
    match codec {
        Compression::None => {
            if data.len() > max {
                return Err(DecompressError::TooLarge { max });
            }
            Ok(Bytes::copy_from_slice(data))
        }
        Compression::Gzip => read_capped(flate2::read::MultiGzDecoder::new(data), "gzip", max),
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::new(data).map_err(|source| {
                DecompressError::Invalid {
                    codec: "zstd",
                    source,
                }
            })?;
            read_capped(d, "zstd", max)
        }
        Compression::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(data), "lz4", max),
        Compression::Snappy => snappy(data, max),
    }
}

fn read_capped(r: impl Read, codec: &'static str, max: usize) -> Result<Bytes, DecompressError> {
    let mut out = Vec::new();
    let cap = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap)
        .read_to_end(&mut out)
        .map_err(|source| DecompressError::Invalid { codec, source })?;
    if out.len() > max {
        return Err(DecompressError::TooLarge { max });
    }
    Ok(out.into())
}

fn snappy_err(e: snap::Error) -> DecompressError {
    DecompressError::Invalid {
        codec: "snappy",
        source: std::io::Error::other(e),
    }
}

fn truncated() -> DecompressError {
    DecompressError::Invalid {
        codec: "snappy",
        source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
    }
}

/// Raw snappy (librdkafka), or xerial-framed blocks (Java clients).
fn snappy(data: &[u8], max: usize) -> Result<Bytes, DecompressError> {
    let mut out = Vec::new();
    let mut append = |block: &[u8]| -> Result<(), DecompressError> {
        let len = snap::raw::decompress_len(block).map_err(snappy_err)?;
        if out.len().saturating_add(len) > max {
            return Err(DecompressError::TooLarge { max });
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(snappy_err)?;
        Ok(())
    };
    if data.get(..XERIAL_MAGIC.len()) != Some(&XERIAL_MAGIC[..]) {
        append(data)?;
        return Ok(out.into());
    }
    let mut rest = data.get(XERIAL_HEADER..).ok_or_else(truncated)?;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
        let block = tail.get(..len).ok_or_else(truncated)?;
        append(block)?;
        rest = &tail[len..];
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn every_codec_round_trips_and_bombs_are_refused() {
        let plain = vec![b'x'; 100_000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::encode_all(&plain[..], 1).unwrap();
        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz.write_all(&plain).unwrap();
        let lz = lz.finish().unwrap();
        let sn = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        for (codec, data) in [
            (Compression::Gzip, &gz),
            (Compression::Zstd, &zs),
            (Compression::Lz4, &lz),
            (Compression::Snappy, &sn),
        ] {
            assert_eq!(
                &decompress(data, codec, 100_000).unwrap()[..],
                &plain[..],
                "{codec:?}"
            );
            assert!(
                matches!(
                    decompress(data, codec, 99_999),
                    Err(DecompressError::TooLarge { .. })
                ),
                "{codec:?}"
            );
            assert!(
                decompress(&data[..data.len() / 2], codec, 100_000).is_err(),
                "{codec:?}"
            );
        }
        // xerial framing: header, then length-prefixed raw blocks.
        let mut x = XERIAL_MAGIC.to_vec();
        x.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        x.extend_from_slice(&u32::try_from(sn.len()).unwrap().to_be_bytes());
        x.extend_from_slice(&sn);
        assert_eq!(
            decompress(&x, Compression::Snappy, 1 << 20).unwrap().len(),
            100_000
        );
    }
}
