//! An upstream response body that carries its request's [`Charge`] to the
//! end, so what happens to the body can still change what is charged.
//!
//! * The body ends: the charge stands (an event stream first settles at the
//!   last usage figure it carried).
//! * The upstream breaks the body off (docs/http-api.md, "A response that
//!   breaks off"): an event stream that already reported usage settles at
//!   the last figure; otherwise the route's `refund_on_failure` applies, as
//!   for a 5xx.
//! * The client leaves first: the charge stands — the upstream did the work.
//!   An event stream is still read, for at most the upstream's timeout, so
//!   that it settles at what the upstream reports.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyStream;

use super::usage::SseScanner;
use super::Charge;
use crate::body::BoxError;

pub struct ChargedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    inner: Option<B>,
    /// `None` once the body's end (or break) has been dealt with.
    charge: Option<Charge>,
    /// Present when the charge settles from this event stream.
    scanner: Option<SseScanner>,
}

impl<B> ChargedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    pub fn new(inner: B, charge: Charge, scanner: Option<SseScanner>) -> ChargedBody<B> {
        ChargedBody {
            inner: Some(inner),
            charge: Some(charge),
            scanner,
        }
    }

    /// The upstream's body reached its end.
    fn ended(&mut self) {
        self.inner = None;
        let Some(charge) = self.charge.take() else {
            return;
        };
        if let Some(scanner) = self.scanner.as_mut() {
            charge.settle_later(scanner.finish());
        }
    }

    /// The upstream's body broke off before its end.
    fn broke_off(&mut self) {
        self.inner = None;
        let Some(charge) = self.charge.take() else {
            return;
        };
        broke_off(charge, self.scanner.as_ref());
    }
}

fn broke_off(charge: Charge, scanner: Option<&SseScanner>) {
    charge.record().upstream_aborted();
    match scanner.and_then(SseScanner::last) {
        Some(reported) => charge.settle_later(Some(reported)),
        None if charge.route().refund_on_failure => charge.refund_later(),
        None => {}
    }
}

impl<B> HttpBody for ChargedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(scanner), Some(data)) = (this.scanner.as_mut(), frame.data_ref()) {
                    scanner.feed(data);
                }
                if this
                    .inner
                    .as_ref()
                    .is_some_and(|inner| inner.is_end_stream())
                {
                    this.ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.broke_off();
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(None) => {
                this.ended();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |inner| inner.size_hint())
    }
}

impl<B> Drop for ChargedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// Dropped before the end: the client left (or never got the response).
    fn drop(&mut self) {
        let Some(charge) = self.charge.take() else {
            return;
        };
        let (Some(scanner), Some(inner)) = (self.scanner.take(), self.inner.take()) else {
            return; // The charge stands.
        };
        let tasks = charge.tasks().clone();
        let _ = tasks.spawn(read_rest_for_usage(inner, charge, scanner));
    }
}

/// Reads a client-less event stream to its end (bounded by the upstream
/// timeout, cut at shutdown) and settles at the last figure it carried.
async fn read_rest_for_usage<B>(inner: B, charge: Charge, mut scanner: SseScanner)
where
    B: HttpBody<Data = Bytes> + Send + 'static,
{
    let cut = charge.tasks().cut_signal();
    let read = async {
        let mut stream = std::pin::pin!(BodyStream::new(inner));
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        scanner.feed(data);
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    let ended = tokio::select! {
        ended = tokio::time::timeout(charge.upstream_timeout(), read) => ended,
        _ = cut => Ok(false),
    };
    match ended {
        Ok(true) => charge.settle_later(scanner.finish()),
        Ok(false) if !charge.tasks().is_cut() => broke_off(charge, Some(&scanner)),
        // Cut at shutdown or out of time: what was seen is what is known.
        _ => charge.settle_later(scanner.last()),
    }
}
