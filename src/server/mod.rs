//! Listeners: accept loop, optional TLS (rustls, ALPN h2 + http/1.1),
//! HTTP/1.1 and HTTP/2 (TLS or cleartext prior knowledge) through
//! hyper-util's auto builder, the timers that keep connections from
//! outliving their use, and a graceful drain on shutdown.
//!
//! ## Layout
//! - `accept`: the accept loop, the connection cap, the drain.
//! - `connection`: one connection from accept to close (TLS handshake,
//!   hyper, its timer).
//! - `activity`: what a connection is doing, reported by the parts that
//!   see it: `io` (reads, blocked writes, the HTTP/2 handshake) and
//!   `request` (requests in flight, responses waiting for the client).
//! - `watchdog`: from that activity, when the connection is closed and why.
//! - `tls`: the rustls acceptor.
//!
//! ## Connection timers (both listeners; see `docs/operations.md`)
//! hyper alone leaves gaps: its HTTP/1 `header_read_timeout` starts only
//! once it parses a head, so a connection that sends nothing, or that
//! hyper-util's auto builder is still sniffing for the HTTP/2 preface (it
//! waits for 24 bytes), is never timed; HTTP/2 has no idle timeout; and
//! nothing notices a client that stops reading. So each connection gets one
//! timer, owned by its task, and a watchdog that decides:
//!
//! - **header_read_timeout**, counted from accept: the first HTTP/1 request
//!   head must be complete, or the HTTP/2 preface and the client's first
//!   SETTINGS frame must have arrived; the TLS handshake counts against it.
//!   A later HTTP/1 head gets as long from its first byte.
//! - **idle_timeout**: a connection with no request in progress (HTTP/1
//!   keep-alive, HTTP/2 without open streams) is shut down gracefully —
//!   HTTP/2 with a GOAWAY — and closed outright if the client has not
//!   closed it `header_read_timeout` later.
//! - **write stalled**: a response the client stops taking for
//!   `idle_timeout` (socket writes blocked, or an HTTP/2 flow-control window
//!   kept shut) has its connection dropped. Dropping it drops the request
//!   futures, whose guards settle the money.
//!
//! Each timer that acts is counted in
//! `creditgate_connections_closed_total{listener, reason}`.
//!
//! The timer is re-armed lazily: it sleeps until the earliest deadline the
//! activity allows and, when it fires, re-reads the activity. Requests and
//! I/O only update a few atomics; no timer is armed per request.
//!
//! ## HTTP/1 line endings
//! A bare LF ends a line in a request head (RFC 9112 §2.2; hyper's parser
//! does so for every line, framing headers included), so the gateway frames
//! a request by the same lines it forwards, and forwarded heads are written
//! anew with CRLF. Refusing bare LFs would take a second parser in front of
//! hyper's — two parsers that may disagree on framing are what smuggling
//! feeds on. The reasoning and its tests: "HTTP/1 line endings" in
//! `docs/operations.md`, `tests/hardening/line_endings.rs`.

mod accept;
mod activity;
mod connection;
mod io;
mod request;
mod tls;
mod watchdog;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

pub use accept::serve;
pub use tls::tls_acceptor;

/// Which service a listener runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Data,
    Admin,
}

#[derive(Clone)]
pub struct ServerOptions {
    pub plane: Plane,
    pub tls: Option<TlsAcceptor>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// The listener address's connection cap, shared by every worker
    /// that accepts on it.
    pub connection_slots: Arc<Semaphore>,
}
