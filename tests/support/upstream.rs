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
}

impl RecordedRequest {
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
    /// Reads the request, then drops the connection without answering.
    CloseWithoutResponse,
}

#[derive(Default)]
struct State {
    requests: Vec<RecordedRequest>,
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

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// Requests whose body broke off before it was complete.
    pub fn aborted(&self) -> usize {
        self.state.lock().unwrap().aborted
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
                "upstream saw {} requests, expected {n}",
                requests.len()
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
                    let behavior = record(&state, request).await;
                    if let Behavior::CloseWithoutResponse = behavior {
                        if let Some(tx) = close_tx.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(respond(behavior).await)
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

async fn record(state: &Mutex<State>, request: Request<hyper::body::Incoming>) -> Behavior {
    let (parts, body) = request.into_parts();
    // A request whose body broke off never reached the vendor as a request:
    // it is counted apart, not recorded.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => {
            state.lock().unwrap().aborted += 1;
            return Behavior::CloseWithoutResponse;
        }
    };
    let path = parts.uri.path().to_owned();
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
    };
    let mut state = state.lock().unwrap();
    state.requests.push(recorded);
    state
        .by_prefix
        .iter()
        .rev()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        .map(|(_, b)| b.clone())
        .or_else(|| state.default.clone())
        .unwrap_or(Behavior::Ok)
        .with_path(path)
}

impl Behavior {
    fn with_path(self, path: String) -> Behavior {
        match self {
            Behavior::Ok => Behavior::Body {
                status: 200,
                content_type: "application/json".into(),
                body: serde_json::json!({"ok": true, "path": path})
                    .to_string()
                    .into_bytes(),
            },
            other => other,
        }
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn respond(behavior: Behavior) -> Response<BoxBody> {
    let simple = |status: u16, content_type: &str, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap()
    };
    match behavior {
        Behavior::Ok | Behavior::CloseWithoutResponse => {
            simple(200, "application/json", b"{\"ok\":true}".to_vec())
        }
        Behavior::Status(status) => simple(
            status,
            "application/json",
            format!("{{\"status\":{status}}}").into_bytes(),
        ),
        Behavior::Delay(delay) => {
            tokio::time::sleep(delay).await;
            simple(200, "application/json", b"{\"ok\":true}".to_vec())
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
    }
}

/// An address on 127.0.0.1 where nothing listens.
pub async fn unused_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
