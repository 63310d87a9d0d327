//! The accept loop of one listener: the connection cap, one task per
//! connection, and the drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection::{self, Listener};
use super::watchdog::Timeouts;
use super::{Plane, ServerOptions};
use crate::state::Gateway;

/// Serves `listener` until `shutdown` turns true, then stops accepting,
/// shuts every connection down gracefully and waits up to the drain timeout
/// for them to finish.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    options: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::new(Listener {
        plane: options.plane,
        gateway,
        builder: builder(&options),
        tls: options.tls.clone(),
        timeouts: Timeouts {
            header_read: options.header_read_timeout,
            idle: options.idle_timeout,
        },
    });
    let admin = options.plane == Plane::Admin;
    // Every connection task holds a receiver: a value sent starts the
    // drain, and the channel closes once the last connection has ended.
    let (drain, _) = watch::channel(());
    let slots = options.connection_slots.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Over the cap, a connection is closed before it costs
                    // anything more than the accept (and counted).
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::debug!(plane = ?options.plane, %peer, "connection limit reached; closing");
                        shared.gateway.metrics.connection_closed_by(admin, "connection_limit");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let drain = drain.subscribe();
                    tokio::spawn(async move {
                        shared.gateway.metrics.connection_opened(admin);
                        connection::serve(stream, peer, &shared, drain).await;
                        shared.gateway.metrics.connection_closed(admin);
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
    let _ = drain.send(());
    if tokio::time::timeout(options.drain_timeout, drain.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            plane = ?options.plane,
            "drain timeout reached; closing the remaining connections"
        );
    }
}

/// HTTP/1.1 and HTTP/2 (cleartext prior knowledge, or TLS with ALPN).
fn builder(options: &ServerOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper answers 431 itself when a head has too many fields or bytes.
    // Its own header timer is off: it restarts as soon as a keep-alive
    // connection is idle, so it would close those after
    // `header_read_timeout` rather than `idle_timeout`. The connection's
    // watchdog times every head instead (see `watchdog.rs`).
    builder
        .http1()
        .header_read_timeout(None)
        .max_headers(options.max_headers)
        .max_buf_size(options.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
