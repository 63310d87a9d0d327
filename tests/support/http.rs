//! A small HTTP client for tests, plus raw-socket and h2c helpers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::openapi::{check, Listeners};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
    /// A gateway's listeners whose answers are checked against
    /// docs/openapi.json ([`super::openapi::check`]).
    checked: Option<Listeners>,
}

impl Default for TestClient {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClient {
    pub fn new() -> TestClient {
        TestClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            checked: None,
        }
    }

    /// A client that checks every answer of the usage API (on `data`) and
    /// of the admin listener (`admin`) against docs/openapi.json, and fails
    /// the test on the first that breaks it.
    pub fn checking(data: SocketAddr, admin: SocketAddr) -> TestClient {
        TestClient {
            checked: Some(Listeners { data, admin }),
            ..TestClient::new()
        }
    }

    pub async fn try_send(&self, request: http::Request<Full<Bytes>>) -> Result<Response, String> {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        let response = Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        };
        if let Some(listener) = self.checked.as_ref().and_then(|l| l.of(&uri)) {
            if let Err(broken) = check(listener, &method, uri.path(), &response) {
                panic!(
                    "{method} {uri} ({} listener) answered {} against docs/openapi.json: {broken}",
                    listener.name(),
                    response.status
                );
            }
        }
        Ok(response)
    }

    pub async fn send(&self, request: http::Request<Full<Bytes>>) -> Response {
        let what = format!("{} {}", request.method(), request.uri());
        self.try_send(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    fn build(
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> http::Request<Full<Bytes>> {
        let mut builder = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Full::new(body)).expect("valid test request")
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Response {
        self.send(Self::build(http::Method::GET, url, headers, Bytes::new()))
            .await
    }

    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        self.send(Self::build(http::Method::POST, url, headers, body.into()))
            .await
    }

    /// A request authenticated with an API key (`Authorization: Bearer`),
    /// plus any other headers.
    pub async fn send_as(
        &self,
        key: &str,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        let bearer = format!("Bearer {key}");
        let mut all = vec![("authorization", bearer.as_str())];
        all.extend_from_slice(headers);
        self.send(Self::build(method, url, &all, body.into())).await
    }

    /// `POST url` with `body`, as the holder of `key`.
    pub async fn post_as(&self, key: &str, url: &str, body: impl Into<Bytes>) -> Response {
        self.send_as(key, http::Method::POST, url, &[], body).await
    }

    /// `GET url` as the holder of `key`.
    pub async fn get_as(&self, key: &str, url: &str) -> Response {
        self.send_as(key, http::Method::GET, url, &[], Bytes::new())
            .await
    }

    pub async fn put_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        json: serde_json::Value,
    ) -> Response {
        let mut all = headers.to_vec();
        all.push(("content-type", "application/json"));
        self.send(Self::build(
            http::Method::PUT,
            url,
            &all,
            Bytes::from(json.to_string()),
        ))
        .await
    }

    pub async fn delete(&self, url: &str, headers: &[(&str, &str)]) -> Response {
        self.send(Self::build(
            http::Method::DELETE,
            url,
            headers,
            Bytes::new(),
        ))
        .await
    }
}

/// How long a test waits for something that should happen at once, before
/// it fails saying what it was waiting for: far beyond any latency a loaded
/// machine shows, so only a hang reaches it.
pub const GENEROUS: Duration = Duration::from_secs(30);

/// Writes `bytes` on a fresh connection and reads until the server closes
/// it or `timeout` passes; returns everything read. For a corpus where some
/// answers legitimately never come; [`raw_exchange_until_closed`] tells a
/// closed connection from a hung one.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// Writes `bytes` on a fresh connection and reads until the server closes
/// it; returns everything read. Panics, with what was read, if the
/// connection is still open after [`GENEROUS`].
pub async fn raw_exchange_until_closed(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut connection = RawConnection::open(addr, bytes).await;
    connection.read_to_close().await;
    connection.read
}

/// A raw client connection that a test reads step by step (and may drop
/// half-way, as a client that leaves).
pub struct RawConnection {
    stream: tokio::net::TcpStream,
    /// Everything read so far.
    pub read: Vec<u8>,
    closed: bool,
}

impl RawConnection {
    pub async fn open(addr: SocketAddr, bytes: &[u8]) -> RawConnection {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        RawConnection {
            stream,
            read: Vec::new(),
            closed: false,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.read).into_owned()
    }

    /// Reads until `needle` has arrived; panics if the connection closes or
    /// [`GENEROUS`] passes first.
    pub async fn read_until(&mut self, needle: &str) -> String {
        let waited = tokio::time::timeout(GENEROUS, async {
            while !self.text().contains(needle) {
                if !self.read_some().await {
                    return false;
                }
            }
            true
        })
        .await;
        match waited {
            Ok(true) => self.text(),
            Ok(false) => panic!("closed before {needle:?} arrived; read:\n{}", self.text()),
            Err(_) => panic!(
                "waited {GENEROUS:?} for {needle:?}; read so far:\n{}",
                self.text()
            ),
        }
    }

    /// Reads until the server closes the connection (FIN or reset); panics
    /// if it is still open after [`GENEROUS`].
    pub async fn read_to_close(&mut self) -> String {
        let waited =
            tokio::time::timeout(GENEROUS, async { while self.read_some().await {} }).await;
        assert!(
            waited.is_ok(),
            "the server left the connection open for {GENEROUS:?}; read:\n{}",
            self.text()
        );
        self.text()
    }

    /// One read; false once the connection is closed.
    async fn read_some(&mut self) -> bool {
        if self.closed {
            return false;
        }
        let mut buf = [0u8; 4096];
        match self.stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.read.extend_from_slice(&buf[..n]);
                true
            }
        }
    }
}

/// An HTTP/2 prior-knowledge (h2c) GET.
pub async fn h2c_get(url: &str, headers: &[(&str, &str)]) -> Response {
    let uri: http::Uri = url.parse().expect("url");
    let authority = uri.authority().expect("authority").as_str().to_owned();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let mut builder = http::Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("h2 request");
    let (parts, body) = response.into_parts();
    Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.expect("h2 body").to_bytes(),
    }
}
