//! A request body that must arrive in full before a deadline, so a client
//! trickling bytes cannot hold a connection, an upstream slot or a
//! reservation open indefinitely — and that reports, once it has been
//! handed on, whether it broke off, so the charge knows the upstream never
//! had the whole request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::body::BoxError;

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// The body ended cleanly short of its declared length — an HTTP/2 client
/// can do that with `RST_STREAM(NO_ERROR)`, which hyper reports as an end.
#[derive(Debug, thiserror::Error)]
#[error("the request body ended {0} bytes short of its declared length")]
pub struct BodyCutShort(u64);

/// How a request body ended, as seen after it was handed on.
#[derive(Debug, Default)]
pub struct BodyWatch(AtomicU8);

const INTACT: u8 = 0;
const BROKE_OFF: u8 = 1;
const TIMED_OUT: u8 = 2;

impl BodyWatch {
    /// The body ended in an error: the client went away, reset its stream,
    /// sent malformed framing, or the deadline passed.
    pub fn broke_off(&self) -> bool {
        self.0.load(Ordering::SeqCst) != INTACT
    }

    /// The deadline cut it.
    pub fn timed_out(&self) -> bool {
        self.0.load(Ordering::SeqCst) == TIMED_OUT
    }

    fn set(&self, how: u8) {
        let _ = self
            .0
            .compare_exchange(INTACT, how, Ordering::SeqCst, Ordering::SeqCst);
    }
}

pub struct DeadlineBody {
    inner: Incoming,
    /// Bytes still due when the length was declared.
    remaining: Option<u64>,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    watch: Arc<BodyWatch>,
}

impl DeadlineBody {
    pub fn new(inner: Incoming, timeout: Duration) -> DeadlineBody {
        DeadlineBody {
            remaining: inner.size_hint().exact(),
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            watch: Arc::default(),
        }
    }

    /// Tells, after the body was handed on, how it ended.
    pub fn watch(&self) -> Arc<BodyWatch> {
        self.watch.clone()
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            match &frame {
                Some(Ok(frame)) => {
                    if let (Some(remaining), Some(data)) = (&mut this.remaining, frame.data_ref()) {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                }
                Some(Err(_)) => this.watch.set(BROKE_OFF),
                None => {
                    if let Some(short) = this.remaining.filter(|remaining| *remaining > 0) {
                        this.watch.set(BROKE_OFF);
                        return Poll::Ready(Some(Err(Box::new(BodyCutShort(short)))));
                    }
                }
            }
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.watch.set(TIMED_OUT);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
