//! One plane's connections to one upstream: HTTP/1.1 connections kept
//! alive between requests, or one multiplexed HTTP/2 connection when TLS
//! negotiates `h2` (ALPN offers `h2` and `http/1.1`).
//!
//! Each data-plane worker has its own pool per upstream (the upstream
//! clients belong to the worker's snapshot), so a request never waits for,
//! or wakes, another core. The pool's lock is only ever taken by its
//! worker's thread — it is never contended — and held for a push or a pop.
//!
//! * An HTTP/1 connection is taken out for one request and put back when
//!   the response body has been read to its end ([`PooledBody`]); a body
//!   dropped before its end takes its connection with it.
//! * Idle connections are dropped after [`IDLE_TIMEOUT`], below the
//!   keep-alive of common upstreams, so a request rarely picks a connection
//!   the upstream is closing (hyper #2136). If it does, and hyper hands the
//!   request back unsent, it goes out on another connection; a request that
//!   was (even partly) sent is never replayed.
//! * No connection is made before a request needs one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::body::Body;

/// Idle connections are closed after this long (common upstream
/// keep-alives are 5 s and more).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle HTTP/1 connections kept per upstream and worker at most.
const MAX_IDLE: usize = 512;

pub type Connector = HttpsConnector<HttpConnector>;

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

pub struct Pool {
    connector: Connector,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Oldest first; taken from the back (the most recently used, whose
    /// upstream is least likely to be closing it).
    idle: VecDeque<Idle>,
    h2: Option<http2::SendRequest<Body>>,
    reaper: bool,
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

enum Conn {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Pool {
    pub fn new(connector: Connector) -> Pool {
        Pool {
            connector,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `request` (absolute URI) on a pooled connection or a new one
    /// and waits for the response head.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let (conn, fresh) = match self.checkout() {
                Some(conn) => (conn, false),
                None => (self.connect(request.uri()).await?, true),
            };
            match conn {
                Conn::H2(mut sender) => {
                    let response = sender.send_request(request).await?;
                    return Ok(response.map(|body| PooledBody::new(body, None)));
                }
                Conn::H1(mut sender) => {
                    if let Err(error) = sender.ready().await {
                        if fresh {
                            return Err(error.into());
                        }
                        continue;
                    }
                    *request.uri_mut() = origin_form(request.uri());
                    match sender.try_send_request(request).await {
                        Ok(response) => {
                            let back = Some((Arc::downgrade(self), sender));
                            return Ok(response.map(|body| PooledBody::new(body, back)));
                        }
                        Err(mut unsent) => match unsent.take_message() {
                            // Nothing of it was written: another pooled
                            // connection may take it.
                            Some(returned) if !fresh => request = returned,
                            _ => return Err(unsent.into_error().into()),
                        },
                    }
                }
            }
        }
    }

    fn checkout(&self) -> Option<Conn> {
        let mut state = self.state();
        if let Some(h2) = &state.h2 {
            if !h2.is_closed() {
                return Some(Conn::H2(h2.clone()));
            }
            state.h2 = None;
        }
        let now = Instant::now();
        expire(&mut state.idle, now);
        while let Some(idle) = state.idle.pop_back() {
            if !idle.sender.is_closed() {
                return Some(Conn::H1(idle.sender));
            }
        }
        None
    }

    fn put_back(self: &Arc<Self>, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut state = self.state();
        let now = Instant::now();
        expire(&mut state.idle, now);
        if state.idle.len() >= MAX_IDLE {
            return;
        }
        state.idle.push_back(Idle { sender, since: now });
        if !state.reaper {
            state.reaper = true;
            drop(state);
            self.start_reaper();
        }
    }

    /// Closes idle connections past their time while no request comes to
    /// do it; ends with the pool.
    fn start_reaper(self: &Arc<Self>) {
        let pool: Weak<Pool> = Arc::downgrade(self);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(IDLE_TIMEOUT);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                expire(&mut pool.state().idle, Instant::now());
            }
        });
    }

    async fn connect(&self, uri: &Uri) -> Result<Conn, SendError> {
        let io = self
            .connector
            .clone()
            .call(uri.clone())
            .await
            .map_err(|e| SendError::Connect(super::describe(e.as_ref())))?;
        if io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(connection);
            let mut state = self.state();
            if state.h2.as_ref().is_none_or(|h2| h2.is_closed()) {
                state.h2 = Some(sender.clone());
            }
            Ok(Conn::H2(sender))
        } else {
            let (sender, connection) = http1::handshake(io).await?;
            tokio::spawn(connection);
            Ok(Conn::H1(sender))
        }
    }
}

fn expire(idle: &mut VecDeque<Idle>, now: Instant) {
    while idle
        .front()
        .is_some_and(|oldest| now.duration_since(oldest.since) >= IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
}

/// HTTP/1 sends the origin form (`/path?query`); the authority travels in
/// `Host`.
fn origin_form(uri: &Uri) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = uri.path_and_query().cloned();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// An upstream response body that puts its HTTP/1 connection back in the
/// pool once read to its end.
pub struct PooledBody {
    inner: Incoming,
    back: Option<(Weak<Pool>, http1::SendRequest<Body>)>,
}

impl PooledBody {
    fn new(inner: Incoming, back: Option<(Weak<Pool>, http1::SendRequest<Body>)>) -> PooledBody {
        let mut body = PooledBody { inner, back };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((pool, sender)) = self.back.take() {
            if let Some(pool) = pool.upgrade() {
                pool.put_back(sender);
            }
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // A broken body leaves its connection unusable: it goes with it.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use hyper_util::server::conn::auto;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;

    /// A TLS vendor on loopback that offers only `alpn`, answers with the
    /// HTTP version it saw, and counts the connections it accepted.
    async fn tls_vendor(alpn: &[u8]) -> (u16, CertificateDer<'static>, Arc<AtomicUsize>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = certified.cert.der().clone();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        config.alpn_protocols = vec![alpn.to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let version = format!("{:?}", request.version());
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from(version),
                        )))
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (port, cert, accepted)
    }

    fn pool_trusting(root: CertificateDer<'static>) -> Arc<Pool> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Arc::new(Pool::new(connector))
    }

    async fn get(pool: &Arc<Pool>, port: u16) -> String {
        let request = Request::get(format!("https://localhost:{port}/v1/x"))
            .header(http::header::HOST, format!("localhost:{port}"))
            .body(crate::body::empty())
            .unwrap();
        let response = pool.send(request).await.expect("response");
        let body = response.into_body().collect().await.expect("body");
        String::from_utf8(body.to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn https_upstreams_speak_what_alpn_negotiates_and_keep_one_connection() {
        for (alpn, version) in [(&b"h2"[..], "HTTP/2.0"), (&b"http/1.1"[..], "HTTP/1.1")] {
            let (port, cert, accepted) = tls_vendor(alpn).await;
            let pool = pool_trusting(cert);
            for _ in 0..3 {
                assert_eq!(get(&pool, port).await, version);
            }
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                1,
                "{version}: one kept-alive connection for requests in turn"
            );
        }
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_takes_its_connection_with_it() {
        let (port, cert, accepted) = tls_vendor(b"http/1.1").await;
        let pool = pool_trusting(cert);
        let request = Request::get(format!("https://localhost:{port}/v1/x"))
            .header(http::header::HOST, format!("localhost:{port}"))
            .body(crate::body::empty())
            .unwrap();
        let response = pool.send(request).await.expect("response");
        drop(response);
        assert_eq!(get(&pool, port).await, "HTTP/1.1");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn http1_requests_carry_the_origin_form() {
        assert_eq!(
            origin_form(&Uri::from_static("https://v.example/a/b?c=1")),
            "/a/b?c=1"
        );
    }
}
