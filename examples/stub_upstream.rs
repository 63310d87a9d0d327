//! A fast stand-in vendor for trying the gateway and for benchmarks: answers
//! every request with `200 {"ok":true}` after draining the body. Under
//! `/v1/agents/` it reports token usage like an AI vendor (`usage.total_tokens`
//! = 2345), as an event stream when the client accepts `text/event-stream`.
//!
//! `cargo run --release --example stub_upstream -- 127.0.0.1:9000`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".to_owned())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("stub upstream listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                let agent = request.uri().path().starts_with("/v1/agents/");
                let stream = request
                    .headers()
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("text/event-stream"));
                let _ = request.into_body().collect().await;
                let (content_type, body): (&str, &'static [u8]) = match (agent, stream) {
                    (false, _) => ("application/json", b"{\"ok\":true}"),
                    (true, false) => (
                        "application/json",
                        b"{\"reply\":\"hello\",\"usage\":{\"total_tokens\":2345}}",
                    ),
                    (true, true) => (
                        "text/event-stream",
                        b"data: {\"delta\":\"hel\"}\n\ndata: {\"delta\":\"lo\"}\n\ndata: {\"usage\":{\"total_tokens\":2345}}\n\ndata: [DONE]\n\n",
                    ),
                };
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", content_type)
                        .body(Full::new(Bytes::from_static(body)))
                        .unwrap_or_default(),
                )
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
