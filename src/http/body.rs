//! [`Body`]: a response body of a few `Bytes` parts sent back to back, so a
//! peer fetch can send its index records and the mapped chunk bytes without
//! copying them into one buffer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

/// A body made of whole, already available parts.
#[derive(Debug, Default)]
pub struct Body {
    parts: VecDeque<Bytes>,
}

impl Body {
    /// A body of one part.
    #[must_use]
    pub fn new(part: Bytes) -> Self {
        Self::from_parts([part])
    }

    /// A body of `parts`, in order (empty parts are skipped).
    #[must_use]
    pub fn from_parts(parts: impl IntoIterator<Item = Bytes>) -> Self {
        Self {
            parts: parts.into_iter().filter(|p| !p.is_empty()).collect(),
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.parts.pop_front().map(|p| Ok(Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.parts.iter().map(|p| p.len() as u64).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn parts_arrive_in_order() {
        let b = Body::from_parts([
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"c"),
        ]);
        assert_eq!(hyper::body::Body::size_hint(&b).exact(), Some(3));
        let all = b.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abc");
    }
}
