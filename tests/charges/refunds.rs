//! A refund the ledger cannot take at once is retried in the background,
//! and the request's access line waits for its outcome.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Notify;

use super::{Backend, Fixture, Options};
use crate::support::http::TestClient;

/// An upstream that reads each request whole and answers 500 only once
/// its gate is opened.
struct GatedUpstream {
    url: String,
    received: Arc<AtomicUsize>,
    gate: Arc<Notify>,
}

impl GatedUpstream {
    async fn start() -> GatedUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let (counter, opened) = (received.clone(), gate.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, opened) = (counter.clone(), opened.clone());
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (counter, opened) = (counter.clone(), opened.clone());
                    async move {
                        let _ = request.into_body().collect().await;
                        counter.fetch_add(1, Ordering::SeqCst);
                        opened.notified().await;
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(500)
                                .body(Full::new(Bytes::from_static(b"vendor down")))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
            }
        });
        GatedUpstream {
            url,
            received,
            gate,
        }
    }
}

async fn wait_until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_the_ledger_refuses_at_first_is_retried_until_it_succeeds() {
    let upstream = GatedUpstream::start().await;
    let mut options = Options::new(Backend::Redis, upstream.url.clone());
    options.ledger_timeout = "200ms";
    let fixture = Fixture::start(options).await;
    let redis = fixture.redis().expect("a Redis ledger");

    let request = http::Request::post(fixture.gateway.url("/v1/paid"))
        .header("authorization", fixture.auth())
        .header("x-request-id", "retried-refund")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let answer = tokio::spawn(async move { TestClient::new().send(request).await });
    // Debited and delivered; now the ledger freezes and the vendor fails.
    wait_until("the upstream has the request", async || {
        upstream.received.load(Ordering::SeqCst) == 1
    })
    .await;
    redis.signal("STOP");
    upstream.gate.notify_one();
    wait_until("the first refund attempt fails", async || {
        fixture
            .gateway
            .logs()
            .contains("refund failed, retrying in the background")
    })
    .await;
    redis.signal("CONT");

    let response = answer.await.unwrap();
    assert_eq!(response.status, 500);
    wait_until("the refund is in the ledger", async || {
        fixture.used().await == 0
    })
    .await;
    fixture.wait_settled().await;
    let lines: Vec<_> = fixture
        .access_lines()
        .into_iter()
        .filter(|line| line["request_id"] == "retried-refund")
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["refunded"], true, "written once the refund was in");
    assert_eq!(lines[0]["cost"], 0);
    let metrics = fixture.metrics().await;
    assert!(
        !metrics.contains("creditgate_refund_failures_total{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("creditgate_credits_refunded_total{route=\"paid\"} 7"),
        "{metrics}"
    );
}
