//! Body types and helpers: one boxed body type for requests passed on and responses
//! returned, a size-limited reader for requests, and a bounded collector for responses.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};

/// The error type of [`Body`]: whatever the wrapped body reported.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of the requests the layer passes to the inner service and of the responses it
/// returns: any body with `Bytes` chunks, boxed (`Send`, not `Sync`, like axum's own body
/// type).
pub struct Body(UnsyncBoxBody<Bytes, BoxError>);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").finish_non_exhaustive()
    }
}

impl Body {
    /// Boxes any body with `Bytes` chunks.
    pub fn new<B>(body: B) -> Body
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body(body.map_err(Into::into).boxed_unsync())
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// A body holding `bytes`.
pub(crate) fn full(bytes: Bytes) -> Body {
    Body(
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
}

/// Boxes any body with `Bytes` chunks.
pub(crate) fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Body::new(body)
}

/// Why a request body was not read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Longer than the limit.
    TooLarge,
    /// The body failed (the client went away, a malformed chunk...).
    Failed(BoxError),
}

/// Reads a whole request body, refusing more than `limit` bytes.
pub(crate) async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooLarge),
        Err(e) => Err(ReadError::Failed(e)),
    }
}

/// Why a response body cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unstorable {
    /// Longer than the limit.
    TooLarge,
    /// It ends with trailers, which the stored format has no room for.
    Trailers,
}

/// What collecting a response body found.
pub(crate) enum Collected {
    /// The whole body, within the limit and without trailers.
    Whole(Bytes),
    /// Too large (or with trailers) to store: the part read so far and the rest, which
    /// together are the body as the inner service sent it.
    Unstorable { body: Body, why: Unstorable },
    /// The body failed after `read` bytes.
    Failed { error: BoxError, read: usize },
}

/// Collects a response body of at most `limit` bytes.
pub(crate) async fn collect_bounded(mut body: Body, limit: usize) -> Collected {
    let mut buffer = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Collected::Whole(buffer.freeze()),
            Some(Err(error)) => {
                return Collected::Failed {
                    error,
                    read: buffer.len(),
                };
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    buffer.extend_from_slice(&data);
                    if buffer.len() > limit {
                        return Collected::Unstorable {
                            why: Unstorable::TooLarge,
                            body: Body::new(Prefixed::new(
                                vec![Frame::data(buffer.freeze())],
                                body,
                            )),
                        };
                    }
                }
                Err(trailers) => {
                    return Collected::Unstorable {
                        why: Unstorable::Trailers,
                        body: Body::new(Prefixed::new(
                            vec![Frame::data(buffer.freeze()), trailers],
                            body,
                        )),
                    };
                }
            },
        }
    }
}

/// Frames already read, then the rest of the body they came from.
struct Prefixed {
    prefix: std::vec::IntoIter<Frame<Bytes>>,
    rest: Body,
}

impl Prefixed {
    fn new(prefix: Vec<Frame<Bytes>>, rest: Body) -> Prefixed {
        Prefixed {
            prefix: prefix.into_iter(),
            rest,
        }
    }
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.prefix.next() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.len() == 0 && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .prefix
            .as_slice()
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(buffered));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body sent in several data frames.
    fn chunked(chunks: &[&'static [u8]]) -> Body {
        let frames = chunks
            .iter()
            .map(|c| Frame::data(Bytes::from_static(c)))
            .collect();
        Body::new(Prefixed::new(frames, full(Bytes::new())))
    }

    #[tokio::test]
    async fn small_bodies_are_collected_whole() {
        match collect_bounded(chunked(&[b"ab", b"cd"]), 4).await {
            Collected::Whole(bytes) => assert_eq!(&bytes[..], b"abcd"),
            _ => panic!("expected the whole body"),
        }
    }

    #[tokio::test]
    async fn large_bodies_pass_through_intact() {
        let body = chunked(&[b"ab", b"cd", b"ef"]);
        let Collected::Unstorable { body, why } = collect_bounded(body, 3).await else {
            panic!("expected an unstorable body");
        };
        assert_eq!(why, Unstorable::TooLarge);
        let bytes = body.collect().await.expect("body").to_bytes();
        assert_eq!(&bytes[..], b"abcdef");
    }

    #[tokio::test]
    async fn request_bodies_above_the_limit_are_refused() {
        let ok = read_limited(Full::new(Bytes::from_static(b"1234")), 4).await;
        assert_eq!(&ok.expect("within the limit")[..], b"1234");
        let err = read_limited(Full::new(Bytes::from_static(b"12345")), 4).await;
        assert!(matches!(err, Err(ReadError::TooLarge)));
    }
}
