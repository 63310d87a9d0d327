//! A request in flight, as its connection's watchdog sees it: a guard that
//! lives from the moment hyper hands the service a complete head until the
//! response body is dropped, and a response body that tells when it has
//! handed hyper a frame the client has not made room for yet.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::activity::Activity;
use crate::body::{Body, BoxError};

/// Counts one request in flight on its connection until dropped.
pub struct RequestGuard(Arc<Activity>);

impl RequestGuard {
    pub fn start(activity: &Arc<Activity>) -> RequestGuard {
        activity.request_started();
        RequestGuard(activity.clone())
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The response body hyper writes, carrying its request's guard: the
/// request stays in flight until hyper is done with the body (or drops it
/// because the connection went away).
pub struct TrackedBody {
    inner: Body,
    /// A frame was handed out and the next one has not been asked for.
    waiting: bool,
    guard: RequestGuard,
}

impl TrackedBody {
    pub fn new(inner: Body, guard: RequestGuard) -> TrackedBody {
        TrackedBody {
            inner,
            waiting: false,
            guard,
        }
    }

    fn taken(&mut self) {
        if self.waiting {
            self.waiting = false;
            self.guard.0.response_taken();
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        // hyper asks for the next frame only once the previous one fits in
        // its write buffer (HTTP/1) or in the client's flow-control window
        // (HTTP/2): being asked again is the client making progress.
        this.taken();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            if !this.inner.is_end_stream() {
                this.waiting = true;
                this.guard.0.response_waiting();
            }
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

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.taken();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn two_frames() -> Body {
        let frames = futures_util::stream::iter(vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"b"))),
        ]);
        StreamBody::new(frames).boxed()
    }

    #[tokio::test]
    async fn a_request_is_in_flight_until_its_body_is_dropped() {
        let activity = Arc::new(Activity::new(tokio::time::Instant::now()));
        let body = TrackedBody::new(two_frames(), RequestGuard::start(&activity));
        assert_eq!(activity.in_flight(), 1);
        assert!(activity.started());
        drop(body);
        assert_eq!(activity.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_frame_waits_until_the_next_one_is_asked_for() {
        let activity = Arc::new(Activity::new(tokio::time::Instant::now()));
        let mut body = TrackedBody::new(two_frames(), RequestGuard::start(&activity));
        let first = body.frame().await.expect("frame").expect("ok");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"a")));
        assert_eq!(activity.responses_waiting(), 1);
        assert_eq!(activity.response_progress(), 0);
        let _second = body.frame().await.expect("frame").expect("ok");
        assert_eq!(activity.response_progress(), 1);
        // A stream body does not know the second frame was its last.
        assert_eq!(activity.responses_waiting(), 1);
        drop(body);
        assert_eq!(activity.responses_waiting(), 0);
        assert_eq!(activity.response_progress(), 2);
    }
}
