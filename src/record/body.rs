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
