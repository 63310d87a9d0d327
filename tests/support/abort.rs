//! Clients that leave: HTTP/1 connections closed by a reset (`SO_LINGER` 0)
//! or a FIN at a chosen moment, and HTTP/2 streams reset by dropping the
//! request in flight (hyper sends `RST_STREAM`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// `SO_LINGER` 0, then close: the peer sees a reset.
    Rst,
    /// Shut the write side (FIN), then close.
    Fin,
}

/// A random pause of 0–`max_ms` ms (whole milliseconds: the timer's resolution).
pub fn random_pause(max_ms: u64) -> Duration {
    Duration::from_millis(rand::random_range(0..=max_ms))
}

/// An HTTP/1.1 POST with a `Content-Length` body, as raw bytes.
pub fn http1_post(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut request = format!("POST {path} HTTP/1.1\r\nhost: gateway\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Connects, writes the first `sent` bytes of `request`, waits `pause` and
/// leaves without reading anything.
pub async fn http1_send_then_leave(
    addr: SocketAddr,
    request: &[u8],
    sent: usize,
    pause: Duration,
    leave: Leave,
) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let _ = stream.set_nodelay(true);
    if stream.write_all(&request[..sent]).await.is_err() {
        return;
    }
    tokio::time::sleep(pause).await;
    match leave {
        Leave::Rst => {
            let _ = stream.set_zero_linger();
        }
        Leave::Fin => {
            let _ = stream.shutdown().await;
        }
    }
    drop(stream);
}

pub type H2Body = BoxBody<Bytes, Infallible>;

/// An HTTP/2 prior-knowledge connection.
pub async fn h2_connect(addr: SocketAddr) -> SendRequest<H2Body> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// A whole body.
pub fn whole(body: &'static [u8]) -> H2Body {
    Full::new(Bytes::from_static(body)).boxed()
}

/// A body that sends `first` and then never ends.
pub fn never_ending(first: &'static [u8]) -> H2Body {
    let stream = futures_util::stream::unfold(false, move |sent| async move {
        if sent {
            std::future::pending::<()>().await;
        }
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(first))),
            true,
        ))
    });
    StreamBody::new(stream).boxed()
}

/// Sends `request` and drops it after `pause` unless its response head came
/// first (a dropped stream in flight is reset). Returns the status if the
/// response came first.
pub async fn h2_send_then_reset(
    sender: &mut SendRequest<H2Body>,
    request: http::Request<H2Body>,
    pause: Duration,
) -> Option<u16> {
    if sender.ready().await.is_err() {
        return None;
    }
    let response = sender.send_request(request);
    match tokio::time::timeout(pause, response).await {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            Some(status)
        }
        Ok(Err(_)) | Err(_) => None,
    }
}
