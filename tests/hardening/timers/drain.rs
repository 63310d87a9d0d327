//! The drain on shutdown closes connections that are not serving a request
//! at once — whatever their timers say — and lets requests in flight finish.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;

use super::{hold, spread, timers_toml, wait_closed, H2_PREFACE, SLACK};
use crate::support::gateway::TestGateway;
use crate::support::http::TestClient;
use crate::support::upstream::{Behavior, RecordingUpstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_closes_idle_and_unstarted_connections_and_finishes_requests_in_flight() {
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior_for("/v1/paid", Behavior::Delay(Duration::from_millis(1500)));
    // Timers far beyond the test: only the drain can close these.
    let toml = timers_toml(&upstream.url(), "30s", "60s", "", "");
    let gateway = TestGateway::start_toml(&toml).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let auth = format!("Bearer {key}");
    let addr = gateway.running().data_addr;

    let kinds: [(&str, &[u8]); 3] = [
        ("silent", b""),
        ("half an HTTP/2 preface", &H2_PREFACE[..12]),
        (
            "half an HTTP/1 head",
            b"GET /v1/free HTTP/1.1\r\nHost: x\r\n",
        ),
    ];
    let mut held = Vec::new();
    for (kind, bytes) in kinds {
        for _ in 0..10 {
            held.push((kind, tokio::spawn(hold(addr, bytes, SLACK * 2))));
        }
    }
    // An idle HTTP/1 keep-alive connection and an idle HTTP/2 connection.
    let mut keep_alive = tokio::net::TcpStream::connect(addr).await.unwrap();
    keep_alive
        .write_all(
            format!("GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let (mut h2, h2_connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap()),
    )
    .await
    .unwrap();
    let h2_connection = tokio::spawn(h2_connection);
    let response = h2
        .send_request(
            http::Request::get(gateway.url("/v1/free"))
                .header("authorization", &auth)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    // And a request in flight.
    let in_flight = {
        let url = gateway.url("/v1/paid");
        let auth = auth.clone();
        tokio::spawn(async move {
            TestClient::new()
                .post(&url, &[("authorization", &auth)], "x")
                .await
        })
    };
    upstream.wait_for(2, SLACK).await;
    // Let the keep-alive answer arrive and the silent ones be accepted.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let drain_started = Instant::now();
    let shutdown = tokio::spawn(gateway.shutdown());
    let mut closed_after = Vec::new();
    for (kind, task) in held {
        let outcome = task.await.unwrap();
        let closed_at = outcome
            .closed_at
            .unwrap_or_else(|| panic!("{kind}: still open after the drain"));
        closed_after.push(closed_at.saturating_duration_since(drain_started));
    }
    let keep_alive_closed = wait_closed(&mut keep_alive, drain_started, SLACK).await;
    assert!(
        keep_alive_closed.is_some(),
        "the keep-alive connection stayed open"
    );
    let h2_ended = tokio::time::timeout(SLACK, h2_connection).await;
    assert!(h2_ended.is_ok(), "the idle HTTP/2 connection stayed open");
    let response = in_flight.await.unwrap();
    assert_eq!(
        response.status,
        200,
        "the request in flight finished: {}",
        response.text()
    );
    tokio::time::timeout(SLACK, shutdown)
        .await
        .expect("the drain ended")
        .unwrap();
    eprintln!(
        "drain: 30 unstarted connections closed by {} after the drain began; \
         keep-alive and HTTP/2 idle connections closed; the request in flight answered 200",
        spread(&closed_after)
    );
    assert!(drain_started.elapsed() < Duration::from_secs(30));
}
