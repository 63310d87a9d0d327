//! Connection timers on real loopback sockets: connections that never
//! start, idle ones, ones whose client stops reading, and the connection
//! cap — each closed by the timer meant for it (and counted in
//! `creditgate_connections_closed_total`) while normal clients are served.
//!
//! Timeouts are short here (header 1 s, idle 2 s); assertions about when a
//! connection closed check that it was not closed before its timeout, and
//! only loosely (timeout + `SLACK`) that it was closed at all.

mod cap;
mod drain;
mod idle;
mod slow_bodies;
mod slow_readers;
mod tls;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::gateway::{config_toml, Setup, TestGateway};

pub const HEADER: Duration = Duration::from_secs(1);
pub const IDLE: Duration = Duration::from_secs(2);
/// Far more than a loaded machine needs to act on a due timer.
pub const SLACK: Duration = Duration::from_secs(8);
/// Timers never fire early; this only absorbs rounding to milliseconds.
pub const EARLY: Duration = Duration::from_millis(20);

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: the rest of a client's HTTP/2 handshake.
pub const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 0x4, 0, 0, 0, 0, 0];
const GOAWAY: u8 = 0x7;

/// The test config with `header_read_timeout` and `idle_timeout` as given,
/// plus `server_extra` lines in `[server]` and `extra` TOML at the end.
pub fn timers_toml(
    upstream_url: &str,
    header: &str,
    idle: &str,
    server_extra: &str,
    extra: &str,
) -> String {
    let mut setup = Setup::new(upstream_url);
    setup.extra = extra;
    let toml = config_toml(&setup);
    let with_timers = toml.replace(
        "header_read_timeout = \"2s\"",
        &format!("header_read_timeout = \"{header}\"\nidle_timeout = \"{idle}\"\n{server_extra}"),
    );
    assert_ne!(
        with_timers, toml,
        "the test config sets header_read_timeout"
    );
    with_timers
}

pub async fn start_gateway(upstream_url: &str) -> TestGateway {
    TestGateway::start_toml(&timers_toml(upstream_url, "1s", "2s", "", "")).await
}

/// How a hostile connection ended, seen from the client.
#[derive(Debug)]
pub struct Held {
    /// From just before the connection attempt (never later than the
    /// gateway's accept) until the gateway closed it (`None`: still open at
    /// the deadline).
    pub closed_after: Option<Duration>,
    pub closed_at: Option<Instant>,
    /// Until the first HTTP/2 GOAWAY frame arrived, if one did.
    pub goaway_after: Option<Duration>,
    pub received: usize,
}

/// Connects, sends `bytes`, then only reads until the gateway closes the
/// connection or `deadline` passes.
pub async fn hold(addr: SocketAddr, bytes: &[u8], deadline: Duration) -> Held {
    let opened = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut frames = FrameScanner::default();
    let mut goaway_after = None;
    let mut received = 0;
    let mut buf = vec![0u8; 16 * 1024];
    let closed_after = tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return opened.elapsed(),
                Ok(n) => {
                    received += n;
                    if bytes.starts_with(H2_PREFACE)
                        && goaway_after.is_none()
                        && frames.feed(&buf[..n]).contains(&GOAWAY)
                    {
                        goaway_after = Some(opened.elapsed());
                    }
                }
            }
        }
    })
    .await
    .ok();
    Held {
        closed_after,
        closed_at: closed_after.map(|after| opened + after),
        goaway_after,
        received,
    }
}

/// Reads (and drops) until the peer closes; returns the time from `since`
/// (`None`: still open `deadline` after the call).
pub async fn wait_closed(
    stream: &mut TcpStream,
    since: Instant,
    deadline: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Finds HTTP/2 frame types in a byte stream that arrives in pieces.
#[derive(Default)]
struct FrameScanner {
    pending: Vec<u8>,
}

impl FrameScanner {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(bytes);
        let mut types = Vec::new();
        while self.pending.len() >= 9 {
            let length = usize::from(self.pending[0]) << 16
                | usize::from(self.pending[1]) << 8
                | usize::from(self.pending[2]);
            if self.pending.len() < 9 + length {
                break;
            }
            types.push(self.pending[3]);
            self.pending.drain(..9 + length);
        }
        types
    }
}

/// Min, median and max.
pub fn spread(durations: &[Duration]) -> Spread {
    let mut sorted = durations.to_vec();
    sorted.sort();
    Spread {
        min: sorted.first().copied().unwrap_or_default(),
        median: sorted.get(sorted.len() / 2).copied().unwrap_or_default(),
        max: sorted.last().copied().unwrap_or_default(),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub min: Duration,
    pub median: Duration,
    pub max: Duration,
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2}/{:.2}/{:.2} s",
            self.min.as_secs_f64(),
            self.median.as_secs_f64(),
            self.max.as_secs_f64()
        )
    }
}

/// `creditgate_connections_closed_total{listener, reason}` in a Prometheus
/// text body (0 when absent).
pub fn closed_count(metrics: &str, listener: &str, reason: &str) -> u64 {
    let series = format!(
        "creditgate_connections_closed_total{{listener=\"{listener}\",reason=\"{reason}\"}} "
    );
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|value| value.trim().parse().expect("counter value"))
        .unwrap_or(0)
}

/// The gateway's metrics, read from its admin listener.
pub async fn metrics(gateway: &TestGateway) -> String {
    let response = gateway
        .client
        .get(&gateway.admin_url("/metrics"), &[])
        .await;
    assert_eq!(response.status, 200);
    response.text()
}

/// Waits (polling the metrics) until `listener`/`reason` reaches `at_least`;
/// returns the time from `since` until it was seen, or panics after
/// `deadline`.
pub async fn wait_for_closed(
    gateway: &TestGateway,
    listener: &str,
    reason: &str,
    at_least: u64,
    since: Instant,
    deadline: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let text = metrics(gateway).await;
        if closed_count(&text, listener, reason) >= at_least {
            return since.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "{listener}/{reason} stayed below {at_least} for {deadline:?}:\n{}",
            text.lines()
                .filter(|l| l.starts_with("creditgate_connections"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
