//! One connection from accept to close: the TLS handshake, hyper (HTTP/1.1
//! or HTTP/2), and the timer that closes it when the watchdog says so.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::activity::Activity;
use super::io::ObservedIo;
use super::request::{RequestGuard, TrackedBody};
use super::watchdog::{later, Action, CloseReason, Timeouts, Watchdog};
use super::Plane;
use crate::proxy::ConnInfo;
use crate::state::Gateway;

/// What every connection of one listener shares.
pub(super) struct Listener {
    pub plane: Plane,
    pub gateway: Arc<Gateway>,
    pub tls: Option<TlsAcceptor>,
    pub builder: auto::Builder<TokioExecutor>,
    pub timeouts: Timeouts,
}

impl Listener {
    fn closed_by(&self, reason: CloseReason) {
        self.gateway
            .metrics
            .connection_closed_by(self.plane == Plane::Admin, reason.label());
    }
}

/// Serves one accepted connection until it ends, a timer closes it, or the
/// drain (a value sent on `drain`) has shut it down.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: &Listener,
    mut drain: watch::Receiver<()>,
) {
    let activity = Arc::new(Activity::new(Instant::now()));
    let conn = ConnInfo {
        peer,
        tls: listener.tls.is_some(),
    };
    let Some(acceptor) = &listener.tls else {
        return drive(stream, conn, activity, listener, drain).await;
    };
    // The handshake counts against the header deadline: a client that
    // stalls in TLS is dropped like one that stalls in HTTP.
    let deadline = later(activity.accepted(), listener.timeouts.header_read);
    tokio::select! {
        handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => match handshake {
            Ok(Ok(tls)) => drive(tls, conn, activity, listener, drain).await,
            Ok(Err(error)) => tracing::debug!(%peer, "tls handshake failed: {error}"),
            Err(_) => {
                tracing::debug!(%peer, "tls handshake timed out");
                listener.closed_by(CloseReason::HeaderTimeout);
            }
        },
        _ = drain.changed() => {}
    }
}

async fn drive<I>(
    io: I,
    conn: ConnInfo,
    activity: Arc<Activity>,
    listener: &Listener,
    mut drain: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let activity = activity.clone();
        let gateway = listener.gateway.clone();
        let plane = listener.plane;
        service_fn(move |request| {
            // hyper calls the service once the head is complete; the guard
            // then travels with the response body to its end.
            let guard = RequestGuard::start(&activity);
            let gateway = gateway.clone();
            async move {
                let response = match plane {
                    Plane::Data => crate::proxy::handle(gateway, request, conn).await,
                    Plane::Admin => crate::api::admin::handle(gateway, request).await,
                };
                Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, guard)))
            }
        })
    };
    let io = TokioIo::new(ObservedIo::new(io, activity.clone()));
    let connection = listener.builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut watchdog = Watchdog::new(listener.timeouts);
    let timer = tokio::time::sleep_until(watchdog.first_check(&activity));
    tokio::pin!(timer);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = %conn.peer, "connection ended with an error: {error}");
                }
                return;
            }
            () = timer.as_mut() => match watchdog.check(&activity, Instant::now()) {
                Action::WaitUntil(at) => timer.as_mut().reset(at),
                Action::GoAway(reason, at) => {
                    tracing::debug!(peer = %conn.peer, reason = reason.label(), "shutting an idle connection down");
                    listener.closed_by(reason);
                    connection.as_mut().graceful_shutdown();
                    timer.as_mut().reset(at);
                }
                Action::Close(reason) => {
                    if let Some(reason) = reason {
                        tracing::debug!(peer = %conn.peer, reason = reason.label(), "closing the connection");
                        listener.closed_by(reason);
                    }
                    // Dropping the connection closes the socket and drops
                    // every request future and response body on it.
                    return;
                }
            },
            _ = drain.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
                watchdog.going_away(Instant::now());
                timer.as_mut().reset(Instant::now());
            }
        }
    }
}
