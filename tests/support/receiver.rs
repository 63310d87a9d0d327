//! A webhook receiver for threshold alerts: a real HTTP server on
//! 127.0.0.1:0 that records every POST and answers 200 — or 500 for the
//! first N, or while told to fail, or never (hangs) while told to hang.
//! [`verify`] checks a delivery's signature the way docs/alerts.md tells
//! receivers to, with the `openssl` command line (not the gateway's code).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use super::wait::wait_until;

#[derive(Debug, Clone)]
pub struct Delivery {
    pub content_type: Option<String>,
    pub signature: Option<String>,
    pub body: String,
    /// What the receiver answered (0: it hung up without answering).
    pub status: u16,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("alert body is JSON")
    }

    pub fn event_id(&self) -> String {
        self.json()["event_id"]
            .as_str()
            .expect("event_id")
            .to_owned()
    }
}

#[derive(Default)]
struct State {
    deliveries: Vec<Delivery>,
    fail_next: usize,
    failing: bool,
    hanging: bool,
}

pub struct AlertReceiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AlertReceiver {
    pub async fn start() -> AlertReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, request).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        AlertReceiver { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/credits", self.addr)
    }

    /// Answers 500 to the next `n` deliveries.
    pub fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }

    /// Answers 500 until told otherwise.
    pub fn set_failing(&self, failing: bool) {
        self.state.lock().unwrap().failing = failing;
    }

    /// Never answers (until told otherwise).
    pub fn set_hanging(&self, hanging: bool) {
        self.state.lock().unwrap().hanging = hanging;
    }

    /// Every delivery attempt that reached the receiver, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().deliveries.clone()
    }

    /// The attempts the receiver answered 2xx.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.status == 200)
            .collect()
    }

    /// Waits until `n` deliveries were accepted; returns them.
    pub async fn wait_accepted(&self, n: usize) -> Vec<Delivery> {
        wait_until(&format!("{n} accepted alert deliveries"), async || {
            let accepted = self.accepted();
            if accepted.len() >= n {
                Ok(accepted)
            } else {
                Err(format!("{:?}", self.deliveries()))
            }
        })
        .await
    }
}

async fn answer(
    state: &Mutex<State>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, signature) = (header("content-type"), header("x-creditgate-signature"));
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let (status, hang) = {
        let mut state = state.lock().unwrap();
        let status = if state.hanging {
            0
        } else if state.fail_next > 0 {
            state.fail_next -= 1;
            500
        } else if state.failing {
            500
        } else {
            200
        };
        state.deliveries.push(Delivery {
            content_type,
            signature,
            body,
            status,
        });
        (status, state.hanging)
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    response
}

/// Checks the delivery as a receiver should: `Content-Type`, then
/// `X-Creditgate-Signature: t=…,v1=…` against HMAC-SHA256 of `t.body` with
/// the secret (computed by `openssl dgst`). Returns the body's JSON.
pub fn verify(secret: &str, delivery: &Delivery) -> serde_json::Value {
    assert_eq!(
        delivery.content_type.as_deref(),
        Some("application/json"),
        "{delivery:?}"
    );
    let header = delivery.signature.as_deref().expect("signature header");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header {header:?}"));
    let t: i64 = t.parse().expect("t is unix seconds");
    let now = chrono::Utc::now().timestamp();
    assert!((now - t).abs() < 600, "t={t} is not now ({now})");
    let expected = openssl_hmac(secret, &format!("{t}.{}", delivery.body));
    assert_eq!(v1, expected, "signature of {:?}", delivery.body);
    assert_ne!(
        v1,
        openssl_hmac("another secret", &format!("{t}.{}", delivery.body)),
        "the signature depends on the secret"
    );
    delivery.json()
}

fn openssl_hmac(secret: &str, message: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret, "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let output = child.wait_with_output().expect("openssl output");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}
