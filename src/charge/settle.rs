//! The response side of a delivered charge: settle it from the response
//! when the route says so (docs/configuration.md, "Prices that follow the
//! work"), then hand the body on with the charge inside ([`ChargedBody`]).
//!
//! * `settle.header`: read from the response head and settled before the
//!   client sees the head, so `X-Credits-Cost` shows the final cost.
//! * `settle.json`, ordinary response: the body (up to
//!   [`MAX_BUFFERED_RESPONSE`]) is read whole, within the upstream's timeout,
//!   settled, then sent. A body that breaks off (or does not arrive in time)
//!   is a 502 `upstream_unavailable` (504 `upstream_timeout`) and follows the
//!   route's `refund_on_failure`: the client never gets a partial JSON
//!   document it would have to recognise as such. A larger body streams on
//!   unread and its reservation stands.
//! * `settle.json`, `text/event-stream`: streams through untouched while
//!   [`ChargedBody`] reads each event's `data:`; settled when it ends.

use std::time::Duration;

use crate::forward::UpstreamBody;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::response::Parts;
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};

use super::body::ChargedBody;
use super::usage::{self, SseScanner};
use super::Charge;
use crate::body::{self, Body, BoxError};
use crate::config::SettleSource;
use crate::error::{ErrorKind, GatewayError};

/// Ordinary (non-streaming) JSON responses up to this size are read whole
/// before they are sent; larger ones stream and keep their reservation.
pub const MAX_BUFFERED_RESPONSE: usize = 8 * 1024 * 1024;

/// The response body for a delivered charge, settled first when the
/// route's figure is in the head or in a JSON body. The charge's credit
/// headers are set on `head` (or carried by the error).
pub async fn respond(
    mut charge: Charge,
    head: &mut Parts,
    incoming: UpstreamBody,
) -> Result<Body, GatewayError> {
    let source = charge
        .route()
        .settle
        .as_ref()
        .map(|settle| settle.source.clone());
    let scanner = match source {
        None => None,
        Some(SettleSource::Header(name)) => {
            let reported = usage::reported_in_header(&head.headers, &name);
            charge.settle(reported).await;
            None
        }
        Some(SettleSource::Json(pointer)) if usage::is_event_stream(&head.headers) => {
            Some(SseScanner::new(&pointer))
        }
        Some(SettleSource::Json(pointer)) => {
            return settle_from_json(charge, head, incoming, &pointer).await
        }
    };
    charge.headers().apply(&mut head.headers);
    Ok(body::stream(ChargedBody::new(incoming, charge, scanner)))
}

async fn settle_from_json(
    mut charge: Charge,
    head: &mut Parts,
    incoming: UpstreamBody,
    pointer: &str,
) -> Result<Body, GatewayError> {
    match read_whole(incoming, charge.upstream_timeout()).await {
        Whole(bytes) => {
            charge
                .settle(usage::reported_in_json(&bytes, pointer))
                .await;
            charge.headers().apply(&mut head.headers);
            Ok(body::full(bytes))
        }
        TooLarge(rest) => {
            charge.headers().apply(&mut head.headers);
            Ok(body::stream(ChargedBody::new(rest, charge, None)))
        }
        BrokeOff(kind, detail) => {
            if charge.route().refund_on_failure {
                charge.refund().await;
            }
            Err(GatewayError::new(kind, detail).with_credit_headers(charge.headers()))
        }
    }
}

enum Read {
    Whole(Bytes),
    /// Over the cap: what was read, then the rest, as one body.
    TooLarge(Body),
    BrokeOff(ErrorKind, &'static str),
}
use Read::*;

async fn read_whole(incoming: UpstreamBody, timeout: Duration) -> Read {
    let mut collected = BytesMut::new();
    let mut stream = BodyStream::new(incoming);
    let read = async {
        while let Some(frame) = stream.next().await {
            let Ok(frame) = frame else {
                return None;
            };
            if let Some(data) = frame.data_ref() {
                collected.extend_from_slice(data);
            }
            if collected.len() > MAX_BUFFERED_RESPONSE {
                return Some(false);
            }
        }
        Some(true)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Some(true)) => Whole(collected.freeze()),
        Ok(Some(false)) => {
            let head = futures_util::stream::once(async move {
                Ok::<_, BoxError>(Frame::data(collected.freeze()))
            });
            let rest = stream.map(|frame| frame.map_err(BoxError::from));
            TooLarge(BodyExt::boxed(StreamBody::new(head.chain(rest))))
        }
        Ok(None) => BrokeOff(
            ErrorKind::UpstreamUnavailable,
            "the upstream's response broke off before its end",
        ),
        Err(_) => BrokeOff(
            ErrorKind::UpstreamTimeout,
            "the upstream's response did not arrive in time",
        ),
    }
}
