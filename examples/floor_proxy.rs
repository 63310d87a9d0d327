//! The floor for the benchmark: the least a hyper 1.x reverse proxy can
//! do per request on this design — one thread per core, each with a
//! `current_thread` runtime and an `SO_REUSEPORT` listener of its own, one
//! upstream HTTP/1 connection per client connection, nothing else (no
//! authentication, no header hygiene, no metrics, no log). `bench/run.sh`
//! runs it beside the gateway, so the gateway's own cost per request is the
//! difference between the two in the same run.
//!
//! Given a Redis URL and the debit script, it is the floor of the priced
//! route too: before forwarding, one `EVALSHA` of the gateway's debit script
//! per request on the worker's own multiplexed connection, exactly the call
//! the nginx + Lua peer makes (account = the bearer token, no key lookup, no
//! refund path, no record).
//!
//! `cargo run --release --example floor_proxy -- 127.0.0.1:9100 127.0.0.1:9000 2 [redis://127.0.0.1:6379 debit.lua]`

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use http::header::HOST;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9100".into())
        .parse()
        .map_err(|e| invalid(format!("listen address: {e}")))?;
    let upstream: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9000".into())
        .parse()
        .map_err(|e| invalid(format!("upstream address: {e}")))?;
    let workers: usize = args
        .next()
        .map(|n| n.parse().map_err(|e| invalid(format!("workers: {e}"))))
        .transpose()?
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let debit = match (args.next(), args.next()) {
        (Some(url), Some(script)) => Some((url, std::fs::read_to_string(script)?)),
        _ => None,
    };
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let debit = debit.clone();
            std::thread::spawn(move || worker(listen, upstream, debit))
        })
        .collect();
    eprintln!("floor proxy on {listen} -> {upstream}, {workers} workers");
    for thread in threads {
        thread
            .join()
            .map_err(|_| invalid("a worker panicked".into()))??;
    }
    Ok(())
}

fn worker(
    listen: SocketAddr,
    upstream: SocketAddr,
    debit: Option<(String, String)>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(listen)?;
        let listener = socket.listen(1024)?;
        let ledger = match debit {
            Some((url, script)) => {
                let client = redis::Client::open(url).map_err(std::io::Error::other)?;
                let connection = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(std::io::Error::other)?;
                Some(Rc::new((connection, redis::Script::new(&script))))
            }
            None => None,
        };
        loop {
            let ledger = ledger.clone();
            let (client, _) = listener.accept().await?;
            let _ = client.set_nodelay(true);
            tokio::task::spawn_local(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = server.set_nodelay(true);
                let Ok((sender, connection)) =
                    hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(server))
                        .await
                else {
                    return;
                };
                tokio::task::spawn_local(connection);
                // HTTP/1: one request at a time per client connection, so
                // one upstream connection serves them all in turn.
                let sender = Rc::new(RefCell::new(sender));
                let host = HeaderValue::from_str(&upstream.to_string()).expect("address");
                let service = service_fn(move |mut request: Request<Incoming>| {
                    let sender = sender.clone();
                    let host = host.clone();
                    let ledger = ledger.clone();
                    async move {
                        if let Some(ledger) = ledger {
                            if !debit_one(&ledger, &request).await {
                                let mut refused = Response::new(Empty::new());
                                *refused.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                                return Ok(refused
                                    .map(|body| body.map_err(|never| match never {}).boxed()));
                            }
                        }
                        let path = request.uri().path_and_query().map(|p| p.as_str());
                        if let Ok(uri) = Uri::try_from(path.unwrap_or("/")) {
                            *request.uri_mut() = uri;
                        }
                        request.headers_mut().insert(HOST, host);
                        std::future::poll_fn(|cx| sender.borrow_mut().poll_ready(cx)).await?;
                        let response = sender.borrow_mut().send_request(request);
                        Ok::<_, hyper::Error>(response.await?.map(|body| body.boxed()))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(client), service)
                    .await;
            });
        }
    })
}

/// One debit of cost 1 for the account named by the bearer token, as the
/// nginx + Lua peer runs it (window, retention, plan table, then the debit).
async fn debit_one(
    ledger: &(redis::aio::MultiplexedConnection, redis::Script),
    request: &Request<Incoming>,
) -> bool {
    let (connection, script) = ledger;
    let account = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    let prefix = format!("cg:{{{account}}}:");
    let id = |bytes: [u8; 8]| [&[2u8][..], &bytes[..]].concat();
    let reply: redis::RedisResult<String> = script
        .key(format!("{prefix}a"))
        .key(format!("{prefix}w"))
        .key(format!("{prefix}i"))
        .key(format!("{prefix}u"))
        .key(format!("{prefix}g"))
        .key(format!("{prefix}q"))
        .arg(2_592_000_000u64)
        .arg(7_776_000_000u64)
        .arg(1)
        .arg("bench")
        .arg(1_000_000_000u64)
        .arg("")
        .arg(1)
        .arg(id(rand::random()))
        .arg(id(rand::random()))
        .arg("")
        .arg("priced")
        .arg(0)
        .arg("")
        .invoke_async(&mut connection.clone())
        .await;
    reply.is_ok_and(|reply| reply.starts_with('A'))
}
