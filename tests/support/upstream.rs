//! A real HTTP upstream on 127.0.0.1:0 that records every request it
//! receives, so tests can assert exactly what a vendor saw.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    pub version: http::Version,
    /// In order, names lower-case, duplicates kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: Instant,
    /// The status this upstream chose to answer with (`None`: it closed the
    /// connection instead). Whether the answer reached the gateway in time
    /// is another matter: a `Delay` can outlast the gateway's timeout.
    pub status: Option<u16>,
}

impl RecordedRequest {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    /// The `X-Request-Id` the gateway forwarded: the id its debit is filed under.
    pub fn request_id(&self) -> &str {
        self.header("x-request-id").unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the upstream answers.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// 200 with `{"ok":true,"path":…}`.
    Ok,
    Status(u16),
    /// Sleeps, then 200.
    Delay(Duration),
    Body {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    /// Like `Body`, with extra response headers.
    BodyWithHeaders {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Streams each chunk after its pause.
    Chunks {
        status: u16,
        content_type: String,
        chunks: Vec<(Duration, Vec<u8>)>,
    },
    /// Sends the head, then each step in order: data, a pause, or a wait
    /// until a [`Gate`] opens (so a test decides when the stream goes on,
    /// instead of guessing with pauses).
    Stream {
        status: u16,
        content_type: String,
        steps: Vec<Step>,
    },
    /// Waits until the gate opens, then answers as the inner behavior.
    Gated(Gate, Box<Behavior>),
    /// Reads the request, then drops the connection without answering.
    CloseWithoutResponse,
}

/// One step of a [`Behavior::Stream`] body.
#[derive(Debug, Clone)]
pub enum Step {
    Data(Vec<u8>),
    Pause(Duration),
    Wait(Gate),
}

/// A latch a test opens once; everything waiting on it then proceeds.
#[derive(Debug, Clone)]
pub struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(tokio::sync::watch::channel(false).0))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    pub async fn wait(&self) {
        let mut open = self.0.subscribe();
        // The sender lives in `self`, so this only ends when opened.
        let _ = open.wait_for(|open| *open).await;
    }
}

impl Behavior {
    /// The status this behavior answers with, if it answers at all.
    fn status(&self) -> Option<u16> {
        match self {
            Behavior::Ok | Behavior::Delay(_) => Some(200),
            Behavior::Status(status)
            | Behavior::Body { status, .. }
            | Behavior::BodyWithHeaders { status, .. }
            | Behavior::Chunks { status, .. }
            | Behavior::Stream { status, .. } => Some(*status),
            Behavior::Gated(_, inner) => inner.status(),
            Behavior::CloseWithoutResponse => None,
        }
    }
}

#[derive(Default)]
struct State {
    requests: Vec<RecordedRequest>,
    /// Request heads seen, whether or not their body arrived whole.
    heads: usize,
    aborted: usize,
    default: Option<Behavior>,
    by_prefix: Vec<(String, Behavior)>,
}

pub struct RecordingUpstream {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingUpstream {
    pub async fn start() -> RecordingUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(Mutex::new(State::default()));
        let connections = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(listener, state.clone(), connections.clone()));
        RecordingUpstream {
            addr,
            state,
            connections,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        self.state.lock().unwrap().default = Some(behavior);
    }

    pub fn set_behavior_for(&self, path_prefix: &str, behavior: Behavior) {
        self.state
            .lock()
            .unwrap()
            .by_prefix
            .push((path_prefix.to_owned(), behavior));
    }

    /// The requests received whole (head and complete body), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many requests were received whole: what a vendor works on, and
    /// so what the ledger may charge for.
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// How many requests reached this upstream at all: every head seen,
    /// whole, broken off or still arriving. "Never forwarded" means this is
    /// zero: a partial forward is a forward.
    pub fn reached(&self) -> usize {
        self.state.lock().unwrap().heads
    }

    pub fn clear(&self) {
        let mut state = self.state.lock().unwrap();
        state.requests.clear();
        state.heads = 0;
        state.aborted = 0;
    }

    /// Requests whose body broke off before it was complete.
    pub fn aborted(&self) -> usize {
        self.state.lock().unwrap().aborted
    }

    /// Whole, aborted and head-only counts, for failure messages.
    pub fn summary(&self) -> String {
        let state = self.state.lock().unwrap();
        format!(
            "{} whole, {} broken off, {} heads, {} connections",
            state.requests.len(),
            state.aborted,
            state.heads,
            self.connections.load(Ordering::SeqCst)
        )
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests have arrived (or panics at `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {n} whole requests; upstream saw {}",
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<Mutex<State>>,
    connections: Arc<AtomicUsize>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors (many slow clients at once): retrying at
            // once would spin a core until one frees up.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        tokio::spawn(async move {
            // Closing without an answer needs the connection's task to end,
            // which a service cannot do: a oneshot tells the task to drop it.
            let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
            let close_tx = Arc::new(Mutex::new(Some(close_tx)));
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let state = state.clone();
                let close_tx = close_tx.clone();
                async move {
                    let (behavior, path) = record(&state, request).await;
                    if let Behavior::CloseWithoutResponse = behavior {
                        if let Some(tx) = close_tx.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(respond(behavior, &path).await)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = close_rx => {}
            }
        });
    }
}

/// Returns what to answer and the path it was asked for.
async fn record(
    state: &Mutex<State>,
    request: Request<hyper::body::Incoming>,
) -> (Behavior, String) {
    let (parts, body) = request.into_parts();
    state.lock().unwrap().heads += 1;
    // A request whose body broke off never reached the vendor as a whole
    // request: it is counted apart (`aborted`, `reached`), not recorded.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => {
            state.lock().unwrap().aborted += 1;
            return (Behavior::CloseWithoutResponse, String::new());
        }
    };
    let path = parts.uri.path().to_owned();
    let mut state = state.lock().unwrap();
    // The latest setting for a prefix wins, so a test can override its own.
    let behavior = state
        .by_prefix
        .iter()
        .rev()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        .map(|(_, b)| b.clone())
        .or_else(|| state.default.clone())
        .unwrap_or(Behavior::Ok);
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_default(),
        version: parts.version,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        received_at: Instant::now(),
        status: behavior.status(),
    };
    state.requests.push(recorded);
    (behavior, path)
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn respond(behavior: Behavior, path: &str) -> Response<BoxBody> {
    let behavior = match behavior {
        Behavior::Gated(gate, inner) => {
            gate.wait().await;
            *inner
        }
        other => other,
    };
    let simple = |status: u16, content_type: &str, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap()
    };
    // Echoing the path lets a test see which rewritten path the gateway sent.
    let ok = || {
        simple(
            200,
            "application/json",
            serde_json::json!({"ok": true, "path": path})
                .to_string()
                .into_bytes(),
        )
    };
    match behavior {
        // CloseWithoutResponse never gets here: its connection is dropped
        // first; a gate inside a gate is not waited for twice.
        Behavior::Ok | Behavior::CloseWithoutResponse | Behavior::Gated(..) => ok(),
        Behavior::Status(status) => simple(
            status,
            "application/json",
            format!("{{\"status\":{status}}}").into_bytes(),
        ),
        Behavior::Delay(delay) => {
            tokio::time::sleep(delay).await;
            ok()
        }
        Behavior::Body {
            status,
            content_type,
            body,
        } => simple(status, &content_type, body),
        Behavior::BodyWithHeaders {
            status,
            headers,
            body,
        } => {
            let mut response = simple(status, "application/json", body);
            for (name, value) in headers {
                response.headers_mut().insert(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(&value).unwrap(),
                );
            }
            response
        }
        Behavior::Chunks {
            status,
            content_type,
            chunks,
        } => {
            let stream =
                futures_util::stream::unfold(chunks.into_iter(), |mut chunks| async move {
                    let (pause, bytes) = chunks.next()?;
                    tokio::time::sleep(pause).await;
                    Some((Ok::<_, Infallible>(Frame::data(Bytes::from(bytes))), chunks))
                });
            Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
        Behavior::Stream {
            status,
            content_type,
            steps,
        } => {
            let stream = futures_util::stream::unfold(steps.into_iter(), |mut steps| async move {
                loop {
                    match steps.next()? {
                        Step::Data(bytes) => {
                            return Some((
                                Ok::<_, Infallible>(Frame::data(Bytes::from(bytes))),
                                steps,
                            ))
                        }
                        Step::Pause(pause) => tokio::time::sleep(pause).await,
                        Step::Wait(gate) => gate.wait().await,
                    }
                }
            });
            Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
    }
}

/// An address on 127.0.0.1 where nothing listens.
pub async fn unused_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// The support module only exists in the test binary, so no #[cfg(test)].
mod tests {
    use super::*;
    use crate::support::http::{h2c_get, raw_exchange_until_closed, TestClient};

    #[tokio::test]
    async fn records_method_path_headers_and_body_in_order() {
        let upstream = RecordingUpstream::start().await;
        let client = TestClient::new();
        let response = client
            .get(
                &format!("{}/v1/things?x=1&y=%2F", upstream.url()),
                &[("X-Dup", "one"), ("x-dup", "two"), ("X-Single", "s")],
            )
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.json(),
            serde_json::json!({"ok": true, "path": "/v1/things"})
        );
        assert_eq!(response.header("content-type"), Some("application/json"));

        client
            .post(&format!("{}/v1/post", upstream.url()), &[], "hello body")
            .await;
        client
            .put_json(
                &format!("{}/v1/put", upstream.url()),
                &[],
                serde_json::json!({"a": 1}),
            )
            .await;
        client
            .delete(&format!("{}/v1/gone", upstream.url()), &[])
            .await;

        let seen = upstream.requests();
        assert_eq!(upstream.count(), 4);
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].uri, "/v1/things?x=1&y=%2F");
        assert_eq!(seen[0].version, http::Version::HTTP_11);
        assert_eq!(seen[0].header_all("x-dup"), vec!["one", "two"]);
        assert_eq!(seen[0].header("x-dup"), Some("one"));
        assert_eq!(seen[0].header("x-single"), Some("s"));
        assert_eq!(
            seen[0].header("host"),
            Some(upstream.addr().to_string().as_str())
        );
        assert!(seen[0].body.is_empty());

        assert_eq!(seen[1].method, "POST");
        assert_eq!(seen[1].body, b"hello body");
        assert_eq!(seen[1].header("content-length"), Some("10"));

        assert_eq!(seen[2].method, "PUT");
        assert_eq!(seen[2].header("content-type"), Some("application/json"));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&seen[2].body).unwrap(),
            serde_json::json!({"a": 1})
        );

        assert_eq!(seen[3].method, "DELETE");
        assert_eq!(seen[3].uri, "/v1/gone");
        assert!(seen
            .windows(2)
            .all(|w| w[0].received_at <= w[1].received_at));
        assert!(upstream.connections() >= 1);

        upstream.clear();
        assert_eq!(upstream.count(), 0);
        assert!(upstream.requests().is_empty());
    }

    #[tokio::test]
    async fn serves_h2c_prior_knowledge_on_its_own_connection() {
        let upstream = RecordingUpstream::start().await;
        let before = upstream.connections();
        let response = h2c_get(
            &format!("{}/h2/path?q=1", upstream.url()),
            &[("x-h2", "yes")],
        )
        .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["path"], "/h2/path");
        let seen = upstream.wait_for(1, crate::support::http::GENEROUS).await;
        assert_eq!(seen[0].version, http::Version::HTTP_2);
        assert_eq!(seen[0].uri, "/h2/path?q=1");
        assert_eq!(seen[0].header("x-h2"), Some("yes"));
        assert_eq!(upstream.connections(), before + 1);
    }

    #[tokio::test]
    async fn raw_exchange_reads_until_the_server_closes() {
        let upstream = RecordingUpstream::start().await;
        // Fails if the connection is left open instead of closed.
        let raw = raw_exchange_until_closed(
            upstream.addr(),
            b"GET /raw HTTP/1.1\r\nHost: upstream\r\nConnection: close\r\n\r\n",
        )
        .await;
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("\"path\":\"/raw\""), "{text}");
        assert_eq!(upstream.requests()[0].header("host"), Some("upstream"));
    }

    #[tokio::test]
    async fn status_default_and_prefix_behaviors() {
        let upstream = RecordingUpstream::start().await;
        let client = TestClient::new();
        upstream.set_behavior(Behavior::Status(503));
        upstream.set_behavior_for("/special", Behavior::Status(418));
        upstream.set_behavior_for(
            "/body",
            Behavior::Body {
                status: 201,
                content_type: "text/plain".into(),
                body: b"made".to_vec(),
            },
        );

        let plain = client.get(&format!("{}/x", upstream.url()), &[]).await;
        assert_eq!(plain.status, 503);
        assert_eq!(plain.json()["status"], 503);
        let special = client
            .get(&format!("{}/special/y", upstream.url()), &[])
            .await;
        assert_eq!(special.status, 418);
        let body = client.get(&format!("{}/body", upstream.url()), &[]).await;
        assert_eq!(body.status, 201);
        assert_eq!(body.header("content-type"), Some("text/plain"));
        assert_eq!(body.text(), "made");

        // A later setting for the same prefix replaces the earlier one.
        upstream.set_behavior_for("/special", Behavior::Ok);
        let special = client
            .get(&format!("{}/special/y", upstream.url()), &[])
            .await;
        assert_eq!(special.status, 200);
        assert_eq!(special.json()["path"], "/special/y");
        // Every answer, error or not, was recorded.
        assert_eq!(upstream.count(), 4);
    }

    #[tokio::test]
    async fn delay_is_recorded_before_the_answer() {
        let upstream = RecordingUpstream::start().await;
        let delay = Duration::from_millis(300);
        upstream.set_behavior(Behavior::Delay(delay));
        let started = Instant::now();
        let response = TestClient::new()
            .get(&format!("{}/slow", upstream.url()), &[])
            .await;
        let answered = Instant::now();
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["path"], "/slow");
        assert!(answered - started >= delay);
        let received_at = upstream.requests()[0].received_at;
        assert!(received_at + delay <= answered);
    }

    /// A bare HTTP/1 connection, so a test sees when each body chunk arrives
    /// (TestClient buffers whole bodies).
    async fn stream_get(
        upstream: &RecordingUpstream,
        path: &str,
    ) -> hyper::Response<hyper::body::Incoming> {
        let stream = tokio::net::TcpStream::connect(upstream.addr())
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::get(path)
            .header("host", upstream.addr().to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        sender.send_request(request).await.unwrap()
    }

    #[tokio::test]
    async fn chunks_stream_in_order_after_their_pauses() {
        let upstream = RecordingUpstream::start().await;
        upstream.set_behavior(Behavior::Chunks {
            status: 200,
            content_type: "text/event-stream".into(),
            chunks: vec![
                (Duration::ZERO, b"data: a\n\n".to_vec()),
                (Duration::from_millis(200), b"data: b\n\n".to_vec()),
                (Duration::from_millis(200), b"data: c\n\n".to_vec()),
            ],
        });
        let response = stream_get(&upstream, "/stream").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let done = Instant::now();
        assert_eq!(&body[..], b"data: a\n\ndata: b\n\ndata: c\n\n");
        // A lower bound only: load can delay the stream, never hasten it.
        let received_at = upstream.requests()[0].received_at;
        assert!(
            done - received_at >= Duration::from_millis(400),
            "the pauses were skipped: {:?}",
            done - received_at
        );
    }

    #[tokio::test]
    async fn a_stream_holds_at_its_gate_until_the_test_opens_it() {
        let upstream = RecordingUpstream::start().await;
        let gate = Gate::new();
        upstream.set_behavior(Behavior::Stream {
            status: 200,
            content_type: "text/event-stream".into(),
            steps: vec![
                Step::Data(b"data: first\n\n".to_vec()),
                Step::Wait(gate.clone()),
                Step::Data(b"data: second\n\n".to_vec()),
            ],
        });
        let mut body = stream_get(&upstream, "/gated").await.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"data: first\n\n");
        // Nothing more comes while the gate is shut (a short look suffices:
        // a wrong answer here would be data, which cannot arrive late).
        let early = tokio::time::timeout(Duration::from_millis(100), body.frame()).await;
        assert!(early.is_err(), "data passed a shut gate: {early:?}");
        gate.open();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"data: second\n\n");
    }

    #[tokio::test]
    async fn a_gated_answer_waits_for_its_gate_and_records_its_status() {
        let upstream = RecordingUpstream::start().await;
        let gate = Gate::new();
        upstream.set_behavior(Behavior::Gated(
            gate.clone(),
            Box::new(Behavior::Status(418)),
        ));
        let client = TestClient::new();
        let url = format!("{}/held", upstream.url());
        let answer = tokio::spawn(async move { client.get(&url, &[]).await });
        upstream.wait_for(1, crate::support::http::GENEROUS).await;
        assert!(!answer.is_finished(), "answered before the gate opened");
        gate.open();
        assert_eq!(answer.await.unwrap().status, 418);
        assert_eq!(upstream.requests()[0].status, Some(418));
        assert_eq!(upstream.requests()[0].request_id(), "");
        assert_eq!(upstream.requests()[0].path(), "/held");
    }

    #[tokio::test]
    async fn close_without_response_is_a_transport_error() {
        let upstream = RecordingUpstream::start().await;
        upstream.set_behavior_for("/drop", Behavior::CloseWithoutResponse);
        let client = TestClient::new();
        let request = http::Request::post(format!("{}/drop", upstream.url()))
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), client.try_send(request))
            .await
            .expect("the connection was dropped, not left hanging");
        assert!(outcome.is_err(), "{outcome:?}");
        let seen = upstream.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].body, b"payload");
        // Other paths on the same upstream still answer.
        let ok = client.get(&format!("{}/fine", upstream.url()), &[]).await;
        assert_eq!(ok.status, 200);
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_is_counted_not_recorded() {
        let upstream = RecordingUpstream::start().await;
        {
            use tokio::io::AsyncWriteExt;
            let mut stream = tokio::net::TcpStream::connect(upstream.addr())
                .await
                .unwrap();
            stream
                .write_all(b"POST /cut HTTP/1.1\r\nHost: u\r\nContent-Length: 100\r\n\r\npartial")
                .await
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while upstream.aborted() == 0 {
            assert!(
                Instant::now() < deadline,
                "the broken body was never noticed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(upstream.count(), 0, "not received whole");
        assert_eq!(upstream.reached(), 1, "but it did reach the upstream");
        assert!(upstream.requests().is_empty());
    }

    #[tokio::test]
    async fn unused_addr_refuses_and_a_dropped_upstream_stops_listening() {
        let nowhere = unused_addr().await;
        assert!(nowhere.ip().is_loopback());
        assert!(tokio::net::TcpStream::connect(nowhere).await.is_err());

        let upstream = RecordingUpstream::start().await;
        let addr = upstream.addr();
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
        drop(upstream);
        // Aborting is asynchronous: the listener closes once the task is
        // next scheduled.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still listening after drop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
