//! Clients that stop reading: their responses are abandoned and their
//! connections closed after `idle_timeout`, over HTTP/1 (socket buffers
//! full) and HTTP/2 (a flow-control window never reopened).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{closed_count, metrics, start_gateway, wait_for_closed, IDLE, SLACK};
use crate::support::gateway::TestGateway;
use crate::support::upstream::{Behavior, RecordingUpstream};

fn large_body(bytes: usize) -> Behavior {
    Behavior::Body {
        status: 200,
        content_type: "application/octet-stream".to_owned(),
        body: vec![b'x'; bytes],
    }
}

/// Reads what the gateway had sent before it closed; returns the byte
/// count, or panics if the connection is still open after `deadline`.
async fn drain_until_closed(stream: &mut tokio::net::TcpStream, deadline: Duration) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 256 * 1024];
    tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the gateway closed the connection");
    total
}

async fn stalled(gateway: &TestGateway) -> u64 {
    closed_count(&metrics(gateway).await, "data", "write_stalled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_whose_responses_are_never_read_are_closed_after_idle_timeout() {
    const REQUESTS: usize = 64;
    const EACH: usize = 1 << 20;
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior(large_body(EACH));
    let gateway = start_gateway(&upstream.url()).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let before = stalled(&gateway).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.running().data_addr)
        .await
        .unwrap();
    let request =
        format!("GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n");
    let started = Instant::now();
    stream
        .write_all(request.repeat(REQUESTS).as_bytes())
        .await
        .unwrap();
    // Never read: the gateway's writes block once the socket buffers fill.
    let after = wait_for_closed(
        &gateway,
        "data",
        "write_stalled",
        before + 1,
        started,
        IDLE + SLACK * 2,
    )
    .await;
    let forwarded = upstream.count();
    eprintln!(
        "pipelined slow reader: closed as write_stalled {after:?} after the requests were sent; \
         {forwarded} of {REQUESTS} reached the vendor"
    );
    assert!(
        after >= IDLE,
        "closed {after:?} after the requests were sent"
    );
    let received = drain_until_closed(&mut stream, SLACK).await;
    assert!(
        received < REQUESTS * EACH,
        "only what fitted in the buffers was sent ({received} bytes)"
    );
    assert!(forwarded < REQUESTS, "the rest were never forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_never_read_is_abandoned_after_idle_timeout() {
    const SIZE: usize = 32 << 20;
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior(large_body(SIZE));
    let gateway = start_gateway(&upstream.url()).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let before = stalled(&gateway).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.running().data_addr)
        .await
        .unwrap();
    let request =
        format!("GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n");
    let sent = Instant::now();
    stream.write_all(request.as_bytes()).await.unwrap();
    upstream.wait_for(1, SLACK).await;
    let after = wait_for_closed(
        &gateway,
        "data",
        "write_stalled",
        before + 1,
        sent,
        IDLE + SLACK * 2,
    )
    .await;
    eprintln!(
        "large response never read: closed as write_stalled {after:?} after the request was sent"
    );
    assert!(after >= IDLE, "closed {after:?} after the request was sent");
    let received = drain_until_closed(&mut stream, SLACK).await;
    assert!(received < SIZE, "the response was cut ({received} bytes)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_response_held_by_a_shut_window_is_abandoned_after_idle_timeout() {
    const SIZE: usize = 8 << 20;
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior(large_body(SIZE));
    let gateway = start_gateway(&upstream.url()).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let before = stalled(&gateway).await;
    let stream = tokio::net::TcpStream::connect(gateway.running().data_addr)
        .await
        .unwrap();
    // The client keeps reading its socket (so TCP never blocks) but never
    // reads the body, so it never reopens the stream's window.
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake(TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get(gateway.url("/v1/free"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let held_from = Instant::now();
    let response = sender.send_request(request).await.expect("h2 request");
    assert_eq!(response.status(), 200);
    let ended = tokio::time::timeout(IDLE * 2 + SLACK, connection).await;
    let closed = held_from.elapsed();
    eprintln!("HTTP/2 body never read: connection ended {closed:?} after the request was sent");
    assert!(ended.is_ok(), "the stalled HTTP/2 connection is still open");
    assert!(
        closed + Duration::from_millis(20) >= IDLE,
        "ended after {closed:?}"
    );
    assert_eq!(stalled(&gateway).await, before + 1);
    drop(response);
}
