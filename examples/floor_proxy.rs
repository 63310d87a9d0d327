//! The floor for the benchmark: the least a hyper 1.x reverse proxy can
//! do per request on this design — one thread per core, each with a
//! `current_thread` runtime and an `SO_REUSEPORT` listener of its own, one
//! upstream HTTP/1 connection per client connection, nothing else (no
//! authentication, no header hygiene, no metrics, no log). `bench/run.sh`
//! runs it beside the gateway, so the gateway's own cost per request is the
//! difference between the two in the same run.
//!
//! `cargo run --release --example floor_proxy -- 127.0.0.1:9100 127.0.0.1:9000 2`

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use http::header::HOST;
use http::{HeaderValue, Request, Uri};
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
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(listen, upstream)))
        .collect();
    eprintln!("floor proxy on {listen} -> {upstream}, {workers} workers");
    for thread in threads {
        thread
            .join()
            .map_err(|_| invalid("a worker panicked".into()))??;
    }
    Ok(())
}

fn worker(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
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
        loop {
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
                    async move {
                        let path = request.uri().path_and_query().map(|p| p.as_str());
                        if let Ok(uri) = Uri::try_from(path.unwrap_or("/")) {
                            *request.uri_mut() = uri;
                        }
                        request.headers_mut().insert(HOST, host);
                        std::future::poll_fn(|cx| sender.borrow_mut().poll_ready(cx)).await?;
                        let response = sender.borrow_mut().send_request(request);
                        response.await
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(client), service)
                    .await;
            });
        }
    })
}
