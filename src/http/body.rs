//! [`Body`]: a response body of a few `Bytes` parts sent back to back, so a
//! peer fetch can send its index records and the mapped chunk bytes without
//! copying them into one buffer — or another server's answer passed through
//! frame by frame as it arrives (a read of a chunk held elsewhere), so that
//! memory stays bounded by the connection buffers whatever the size.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};

/// A response body.
#[derive(Debug)]
pub struct Body {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// Whole, already available parts.
    Parts(VecDeque<Bytes>),
    /// Another server's answer, streamed through.
    Relayed(Incoming),
}

impl Default for Body {
    fn default() -> Self {
        Self {
            inner: Inner::Parts(VecDeque::new()),
        }
    }
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
            inner: Inner::Parts(parts.into_iter().filter(|p| !p.is_empty()).collect()),
        }
    }

    /// Another server's reply body, passed on as it arrives. If that
    /// server fails mid-body the connection is cut (the client sees a
    /// body shorter than its `Content-Length`), never a short answer.
    #[must_use]
    pub fn relayed(body: Incoming) -> Self {
        Self {
            inner: Inner::Relayed(body),
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.inner {
            Inner::Parts(parts) => Poll::Ready(parts.pop_front().map(|p| Ok(Frame::data(p)))),
            Inner::Relayed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Parts(parts) => parts.is_empty(),
            Inner::Relayed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Parts(parts) => SizeHint::with_exact(parts.iter().map(|p| p.len() as u64).sum()),
            Inner::Relayed(body) => body.size_hint(),
        }
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
