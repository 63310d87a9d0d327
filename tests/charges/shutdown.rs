//! Requests the gateway itself gives up on: a body that stalls mid-forward,
//! and a request the drain timeout cuts at SIGTERM. Neither is charged.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use super::{Backend, Fixture, Options, ACCOUNT};
use crate::support::gateway::{Setup, TestGateway};
use crate::support::http::{raw_exchange, TestClient};
use crate::support::upstream::{Behavior, RecordingUpstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_mid_forward_is_refunded() {
    let upstream = RecordingUpstream::start().await;
    let mut options = Options::new(Backend::Memory, upstream.url());
    options.body_read_timeout = "1s";
    let fixture = Fixture::start(options).await;
    let addr = format!("127.0.0.1:{}", fixture.gateway.data_port)
        .parse()
        .unwrap();
    // A Content-Length body streams on after the debit: the upstream gets
    // the head and 10 bytes, then nothing until the deadline.
    let request = format!(
        "POST /v1/paid HTTP/1.1\r\nhost: gateway\r\nauthorization: {}\r\n\
         x-request-id: stalled\r\ncontent-length: 100\r\n\r\n0123456789",
        fixture.auth()
    );
    let raw = raw_exchange(addr, request.as_bytes(), Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(text.contains("x-credits-cost: 0"), "{text}");

    fixture.wait_settled().await;
    let history = fixture.history().await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["refunded"], true, "{history:?}");
    assert_eq!(fixture.used().await, 0);
    assert_eq!(
        upstream.count(),
        0,
        "the upstream never had the whole request"
    );
    let lines: Vec<_> = fixture
        .access_lines()
        .into_iter()
        .filter(|line| line["request_id"] == "stalled")
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "request_timeout");
    assert_eq!(lines[0]["refunded"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_drain_timeout_cuts_is_refunded_before_the_process_exits() {
    let upstream = RecordingUpstream::start().await;
    // Far longer than the drain timeout, well inside the upstream timeout.
    upstream.set_behavior(Behavior::Delay(Duration::from_secs(30)));
    let mut options = Options::new(Backend::Redis, upstream.url());
    options.upstream_timeout = "60s";
    options.drain_timeout = "1s";
    let mut fixture = Fixture::start(options).await;
    let request = http::Request::post(fixture.gateway.url("/v1/paid"))
        .header("authorization", fixture.auth())
        .header("x-request-id", "cut-by-drain")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let in_flight = tokio::spawn(async move { TestClient::new().try_send(request).await });
    upstream.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(fixture.used().await, 7, "debited while in flight");

    fixture.gateway.signal("TERM");
    let exit = tokio::task::block_in_place(|| fixture.gateway.wait_exit(Duration::from_secs(20)));
    assert_eq!(exit, Some(0), "{}", fixture.gateway.logs());
    let answer = in_flight.await.unwrap();
    if let Ok(response) = &answer {
        assert_eq!(response.status, 503, "{}", response.text());
        assert_eq!(response.json()["code"], "shutting_down");
    }

    // The refund ran before the process exited: the ledger (in Redis) shows it.
    let logs = fixture.gateway.logs();
    let lines: Vec<_> = fixture
        .access_lines()
        .into_iter()
        .filter(|line| line["request_id"] == "cut-by-drain")
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert_eq!(lines[0]["refunded"], true, "{logs}");
    assert_eq!(lines[0]["cost"], 0, "{logs}");
    let redis_url = fixture.redis_url().expect("a Redis ledger");
    let check = TestGateway::start(&Setup::new(&upstream.url()).redis(&redis_url)).await;
    assert_eq!(check.used(ACCOUNT).await, 0, "{logs}");
    let history = check
        .admin_get(&format!("/admin/v1/accounts/{ACCOUNT}/history"))
        .await
        .json();
    assert_eq!(history["items"][0]["request_id"], "cut-by-drain");
    assert_eq!(history["items"][0]["refunded"], true);
}
