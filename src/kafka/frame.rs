//! Kafka framing: a big-endian `i32` length, then that many bytes of
//! request (header + body). [`read_frame`] refuses a length above the
//! limit before allocating anything and reads the body in steps, so a
//! client that announces a large frame and sends nothing holds at most
//! one step of memory. [`write_frame`] prefixes a response with its
//! length. Never decodes Kafka messages.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::FrameError;

/// The smallest valid request: api key, version, correlation id (8 bytes).
pub const MIN_FRAME: i32 = 8;
/// Bytes read at a time while a frame arrives.
const STEP: usize = 64 << 10;

/// Reads one frame of at most `max` bytes; `Ok(None)` when the peer
/// closed the connection between frames.
///
/// # Errors
/// [`FrameError::TooLarge`] / [`FrameError::BadLength`] for a bad length
/// prefix, [`FrameError::Truncated`] when the stream ends inside a frame,
/// or the socket's I/O error.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u64,
) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    match r.read(&mut len[..1]).await? {
        0 => return Ok(None),
        _ => r.read_exact(&mut len[1..]).await.map_err(eof_truncated)?,
    };
    let len = i32::from_be_bytes(len);
    check_len(len, max)?;
    let len = usize::try_from(len).map_err(|_| FrameError::BadLength(len))?;
    let mut buf = BytesMut::with_capacity(len.min(STEP));
    while buf.len() < len {
        let want = (len - buf.len()).min(STEP);
        buf.reserve(want);
        let n = (&mut *r).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(FrameError::Truncated);
        }
    }
    Ok(Some(buf.freeze()))
}

/// Checks a length prefix against the request minimum and `max`.
///
/// # Errors
/// As [`read_frame`].
pub fn check_len(len: i32, max: u64) -> Result<(), FrameError> {
    if len < MIN_FRAME {
        return Err(FrameError::BadLength(len));
    }
    if u64::from(len.unsigned_abs()) > max {
        return Err(FrameError::TooLarge {
            len: u64::from(len.unsigned_abs()),
            max,
        });
    }
    Ok(())
}

fn eof_truncated(e: std::io::Error) -> FrameError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e)
    }
}

/// Writes `body` (an encoded response header + response) with its length
/// prefix and flushes.
///
/// # Errors
/// The socket's I/O error; a response over 2 GiB (never built) is
/// refused as [`FrameError::Encode`].
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    let len = i32::try_from(body.len()).map_err(|_| FrameError::Encode {
        what: "any",
        why: format!("response of {} bytes", body.len()),
    })?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_bounded_and_truncation_is_reported() {
        let mut ok: &[u8] = &[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(read_frame(&mut ok, 100).await.unwrap().unwrap().len(), 8);
        assert!(read_frame(&mut ok, 100).await.unwrap().is_none());
        let mut big: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut big, 1 << 20).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut neg: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut neg, 1 << 20).await,
            Err(FrameError::BadLength(-1))
        ));
        let mut short: &[u8] = &[0, 0, 0, 20, 1, 2];
        assert!(matches!(
            read_frame(&mut short, 100).await,
            Err(FrameError::Truncated)
        ));
        let mut cut_prefix: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame(&mut cut_prefix, 100).await,
            Err(FrameError::Truncated)
        ));
    }
}
