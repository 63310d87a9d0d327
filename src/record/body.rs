//! The response body on its way to the client: the record's last owner on
//! the data plane, telling it how many bytes went out and whether the body
//! reached its end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::Record;
use crate::body::{Body, BoxError};

pub struct ClientBody {
    inner: Body,
    record: Arc<Record>,
    bytes: u64,
    ended: bool,
}

impl ClientBody {
    /// Hands `response` to the connection: its status is recorded, its
    /// `X-Request-Id` set, and its body carries the record to the end.
    pub fn respond(record: Arc<Record>, response: Response<Body>) -> Response<Body> {
        let (mut head, inner) = response.into_parts();
        head.headers.insert("x-request-id", record.request_id());
        record.responded(head.status.as_u16());
        let body = ClientBody {
            inner,
            record,
            bytes: 0,
            ended: false,
        };
        Response::from_parts(head, crate::body::stream(body))
    }
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                // hyper stops polling once a body says it has ended.
                this.ended = this.inner.is_end_stream();
            }
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let complete = self.ended || self.inner.is_end_stream();
        self.record.body_finished(self.bytes, complete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Snapshot;
    use http_body_util::BodyExt;

    fn record(snapshot: &Arc<Snapshot>) -> Arc<Record> {
        let record = Record::start(
            snapshot.clone(),
            http::Method::GET,
            http::Uri::from_static("/v1/paid"),
            http::HeaderValue::from_static("b-1"),
        );
        record.set_route(0);
        record
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_forwarded_and_counted_once_it_is_dropped() {
        let snapshot = crate::state::test_snapshot();
        let metrics = &snapshot.metrics;
        let response = ClientBody::respond(
            record(&snapshot),
            Response::new(crate::body::full("twelve bytes")),
        );
        assert_eq!(response.headers()["x-request-id"], "b-1");
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
        assert!(!metrics.render().contains("creditgate_requests_total{"));
        drop(body);
        assert!(metrics.render().contains(
            "creditgate_requests_total{route=\"paid\",outcome=\"forwarded\",status=\"200\"} 1"
        ));
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_a_client_that_left() {
        let snapshot = crate::state::test_snapshot();
        let metrics = &snapshot.metrics;
        let (sender, streamed) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = http_body_util::StreamBody::new(tokio_stream_from(streamed));
        let response = ClientBody::respond(
            record(&snapshot),
            Response::new(crate::body::stream(stream)),
        );
        let mut body = response.into_body();
        sender
            .send(Ok(Frame::data(Bytes::from_static(b"part"))))
            .await
            .unwrap();
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert!(metrics.render().contains(
            "creditgate_requests_total{route=\"paid\",outcome=\"client_closed\",status=\"200\"} 1"
        ));
    }

    fn tokio_stream_from(
        mut receiver: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> {
        futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
    }
}
