//! Greedy and slow clients: header limits, body deadline, connection cap.

use std::time::Duration;

use crate::support::gateway::{config_toml, Setup, TestGateway};
use crate::support::http::{raw_exchange, raw_exchange_until_closed, RawConnection};
use crate::support::money::{assert_ledger_matches_vendors, by_path};
use crate::support::upstream::RecordingUpstream;
use crate::support::wait::wait_until;

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
    assert_eq!(upstream.reached(), 0, "{}", upstream.summary());
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
        let first = if framing.starts_with("Content") {
            "0123456789"
        } else {
            "a\r\n0123456789\r\n"
        };
        let reached_before = upstream.reached();
        let request = format!(
            "POST /v1/paid HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n{framing}\r\n\r\n{first}"
        );
        // …and nothing more. The gateway must answer and close on its own
        // (read_to_close fails on a hang).
        let mut connection = RawConnection::open(addr, request.as_bytes()).await;
        let answer = connection.read_to_close().await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{framing}: {answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
        // A chunked body is read whole before anything is forwarded; a body
        // with a Content-Length streams after the debit, so the vendor may
        // have seen its head and the first bytes: then it must have seen
        // the body break off, never a whole request.
        wait_until(
            "any partial forward to break off at the vendor",
            async || match upstream.reached() == upstream.aborted() {
                true => Ok(()),
                false => Err(upstream.summary()),
            },
        )
        .await;
        if framing.starts_with("Transfer") {
            assert_eq!(
                upstream.reached(),
                reached_before,
                "chunked: {}",
                upstream.summary()
            );
        }
    }
    assert_eq!(
        upstream.count(),
        0,
        "no complete request reached the vendor: {}",
        upstream.summary()
    );
    let view = gateway.ledger_view(&["site-1"]).await;
    assert_eq!(view.used, 0, "nothing debited, or refunded: {view:?}");
    assert_ledger_matches_vendors(&view, &[&upstream], by_path(&[("/v1/paid", 7)]));
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_served_again_when_slots_free() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start_with(&upstream, "max_connections = 4").await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let addr = gateway.running().data_addr;
    let open_connections = async || {
        let value = gateway
            .metrics()
            .await
            .get("creditgate_open_connections{listener=\"data\"}");
        value as u64
    };
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    wait_until(
        "the gateway to hold 4 data connections",
        async || match open_connections().await {
            4 => Ok(()),
            n => Err(format!("{n} open")),
        },
    )
    .await;
    // Closed without an answer — and closed, not left hanging.
    let over = raw_exchange_until_closed(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        over.is_empty(),
        "the fifth connection is closed unanswered: {}",
        String::from_utf8_lossy(&over)
    );
    assert_eq!(open_connections().await, 4, "the fifth was never served");
    drop(held);
    wait_until(
        "the held connections to be released",
        async || match open_connections().await {
            0 => Ok(()),
            n => Err(format!("{n} open")),
        },
    )
    .await;
    let ok = gateway.get_as(&key, "/v1/free").await;
    assert_eq!(ok.status, 200);
}
