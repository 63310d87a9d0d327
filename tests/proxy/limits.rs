//! Greedy and slow clients: header limits, body deadline, connection cap.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::gateway::{config_toml, Setup, TestGateway};
use crate::support::http::raw_exchange;
use crate::support::upstream::RecordingUpstream;

async fn start_with(upstream: &RecordingUpstream, server_extra: &str) -> TestGateway {
    let toml = config_toml(&Setup::new(&upstream.url())).replace(
        "drain_timeout = \"5s\"",
        &format!("drain_timeout = \"5s\"\n{server_extra}"),
    );
    TestGateway::start_toml(&toml).await
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431_and_never_forwarded() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start_with(&upstream, "max_headers = 50\nmax_header_bytes = 16384").await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let addr = gateway.running().data_addr;
    let mut many = format!("GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n");
    for i in 0..60 {
        many.push_str(&format!("X-Filler-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw_exchange(addr, many.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let big = format!(
        "GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nX-Big: {}\r\n\r\n",
        "z".repeat(32 * 1024)
    );
    let answer = raw_exchange(addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(upstream.count(), 0);
    // A normal request still works.
    let ok = gateway.get_as(&key, "/v1/free").await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn a_trickling_body_is_cut_by_the_body_deadline_and_costs_nothing() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start_with(&upstream, "body_read_timeout = \"1s\"").await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let addr = gateway.running().data_addr;
    for framing in ["Content-Length: 100", "Transfer-Encoding: chunked"] {
        let started = Instant::now();
        let head = format!(
            "POST /v1/paid HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n{framing}\r\n\r\n"
        );
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let first = if framing.starts_with("Content") {
            "0123456789"
        } else {
            "a\r\n0123456789\r\n"
        };
        stream.write_all(first.as_bytes()).await.unwrap();
        // …and nothing more. The gateway must answer (or close) on its own.
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{framing}: held {:?}",
            started.elapsed()
        );
        assert!(answer.starts_with("HTTP/1.1 408"), "{framing}: {answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }
    assert_eq!(
        upstream.count(),
        0,
        "no complete request reached the vendor"
    );
    assert_eq!(
        gateway.used("site-1").await,
        0,
        "nothing debited, or refunded"
    );
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_served_again_when_slots_free() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start_with(&upstream, "max_connections = 4").await;
    let addr = gateway.running().data_addr;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let over = raw_exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(over.is_empty(), "the fifth connection is closed unanswered");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let ok = gateway.get_as(&key, "/v1/free").await;
    assert_eq!(ok.status, 200);
}
