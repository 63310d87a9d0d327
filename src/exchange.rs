//! The exchange with the upstream: debit → forward → response head, then
//! the route's failure rules and settlement.
//!
//! **Why it cannot be cancelled by the client.** hyper drops a request's
//! future when its client goes away (HTTP/1 close or reset, HTTP/2
//! `RST_STREAM`). Dropped half-way, a debit may be recorded with nobody to
//! refund it, and a request the upstream already has whole would be
//! refunded although the vendor does the work. So a priced exchange runs
//! `Detached`: it is polled in place while the client waits (no task, no
//! extra wake-up on the common path) and, if the request's future is
//! dropped first, the rest of it is handed to the runtime and finishes
//! there, counted by [`crate::tasks::Tasks`] so shutdown waits for it.
//!
//! Delivery then follows what the upstream received, never "the request was
//! sent": the charge is delivered when the upstream answers (its response
//! head arrives). If the client's body breaks off first (the client left,
//! reset its stream, or stalled past `server.body_read_timeout`), the
//! upstream never had the whole request: the forward fails and the charge
//! refunds, whatever the route's `refund_on_failure`. A client that left
//! before anything was forwarded gets nothing forwarded: the charge refunds
//! at once. The drain timeout at shutdown cuts an exchange still waiting
//! for its upstream; its charge refunds (docs/http-api.md, "Charges").

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use crate::forward::UpstreamBody;
use http::{Request, Response, Version};

use crate::admit;
use crate::body::{self, Body};
use crate::charge::{self, Charge};
use crate::deadline::BodyWatch;
use crate::error::{ErrorKind, GatewayError};
use crate::forward::{self, ClientContext, ConnInfo, ForwardError};
use crate::ledger::KeyOwner;
use crate::record::Record;
use crate::state::{Gateway, Snapshot};
use crate::tasks::Tasks;

/// One request's exchange, ready to run.
pub struct Exchange {
    pub gateway: Arc<Gateway>,
    pub snapshot: Arc<Snapshot>,
    pub route_index: usize,
    pub owner: Arc<KeyOwner>,
    /// The admission cost; 0 = nothing to debit.
    pub cost: u64,
    pub request_id_generated: bool,
    /// The request as it goes upstream: its URI is the upstream's; its
    /// headers are the client's (cleaned when it is sent).
    pub request: Request<Body>,
    pub body_watch: Arc<BodyWatch>,
    pub conn: ConnInfo,
    pub record: Arc<Record>,
}

impl Exchange {
    pub async fn run(self) -> Result<Response<Body>, GatewayError> {
        if self.cost == 0 {
            return self.forward(None).await;
        }
        let record = self.record.clone();
        let tasks = self.gateway.tasks.clone();
        Detached::new(self.priced(), record, tasks).await
    }

    async fn priced(self) -> Result<Response<Body>, GatewayError> {
        let _in_flight = self.gateway.tasks.enter();
        let charge = charge::debit(
            &self.gateway,
            &self.snapshot,
            self.route_index,
            &self.owner,
            self.cost,
            self.request_id_generated,
            &self.record,
        )
        .await?;
        if self.record.has_client_left() {
            // Nobody waits for this answer and nothing was forwarded: the
            // charge, dropped here, refunds.
            return Ok(Response::new(body::empty()));
        }
        let cut = self.gateway.tasks.cut_signal();
        tokio::select! {
            biased;
            // The charge inside the forward, dropped undelivered, refunds.
            _ = cut => Err(GatewayError::new(
                ErrorKind::ShuttingDown,
                "the gateway is shutting down; retry on another instance",
            )
            .with_extra(crate::error::Extra::RetryAfter(1))),
            result = self.forward(charge) => result,
        }
    }

    async fn forward(self, mut charge: Option<Charge>) -> Result<Response<Body>, GatewayError> {
        let upstream = self.snapshot.route_upstreams[self.route_index].clone();
        let request_id = self.record.request_id();
        let context = ClientContext {
            peer: self.conn.peer,
            tls: self.conn.tls,
            request_id: &request_id,
        };
        let (parts, body) = self.request.into_parts();
        let started = Instant::now();
        let result = upstream
            .send(parts.method, parts.uri, &parts.headers, body, &context)
            .await;
        self.record.set_upstream_elapsed(started.elapsed());
        let refund_on_failure = self.snapshot.config.routes[self.route_index].refund_on_failure;
        match result {
            Ok(response) => respond(charge, response, refund_on_failure).await,
            Err(error) => {
                // A body that broke off is the client's doing: the upstream
                // never had the request, whatever the route says.
                let body_broke = self.body_watch.broke_off();
                if let Some(charge) = &mut charge {
                    if body_broke || refund_on_failure {
                        charge.refund().await;
                    } else {
                        charge.keep();
                    }
                }
                let error = if self.body_watch.timed_out() {
                    admit::body_timed_out()
                } else if body_broke {
                    GatewayError::bad_request("the request body broke off before it was complete")
                } else {
                    upstream_failed(&upstream.name, error)
                };
                Err(match &charge {
                    Some(charge) => error.with_credit_headers(charge.headers()),
                    None => error,
                })
            }
        }
    }
}

/// The upstream answered: the charge is delivered; a 5xx refunds when the
/// route says so; settlement and the body follow.
async fn respond(
    charge: Option<Charge>,
    response: Response<UpstreamBody>,
    refund_on_failure: bool,
) -> Result<Response<Body>, GatewayError> {
    let (mut head, incoming) = response.into_parts();
    forward::clean_response_headers(&mut head.headers);
    head.version = Version::HTTP_11;
    let body = match charge {
        None => body::stream(incoming),
        Some(mut charge) => {
            charge.mark_delivered();
            if head.status.is_server_error() && refund_on_failure {
                charge.refund().await;
            }
            charge::settle::respond(charge, &mut head, incoming).await?
        }
    };
    Ok(Response::from_parts(head, body))
}

fn upstream_failed(upstream: &str, error: ForwardError) -> GatewayError {
    let (kind, detail) = match error {
        ForwardError::Timeout(_) => (
            ErrorKind::UpstreamTimeout,
            "the upstream did not answer in time",
        ),
        ForwardError::Unavailable(_) => (
            ErrorKind::UpstreamUnavailable,
            "the upstream could not be reached or answered malformed data",
        ),
    };
    GatewayError::new(kind, detail).with_internal(format_args!("upstream {upstream}: {error}"))
}

/// A future polled in place until it is dropped unfinished; then the rest
/// of it runs on the runtime (see the module doc).
struct Detached<F: Future + Send + 'static> {
    future: Option<Pin<Box<F>>>,
    record: Arc<Record>,
    tasks: Arc<Tasks>,
}

impl<F: Future + Send + 'static> Detached<F> {
    fn new(future: F, record: Arc<Record>, tasks: Arc<Tasks>) -> Detached<F> {
        Detached {
            future: Some(Box::pin(future)),
            record,
            tasks,
        }
    }
}

impl<F: Future + Send + 'static> Future for Detached<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let future = this
            .future
            .as_mut()
            .expect("a Detached future is not polled after it finished");
        // A future that panicked cannot be resumed: drop it here (its charge
        // refunds) rather than hand it to the runtime on the way out.
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)));
        let output = match polled {
            Ok(polled) => ready!(polled),
            Err(panic) => {
                this.future = None;
                std::panic::resume_unwind(panic);
            }
        };
        this.future = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for Detached<F> {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        self.record.client_left();
        // Without a runtime the future is dropped here; its charge then
        // logs and counts the refund it cannot run.
        let _ = self.tasks.spawn(async move {
            let _ = future.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> (Arc<Record>, Arc<Tasks>) {
        let snapshot = crate::state::test_snapshot();
        let metrics = snapshot.metrics.clone();
        let record = Record::start(
            snapshot,
            http::Method::POST,
            http::Uri::from_static("/v1/paid"),
            http::HeaderValue::from_static("t-1"),
        );
        (record, Arc::new(Tasks::new(metrics)))
    }

    #[tokio::test]
    async fn a_dropped_exchange_finishes_on_the_runtime_and_shutdown_waits_for_it() {
        let (record, tasks) = parts();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let exchange = Detached::new(
            async move {
                let _ = released.await;
                let _ = done.send(());
            },
            record.clone(),
            tasks.clone(),
        );
        // Polled once in place (pending), then dropped as hyper drops a
        // request whose client left.
        let mut exchange = Box::pin(exchange);
        let first = std::future::poll_fn(|cx| Poll::Ready(exchange.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        drop(exchange);
        assert!(record.has_client_left());
        assert_eq!(tasks.in_flight(), 1, "the rest runs as counted work");
        release.send(()).unwrap();
        finished.await.expect("the exchange ran to its end");
        tasks.idle().await;
    }

    #[tokio::test]
    async fn a_finished_exchange_is_not_detached() {
        let (record, tasks) = parts();
        let output = Detached::new(async { 7 }, record.clone(), tasks.clone()).await;
        assert_eq!(output, 7);
        assert!(!record.has_client_left());
        assert_eq!(tasks.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_panicking_exchange_is_dropped_not_resumed() {
        struct Dropped(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let (record, tasks) = parts();
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let owned = Dropped(dropped.clone());
        let exchange = Detached::new(
            async move {
                let _owned = owned;
                panic!("a phase panicked");
            },
            record.clone(),
            tasks.clone(),
        );
        let outcome = tokio::spawn(exchange).await;
        assert!(outcome.unwrap_err().is_panic());
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!record.has_client_left(), "nothing was handed on");
        assert_eq!(tasks.in_flight(), 0);
    }
}
