//! What one connection is doing, written by the parts that see it happen
//! (the IO wrapper, the request guard, the response body) and read by the
//! watchdog that decides when the connection is closed.
//!
//! Everything is an atomic so HTTP/2 streams, which hyper runs as tasks of
//! their own, can report from other threads. Times are milliseconds since
//! the connection was accepted; the hot paths (a read, a write, a response
//! frame) touch a few relaxed atomics and read the clock only on a
//! transition (a write that blocks, the last request of a burst ending).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// No timestamp recorded.
const NONE: u64 = u64::MAX;

/// The protocol a connection speaks, as told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Fewer bytes than it takes to tell have arrived.
    Unknown,
    Http1,
    Http2,
}

#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    protocol: AtomicU8,
    /// The first request head is complete (HTTP/1), or the preface and the
    /// client's first SETTINGS frame have arrived (HTTP/2).
    started: AtomicBool,
    in_flight: AtomicUsize,
    /// When `in_flight` last fell to zero (or the HTTP/2 handshake ended).
    idle_since: AtomicU64,
    /// HTTP/1: when the first byte of the next request head arrived on an
    /// idle connection; cleared when that request starts.
    head_started: AtomicU64,
    /// When a write or flush last returned `Pending` without a write
    /// making progress since.
    write_blocked_since: AtomicU64,
    /// Response bodies that handed hyper a frame and have not been asked
    /// for the next one: the client has not made room for it yet.
    responses_waiting: AtomicUsize,
    /// Bumped whenever a waiting response is taken up (or dropped).
    response_progress: AtomicU64,
}

impl Activity {
    pub fn new(accepted: Instant) -> Activity {
        Activity {
            accepted,
            protocol: AtomicU8::new(Protocol::Unknown as u8),
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            write_blocked_since: AtomicU64::new(NONE),
            responses_waiting: AtomicUsize::new(0),
            response_progress: AtomicU64::new(0),
        }
    }

    pub fn accepted(&self) -> Instant {
        self.accepted
    }

    fn stamp(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn instant(&self, stamp: u64) -> Option<Instant> {
        (stamp != NONE).then(|| self.accepted + Duration::from_millis(stamp))
    }

    // --- Written by the IO wrapper ---

    pub fn set_protocol(&self, protocol: Protocol) {
        self.protocol.store(protocol as u8, Ordering::Relaxed);
    }

    /// The HTTP/2 preface and the client's SETTINGS have arrived.
    pub fn http2_handshake_done(&self) {
        self.idle_since.store(self.stamp(), Ordering::Relaxed);
        self.started.store(true, Ordering::Release);
    }

    /// Bytes arrived. On an idle HTTP/1 connection they begin the next
    /// request head, which then has `header_read_timeout` to complete.
    pub fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
            && self.protocol() == Protocol::Http1
            && self.started()
        {
            self.head_started.store(self.stamp(), Ordering::Relaxed);
        }
    }

    pub fn write_blocked(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) == NONE {
            self.write_blocked_since
                .store(self.stamp(), Ordering::Relaxed);
        }
    }

    pub fn write_progressed(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) != NONE {
            self.write_blocked_since.store(NONE, Ordering::Relaxed);
        }
    }

    // --- Written by the request guard and the response body ---

    pub(super) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if !self.started.load(Ordering::Relaxed) {
            self.started.store(true, Ordering::Release);
        }
        if self.head_started.load(Ordering::Relaxed) != NONE {
            self.head_started.store(NONE, Ordering::Relaxed);
        }
    }

    pub(super) fn request_finished(&self) {
        // Stamped before the count drops, so whoever sees zero in flight
        // also sees when it became zero.
        self.idle_since.store(self.stamp(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Release);
    }

    pub(super) fn response_waiting(&self) {
        self.responses_waiting.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn response_taken(&self) {
        self.response_progress.fetch_add(1, Ordering::Relaxed);
        self.responses_waiting.fetch_sub(1, Ordering::Relaxed);
    }

    // --- Read by the watchdog ---

    pub fn protocol(&self) -> Protocol {
        match self.protocol.load(Ordering::Relaxed) {
            1 => Protocol::Http1,
            2 => Protocol::Http2,
            _ => Protocol::Unknown,
        }
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn idle_since(&self) -> Instant {
        self.instant(self.idle_since.load(Ordering::Relaxed))
            .unwrap_or(self.accepted)
    }

    pub fn head_started(&self) -> Option<Instant> {
        self.instant(self.head_started.load(Ordering::Relaxed))
    }

    pub fn write_blocked_since(&self) -> Option<Instant> {
        self.instant(self.write_blocked_since.load(Ordering::Relaxed))
    }

    pub fn responses_waiting(&self) -> usize {
        self.responses_waiting.load(Ordering::Relaxed)
    }

    pub fn response_progress(&self) -> u64 {
        self.response_progress.load(Ordering::Relaxed)
    }
}
