//! Listeners: accept loop, optional TLS (rustls, ALPN h2 + http/1.1),
//! HTTP/1.1 and HTTP/2 (TLS or cleartext prior knowledge) through
//! hyper-util's auto builder, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::proxy::ConnInfo;
use crate::state::Gateway;

/// Which service a listener runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Data,
    Admin,
}

pub struct ServerOptions {
    pub plane: Plane,
    pub tls: Option<TlsAcceptor>,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub max_connections: usize,
}

/// A rustls acceptor for a PEM certificate chain and private key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("server.tls.cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls.cert {}: no certificate found",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("server.tls.key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `listener` until `shutdown` turns true, then stops accepting and
/// waits up to the drain timeout for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    options: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper answers 431 itself when a head has too many fields or bytes.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_headers(options.max_headers)
        .max_buf_size(options.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    let options = Arc::new(options);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Over the cap, a connection is closed before it costs
                    // anything more than the accept.
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(plane = ?options.plane, %peer, "connection limit reached; closing");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let watcher = graceful.watcher();
                    let builder = builder.clone();
                    let gateway = gateway.clone();
                    let options = options.clone();
                    tokio::spawn(async move {
                        let conn = ConnInfo { peer, tls: options.tls.is_some() };
                        let admin = options.plane == Plane::Admin;
                        gateway.metrics.connection_opened(admin);
                        serve_connection(stream, conn, &builder, watcher, gateway.clone(), &options).await;
                        gateway.metrics.connection_closed(admin);
                        drop(slot);
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            plane = ?options.plane,
            "drain timeout reached; closing the remaining connections"
        );
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    conn: ConnInfo,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    gateway: Arc<Gateway>,
    options: &ServerOptions,
) {
    let plane = options.plane;
    let service = service_fn(move |request| {
        let gateway = gateway.clone();
        async move {
            let response = match plane {
                Plane::Data => crate::proxy::handle(gateway, request, conn).await,
                Plane::Admin => crate::api::admin::handle(gateway, request).await,
            };
            Ok::<_, Infallible>(response)
        }
    });
    let result = match &options.tls {
        None => {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            watcher.watch(connection.into_owned()).await
        }
        Some(acceptor) => {
            // The handshake counts against the header deadline, so a client
            // that stalls in TLS is dropped like one that stalls in HTTP.
            match tokio::time::timeout(options.header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let connection = builder.serve_connection(TokioIo::new(tls), service);
                    watcher.watch(connection.into_owned()).await
                }
                Ok(Err(error)) => {
                    tracing::debug!(peer = %conn.peer, "tls handshake failed: {error}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %conn.peer, "tls handshake timed out");
                    return;
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(peer = %conn.peer, "connection ended with an error: {error}");
    }
}
