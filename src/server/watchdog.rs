//! When a connection is closed, and why: a pure decision from what the
//! connection is doing ([`Activity`]) and the time, so every rule is unit
//! tested without sleeping.
//!
//! The connection keeps one timer and sleeps it until the instant
//! [`Watchdog::check`] names; nothing arms a timer per request. A deadline
//! that moves later (a request started, a write went through) is simply
//! found not to have passed when the timer fires, and the timer is re-armed.
//! A deadline can only move earlier when a request ends, and while requests
//! are in flight the watchdog looks at least every `idle_timeout`, so the
//! idle deadline (`idle_since + idle_timeout`) is never overslept.

use std::time::Duration;

use tokio::time::Instant;

use super::activity::{Activity, Protocol};

/// Durations come from the config without an upper bound: a deadline
/// centuries away is as good as never, and must not overflow.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `at + duration`, with `duration` capped at [`FAR_FUTURE`].
pub fn later(at: Instant, duration: Duration) -> Instant {
    at + duration.min(FAR_FUTURE)
}

/// Why a timer acted on a connection (the `reason` label of
/// `creditgate_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The first request head (HTTP/1), or the HTTP/2 preface and SETTINGS,
    /// did not arrive within `header_read_timeout` of accept; or a later
    /// HTTP/1 head did not complete within it of its first byte.
    HeaderTimeout,
    /// No request in progress for `idle_timeout`.
    IdleTimeout,
    /// A response waited `idle_timeout` for a client that stopped reading.
    WriteStalled,
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::WriteStalled => "write_stalled",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// What the connection does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing is due: look again at this instant.
    WaitUntil(Instant),
    /// Shut down gracefully (HTTP/2: GOAWAY; HTTP/1: close once idle), then
    /// look again at this instant.
    GoAway(CloseReason, Instant),
    /// Drop the connection now: its socket closes and any request futures
    /// on it are dropped. `None` when the reason was already given with an
    /// earlier [`Action::GoAway`] (a client that ignores GOAWAY).
    Close(Option<CloseReason>),
}

#[derive(Debug)]
pub struct Watchdog {
    timeouts: Timeouts,
    /// When the connection was told to go away (by its idle timer, or by the
    /// gateway's drain).
    going_away: Option<Instant>,
    /// The response-progress count seen at the last check, and since when a
    /// response has been waiting without it moving.
    progress_seen: u64,
    waiting_since: Option<Instant>,
}

impl Watchdog {
    pub fn new(timeouts: Timeouts) -> Watchdog {
        Watchdog {
            timeouts,
            going_away: None,
            progress_seen: 0,
            waiting_since: None,
        }
    }

    /// The first instant worth looking at.
    pub fn first_check(&self, activity: &Activity) -> Instant {
        later(activity.accepted(), self.timeouts.header_read)
    }

    /// The gateway is draining: the connection was told to go away at `now`.
    pub fn going_away(&mut self, now: Instant) {
        self.going_away.get_or_insert(now);
    }

    pub fn check(&mut self, activity: &Activity, now: Instant) -> Action {
        let Timeouts { header_read, idle } = self.timeouts;
        if self.going_away.is_some() && !activity.started() {
            // Nothing was asked yet: nothing is lost by closing.
            return Action::Close(None);
        }
        if !activity.started() {
            let deadline = later(activity.accepted(), header_read);
            return if now >= deadline {
                Action::Close(Some(CloseReason::HeaderTimeout))
            } else {
                Action::WaitUntil(deadline)
            };
        }
        let mut next = later(now, idle);

        // A response the client is not taking: the socket will not take
        // more bytes, or (HTTP/2) the client's window stays shut.
        if let Some(since) = activity.write_blocked_since() {
            let deadline = later(since, idle);
            if now >= deadline {
                return Action::Close(Some(CloseReason::WriteStalled));
            }
            next = next.min(deadline);
        }
        if activity.responses_waiting() > 0 {
            let progress = activity.response_progress();
            let since = match self.waiting_since {
                Some(since) if progress == self.progress_seen => since,
                // Progress happened somewhere since the last look; count
                // from now (late by at most the half period below).
                _ => now,
            };
            self.waiting_since = Some(since);
            self.progress_seen = progress;
            let deadline = later(since, idle);
            if now >= deadline {
                return Action::Close(Some(CloseReason::WriteStalled));
            }
            next = next.min(deadline).min(later(now, idle / 2));
        } else {
            self.waiting_since = None;
        }

        if activity.in_flight() > 0 {
            return Action::WaitUntil(next);
        }
        let idle_since = activity.idle_since();
        if let Some(told) = self.going_away {
            if activity.protocol() != Protocol::Http2 {
                // hyper closes an idle HTTP/1 connection it is told to shut
                // down, but not one in the middle of reading a head.
                return Action::Close(None);
            }
            // An HTTP/2 client that neither closes nor answers the GOAWAY
            // gets `header_read_timeout`.
            let deadline = later(told.max(idle_since), header_read);
            return if now >= deadline {
                Action::Close(None)
            } else {
                Action::WaitUntil(next.min(deadline))
            };
        }
        if activity.protocol() == Protocol::Http1 {
            if let Some(head) = activity.head_started() {
                let deadline = later(head, header_read);
                if now >= deadline {
                    return Action::Close(Some(CloseReason::HeaderTimeout));
                }
                next = next.min(deadline);
            }
        }
        let deadline = later(idle_since, idle);
        if now >= deadline {
            self.going_away = Some(now);
            return Action::GoAway(CloseReason::IdleTimeout, later(now, header_read));
        }
        Action::WaitUntil(next.min(deadline))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::server::request::RequestGuard;

    const HEADER: Duration = Duration::from_secs(1);
    const IDLE: Duration = Duration::from_secs(2);

    fn watchdog() -> Watchdog {
        Watchdog::new(Timeouts {
            header_read: HEADER,
            idle: IDLE,
        })
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_of_centuries_do_not_overflow() {
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(accepted));
        let mut dog = Watchdog::new(Timeouts {
            header_read: Duration::MAX,
            idle: Duration::MAX,
        });
        assert_eq!(dog.first_check(&activity), accepted + FAR_FUTURE);
        activity.set_protocol(Protocol::Http2);
        activity.http2_handshake_done();
        assert!(matches!(
            dog.check(&activity, accepted + HEADER),
            Action::WaitUntil(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_starts_is_closed_at_the_header_deadline() {
        let accepted = Instant::now();
        let activity = Activity::new(accepted);
        let mut dog = watchdog();
        assert_eq!(dog.first_check(&activity), accepted + HEADER);
        assert_eq!(
            dog.check(&activity, accepted + secs(0.5)),
            Action::WaitUntil(accepted + HEADER)
        );
        assert_eq!(
            dog.check(&activity, accepted + HEADER),
            Action::Close(Some(CloseReason::HeaderTimeout))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_goes_away_at_its_idle_deadline_then_closes() {
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(accepted));
        tokio::time::advance(secs(0.5)).await;
        activity.set_protocol(Protocol::Http2);
        activity.http2_handshake_done();
        let mut dog = watchdog();
        let idle_deadline = accepted + secs(0.5) + IDLE;
        assert_eq!(
            dog.check(&activity, accepted + HEADER),
            Action::WaitUntil(idle_deadline)
        );
        assert_eq!(
            dog.check(&activity, idle_deadline),
            Action::GoAway(CloseReason::IdleTimeout, idle_deadline + HEADER)
        );
        assert_eq!(
            dog.check(&activity, idle_deadline + secs(0.1)),
            Action::WaitUntil(idle_deadline + HEADER)
        );
        assert_eq!(
            dog.check(&activity, idle_deadline + HEADER),
            Action::Close(None)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_starts_when_the_last_request_ends() {
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(accepted));
        activity.set_protocol(Protocol::Http1);
        let mut dog = watchdog();
        let first = RequestGuard::start(&activity);
        let second = RequestGuard::start(&activity);
        // Busy: look again one idle period later, however long it lasts.
        assert_eq!(
            dog.check(&activity, accepted + HEADER),
            Action::WaitUntil(accepted + HEADER + IDLE)
        );
        tokio::time::advance(secs(5.0)).await;
        drop(first);
        assert_eq!(
            dog.check(&activity, accepted + secs(5.5)),
            Action::WaitUntil(accepted + secs(7.5))
        );
        tokio::time::advance(secs(1.0)).await;
        drop(second);
        let ended = accepted + secs(6.0);
        assert_eq!(
            dog.check(&activity, accepted + secs(7.0)),
            Action::WaitUntil(ended + IDLE)
        );
        assert!(matches!(
            dog.check(&activity, ended + IDLE),
            Action::GoAway(CloseReason::IdleTimeout, _)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_http1_head_has_the_header_timeout_from_its_first_byte() {
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(accepted));
        activity.set_protocol(Protocol::Http1);
        drop(RequestGuard::start(&activity));
        tokio::time::advance(secs(0.25)).await;
        activity.bytes_read();
        let mut dog = watchdog();
        let head_deadline = accepted + secs(0.25) + HEADER;
        assert_eq!(
            dog.check(&activity, accepted + secs(0.5)),
            Action::WaitUntil(head_deadline)
        );
        assert_eq!(
            dog.check(&activity, head_deadline),
            Action::Close(Some(CloseReason::HeaderTimeout))
        );
        // Once the head is complete, its request clears the head clock.
        let _request = RequestGuard::start(&activity);
        assert!(activity.head_started().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_on_an_idle_connection_do_not_start_a_head_clock() {
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(accepted));
        activity.set_protocol(Protocol::Http2);
        activity.http2_handshake_done();
        activity.bytes_read();
        assert!(activity.head_started().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_closes_the_connection_after_the_idle_timeout() {
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(accepted));
        activity.set_protocol(Protocol::Http1);
        let _request = RequestGuard::start(&activity);
        tokio::time::advance(secs(3.0)).await;
        activity.write_blocked();
        let mut dog = watchdog();
        let blocked = accepted + secs(3.0);
        assert_eq!(
            dog.check(&activity, accepted + secs(4.0)),
            Action::WaitUntil(blocked + IDLE)
        );
        // A write that goes through resets it.
        activity.write_progressed();
        assert_eq!(
            dog.check(&activity, blocked + IDLE),
            Action::WaitUntil(blocked + IDLE + IDLE)
        );
        tokio::time::advance(secs(3.0)).await;
        activity.write_blocked();
        assert_eq!(
            dog.check(&activity, accepted + secs(6.0) + IDLE),
            Action::Close(Some(CloseReason::WriteStalled))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_held_by_the_client_window_is_abandoned() {
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(accepted));
        activity.set_protocol(Protocol::Http2);
        activity.http2_handshake_done();
        let _request = RequestGuard::start(&activity);
        activity.response_waiting();
        let mut dog = watchdog();
        let seen = accepted + secs(1.0);
        // First seen waiting: looked at again within half the idle timeout.
        assert_eq!(
            dog.check(&activity, seen),
            Action::WaitUntil(seen + IDLE / 2)
        );
        assert_eq!(
            dog.check(&activity, seen + IDLE / 2),
            Action::WaitUntil(seen + IDLE)
        );
        assert_eq!(
            dog.check(&activity, seen + IDLE),
            Action::Close(Some(CloseReason::WriteStalled))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_the_client_keeps_taking_is_never_abandoned() {
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(accepted));
        activity.set_protocol(Protocol::Http2);
        activity.http2_handshake_done();
        let _request = RequestGuard::start(&activity);
        let mut dog = watchdog();
        let mut now = accepted + HEADER;
        for _ in 0..20 {
            activity.response_waiting();
            match dog.check(&activity, now) {
                Action::WaitUntil(at) => now = at,
                other => panic!("{other:?}"),
            }
            activity.response_taken();
        }
        assert!(now > accepted + IDLE * 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_closes_unstarted_and_idle_http1_connections_at_once() {
        let accepted = Instant::now();
        let unstarted = Activity::new(accepted);
        let mut dog = watchdog();
        dog.going_away(accepted);
        assert_eq!(dog.check(&unstarted, accepted), Action::Close(None));

        let mid_head = Arc::new(Activity::new(accepted));
        mid_head.set_protocol(Protocol::Http1);
        drop(RequestGuard::start(&mid_head));
        mid_head.bytes_read();
        let mut dog = watchdog();
        dog.going_away(accepted);
        assert_eq!(dog.check(&mid_head, accepted), Action::Close(None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drained_connection_with_requests_in_flight_is_left_to_finish() {
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(accepted));
        activity.set_protocol(Protocol::Http2);
        activity.http2_handshake_done();
        let request = RequestGuard::start(&activity);
        let mut dog = watchdog();
        dog.going_away(accepted + HEADER);
        assert_eq!(
            dog.check(&activity, accepted + secs(10.0)),
            Action::WaitUntil(accepted + secs(10.0) + IDLE)
        );
        tokio::time::advance(secs(10.0)).await;
        drop(request);
        let ended = accepted + secs(10.0);
        assert_eq!(
            dog.check(&activity, ended),
            Action::WaitUntil(ended + HEADER)
        );
        assert_eq!(dog.check(&activity, ended + HEADER), Action::Close(None));
    }
}
