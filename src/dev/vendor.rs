//! The demo vendor's listener: always `127.0.0.1` on a port the system picks,
//! serving [`super::reply`] over HTTP/1.1 and HTTP/2 (cleartext). Dropping
//! the [`DemoVendor`] stops it and every open connection.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::reply::{reply, Reply, Seen};
use crate::body::{self, Body};

/// Request bodies over this are answered 413 (the dev gateway's own limit is
/// lower; this only guards the vendor when called directly).
const MAX_BODY: usize = 1024 * 1024;
/// Between two events of a stream, so a terminal shows them arrive one by one.
const EVENT_PAUSE: Duration = Duration::from_millis(40);

/// A running demo vendor; stops when dropped.
pub struct DemoVendor {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DemoVendor {
    /// Listens on `127.0.0.1:0`. There is no way to choose another address:
    /// the demo vendor is for a gateway on the same machine only.
    pub async fn start() -> std::io::Result<DemoVendor> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener));
        Ok(DemoVendor { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for DemoVendor {
    fn drop(&mut self) {
        // The connection tasks live in the loop's JoinSet and go with it.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                connections.spawn(async move {
                    let service = service_fn(|request| async { Ok::<_, Infallible>(answer(request).await) });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn answer(request: Request<Incoming>) -> Response<Body> {
    let (parts, incoming) = request.into_parts();
    let bytes = match Limited::new(incoming, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let mut response = body::json(&serde_json::json!({
                "error": "the body is unreadable or over 1 MiB",
            }));
            *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            return response;
        }
    };
    let seen = Seen {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body: &bytes,
    };
    match reply(&seen) {
        Reply::Json(value) => body::json(&value),
        Reply::Events(events) => event_stream(events),
    }
}

fn event_stream(events: Vec<String>) -> Response<Body> {
    let frames = futures_util::stream::unfold(
        (events.into_iter(), true),
        |(mut events, first)| async move {
            let event = events.next()?;
            if !first {
                tokio::time::sleep(EVENT_PAUSE).await;
            }
            let frame = Frame::data(Bytes::from(format!("data: {event}\n\n")));
            Some((Ok::<_, Infallible>(frame), (events, false)))
        },
    );
    let mut response = Response::new(body::stream(StreamBody::new(frames)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;

    async fn post(url: &str, body: &str) -> (StatusCode, String, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn listens_on_loopback_and_answers_json_and_event_streams() {
        let vendor = DemoVendor::start().await.unwrap();
        assert_eq!(vendor.addr().ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(vendor.addr().port(), 0);

        let (status, content_type, text) = post(
            &format!("{}/v1/images/generate?q=1", vendor.url()),
            r#"{"n":3}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let echo: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(echo["echo"]["body"]["n"], 3);
        assert_eq!(echo["echo"]["query"], "q=1");

        let (status, content_type, text) = post(
            &format!("{}/v1/agents/chat", vendor.url()),
            r#"{"stream":true,"prompt":"a b"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/event-stream");
        let data: Vec<&str> = text
            .split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .collect();
        assert_eq!(data.len(), 4, "{text}");
        assert!(data[2].contains("total_tokens"), "{text}");
        assert_eq!(data[3], "[DONE]");
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused() {
        let vendor = DemoVendor::start().await.unwrap();
        let (status, _, _) = post(&vendor.url(), &"x".repeat(MAX_BODY + 1)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn dropping_it_stops_listening() {
        let vendor = DemoVendor::start().await.unwrap();
        let addr = vendor.addr();
        drop(vendor);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "still listening after drop"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
