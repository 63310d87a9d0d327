//! Connections that never start (silent, half an HTTP/2 preface, half an
//! HTTP/1 head) close at `header_read_timeout` from accept; connections with
//! nothing in progress (HTTP/2 after its handshake, HTTP/1 keep-alive) at
//! `idle_timeout`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    closed_count, hold, metrics, spread, start_gateway, wait_closed, Held, EARLY, EMPTY_SETTINGS,
    H2_PREFACE, HEADER, IDLE, SLACK,
};
use crate::support::http::h2c_get;
use crate::support::upstream::RecordingUpstream;

const PER_KIND: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_start_or_stay_idle_are_closed_while_clients_are_served() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start_gateway(&upstream.url()).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let addr = gateway.running().data_addr;
    let before = metrics(&gateway).await;

    let mut preface_and_settings = H2_PREFACE.to_vec();
    preface_and_settings.extend_from_slice(EMPTY_SETTINGS);
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        ("silent", Vec::new()),
        (
            "half an HTTP/2 preface",
            H2_PREFACE[..H2_PREFACE.len() / 2].to_vec(),
        ),
        ("HTTP/2 preface + SETTINGS, then idle", preface_and_settings),
        (
            "half an HTTP/1 head",
            b"GET /v1/free HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n".to_vec(),
        ),
    ];
    let deadline = IDLE + HEADER + SLACK;
    let mut held = Vec::new();
    for (kind, bytes) in &kinds {
        for _ in 0..PER_KIND {
            let bytes = bytes.clone();
            held.push((
                *kind,
                tokio::spawn(async move { hold(addr, &bytes, deadline).await }),
            ));
        }
    }

    // Meanwhile, normal clients over HTTP/1.1 and HTTP/2 are served.
    let auth = format!("Bearer {key}");
    let mut served = 0;
    while held.iter().any(|(_, task)| !task.is_finished()) {
        let h1 = gateway
            .client
            .get(&gateway.url("/v1/free"), &[("authorization", &auth)])
            .await;
        assert_eq!(h1.status, 200, "{}", h1.text());
        let h2 = h2c_get(&gateway.url("/v1/free"), &[("authorization", &auth)]).await;
        assert_eq!(h2.status, 200, "{}", h2.text());
        served += 2;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut by_kind: Vec<(&str, Vec<Held>)> = kinds.iter().map(|(k, _)| (*k, Vec::new())).collect();
    for (kind, task) in held {
        let outcome = task.await.unwrap();
        by_kind
            .iter_mut()
            .find(|(k, _)| *k == kind)
            .unwrap()
            .1
            .push(outcome);
    }
    for (kind, outcomes) in &by_kind {
        let closed: Vec<Duration> = outcomes.iter().filter_map(|h| h.closed_after).collect();
        let when = spread(&closed);
        eprintln!(
            "{kind}: {} opened, {} closed, at {when} (min/median/max after open)",
            outcomes.len(),
            closed.len()
        );
        assert_eq!(closed.len(), PER_KIND, "{kind}: every connection is closed");
        if kind.contains("then idle") {
            // GOAWAY at the idle deadline; the socket closes once the
            // client (which never answers it) has had header_read_timeout.
            let goaways: Vec<Duration> = outcomes.iter().filter_map(|h| h.goaway_after).collect();
            let goaway = spread(&goaways);
            eprintln!("{kind}: GOAWAY at {goaway}");
            assert_eq!(
                goaways.len(),
                PER_KIND,
                "{kind}: every connection got a GOAWAY"
            );
            assert!(goaway.min + EARLY >= IDLE, "{kind}: GOAWAY at {goaway}");
            assert!(
                when.min + EARLY >= IDLE + HEADER,
                "{kind}: closed at {when}"
            );
            assert!(
                when.max <= IDLE + HEADER + SLACK,
                "{kind}: closed at {when}"
            );
        } else {
            assert!(when.min + EARLY >= HEADER, "{kind}: closed at {when}");
            assert!(when.max <= HEADER + SLACK, "{kind}: closed at {when}");
            assert!(
                outcomes.iter().all(|h| h.received == 0),
                "{kind}: closed without an answer"
            );
        }
    }
    eprintln!("normal requests served meanwhile: {served}");
    assert_eq!(
        upstream.count(),
        served,
        "only the normal requests reached the vendor"
    );

    let after = metrics(&gateway).await;
    let delta =
        |reason| closed_count(&after, "data", reason) - closed_count(&before, "data", reason);
    eprintln!(
        "metrics (data): header_timeout +{}, idle_timeout +{}, write_stalled +{}",
        delta("header_timeout"),
        delta("idle_timeout"),
        delta("write_stalled")
    );
    assert_eq!(delta("header_timeout"), 3 * PER_KIND as u64);
    // The normal clients' own keep-alive connections may idle out too.
    assert!(delta("idle_timeout") >= PER_KIND as u64);
    assert_eq!(delta("write_stalled"), 0);
}

/// Reads one response with a `Content-Length` body from a raw HTTP/1
/// connection; returns its status line.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read head");
        assert_eq!(
            n,
            1,
            "connection closed mid-head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("ascii head");
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("read body");
    head.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_keep_alive_connection_lives_for_idle_timeout_not_header_read_timeout() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start_gateway(&upstream.url()).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let request =
        format!("GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(gateway.running().data_addr)
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");
    // Idle for longer than header_read_timeout: the connection is kept.
    tokio::time::sleep(HEADER + Duration::from_millis(500)).await;
    // The idle clock starts when the answer is sent, after this.
    let sent = Instant::now();
    stream.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");
    let closed = wait_closed(&mut stream, sent, IDLE + SLACK).await;
    eprintln!("HTTP/1 keep-alive: closed {closed:?} after its last request was sent");
    let closed = closed.expect("an idle keep-alive connection is closed");
    assert!(closed + EARLY >= IDLE, "closed after {closed:?}");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_http1_head_left_unfinished_gets_header_read_timeout() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start_gateway(&upstream.url()).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let mut stream = tokio::net::TcpStream::connect(gateway.running().data_addr)
        .await
        .unwrap();
    let request =
        format!("GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");
    let sent = Instant::now();
    stream
        .write_all(b"GET /v1/free HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let closed = wait_closed(&mut stream, sent, HEADER + SLACK).await;
    eprintln!("HTTP/1 second head left unfinished: closed {closed:?} after its first bytes");
    let closed = closed.expect("closed");
    assert!(closed + EARLY >= HEADER, "closed after {closed:?}");
    assert!(closed < IDLE + SLACK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_without_open_streams_gets_a_goaway_at_idle_timeout() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start_gateway(&upstream.url()).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let stream = tokio::net::TcpStream::connect(gateway.running().data_addr)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get(gateway.url("/v1/free"))
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    // The idle clock starts when the answer is done, after this.
    let idle_from = Instant::now();
    let response = sender.send_request(request).await.expect("h2 request");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("h2 body");
    // The client answers the GOAWAY's PING, so the gateway closes at once.
    let ended = tokio::time::timeout(IDLE + SLACK, connection).await;
    let closed = idle_from.elapsed();
    eprintln!(
        "HTTP/2 idle after one request: connection ended {closed:?} after the request was sent"
    );
    assert!(ended.is_ok(), "the idle HTTP/2 connection is still open");
    assert!(closed + EARLY >= IDLE, "ended after {closed:?}");
    assert!(sender.ready().await.is_err(), "no new stream after GOAWAY");
}
