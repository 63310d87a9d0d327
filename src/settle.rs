//! Settling a reservation from the upstream's response (docs/configuration.md, "Prices that follow the work").
//!
//! * `header`: read from the response head, settled before the client sees it.
//! * `json`, ordinary response: the body (up to [`MAX_BUFFERED_RESPONSE`]) is
//!   read, settled, then sent whole, so `X-Credits-Cost` shows the final cost.
//! * `json`, `text/event-stream`: bytes stream to the client as they arrive;
//!   [`SettlingBody`] watches each event's `data:` JSON and settles when the
//!   stream ends. If the client goes away first, the rest of the upstream
//!   stream is still read (bounded by the upstream timeout) so the request is
//!   charged what the upstream reports.
//!
//! Whatever happens, the reservation was debited at admission; a settlement
//! that never comes leaves it charged as reserved.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::{Body as HttpBody, Frame};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Incoming;

use crate::body::{self, Body, BoxError};
use crate::config::SettleConfig;
use crate::ledger::SettleOutcome;
use crate::pricing::{self, SseScanner};
use crate::state::Gateway;

/// Ordinary (non-streaming) JSON responses up to this size are read whole
/// before they are sent; larger ones stream and keep their reservation.
pub const MAX_BUFFERED_RESPONSE: usize = 8 * 1024 * 1024;

/// What a settlement needs to know about its debit.
#[derive(Clone)]
pub struct Pending {
    pub gateway: Arc<Gateway>,
    pub account: String,
    pub request_id: String,
    pub debit_at_ms: Option<i64>,
    pub route: String,
    pub route_cost: u64,
    pub settle: SettleConfig,
    pub reservation: u64,
    /// How long a client-less stream may still be read for its usage figure.
    pub drain_timeout: Duration,
}

impl Pending {
    /// Settles for `reported` units (or leaves the reservation when `None`);
    /// returns the cost now charged and the window's `used` when known.
    pub async fn settle(&self, reported: Option<f64>) -> (u64, Option<u64>) {
        let Some(reported) = reported else {
            return (self.reservation, None);
        };
        let final_cost =
            pricing::settled_cost(self.route_cost, &self.settle, reported, self.reservation);
        if final_cost == self.reservation {
            return (final_cost, None);
        }
        let ledger = &self.gateway.ledger;
        match ledger
            .settle(
                &self.account,
                &self.request_id,
                self.debit_at_ms,
                final_cost,
            )
            .await
        {
            Ok(SettleOutcome::Settled { used }) => (final_cost, Some(used)),
            Ok(SettleOutcome::Refunded) => (0, None),
            Ok(SettleOutcome::Unknown) => {
                tracing::error!(request_id = %self.request_id, "settlement found no debit");
                (self.reservation, None)
            }
            Err(error) => {
                tracing::error!(
                    request_id = %self.request_id,
                    "settlement failed; the reservation stands: {error}"
                );
                (self.reservation, None)
            }
        }
    }

    /// Settles after the response has gone: logged and counted on its own.
    async fn settle_late(self, reported: Option<f64>) {
        let (charged, _) = self.settle(reported).await;
        let metrics = &self.gateway.metrics;
        metrics.credits_debited(&self.route, charged);
        tracing::info!(
            target: "creditgate::access",
            request_id = %self.request_id,
            route = %self.route,
            account = %self.account,
            event = "settled",
            reserved = self.reservation,
            cost = charged,
        );
    }
}

/// Reads an ordinary response body whole (up to the cap) and returns it with
/// the usage figure at `pointer`. Over the cap, the body streams on unread.
pub async fn read_json_usage(incoming: Incoming, pointer: &str) -> (Body, Option<f64>) {
    let mut collected = BytesMut::new();
    let mut stream = BodyStream::new(incoming);
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    collected.extend_from_slice(data);
                }
                if collected.len() > MAX_BUFFERED_RESPONSE {
                    let head = futures_util::stream::once(async move {
                        Ok::<_, BoxError>(Frame::data(collected.freeze()))
                    });
                    let rest = stream.map(|frame| frame.map_err(BoxError::from));
                    return (BodyExt::boxed(StreamBody::new(head.chain(rest))), None);
                }
            }
            Err(error) => {
                // The upstream broke off: pass on what came, with the error.
                let head = futures_util::stream::iter([
                    Ok::<_, BoxError>(Frame::data(collected.freeze())),
                    Err(BoxError::from(error)),
                ]);
                return (BodyExt::boxed(StreamBody::new(head)), None);
            }
        }
    }
    let bytes: Bytes = collected.freeze();
    let reported = pricing::reported_in_json(&bytes, pointer);
    (body::full(bytes), reported)
}

/// An event stream passed through untouched while its usage figure is read.
pub struct SettlingBody {
    inner: Option<Incoming>,
    scanner: SseScanner,
    pending: Option<Pending>,
}

impl SettlingBody {
    pub fn new(inner: Incoming, pointer: &str, pending: Pending) -> SettlingBody {
        SettlingBody {
            inner: Some(inner),
            scanner: SseScanner::new(pointer),
            pending: Some(pending),
        }
    }

    fn complete(&mut self) {
        self.scanner.finish();
        if let Some(pending) = self.pending.take() {
            let reported = self.scanner.last;
            tokio::spawn(pending.settle_late(reported));
        }
    }
}

impl HttpBody for SettlingBody {
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
                if let Some(data) = frame.data_ref() {
                    this.scanner.feed(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.inner = None;
                this.complete();
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(None) => {
                this.inner = None;
                this.complete();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|inner| inner.is_end_stream())
    }
}

impl Drop for SettlingBody {
    /// The client left mid-stream: keep reading the upstream for its figure.
    fn drop(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let mut scanner = std::mem::replace(&mut self.scanner, SseScanner::new(""));
        let inner = self.inner.take();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Some(inner) = inner {
                let drain = async {
                    let mut stream = BodyStream::new(inner);
                    while let Some(Ok(frame)) = stream.next().await {
                        if let Some(data) = frame.data_ref() {
                            scanner.feed(data);
                        }
                    }
                };
                let _ = tokio::time::timeout(pending.drain_timeout, drain).await;
            }
            scanner.finish();
            pending.settle_late(scanner.last).await;
        });
    }
}
