//! The record phase: one access-log line and one count in the metrics per
//! data-plane request, written when the request's life ends.
//!
//! A [`Record`] is shared by whatever may outlive the others: the request's
//! phases, the response body on its way to the client ([`ClientBody`]), the
//! request's [`crate::charge::Charge`] and any background work finishing the
//! charge. It is written when the last of them lets go (`Drop`), so the line
//! carries what really happened: the status sent, whether the body reached
//! its end, and the final cost after refunds and settlements. Nothing else
//! writes an access line, so a request is never logged twice or forgotten,
//! whatever ended it (a finished body, a client that left, an HTTP/2 reset,
//! a panic in a phase, the drain timeout).
//!
//! Outcomes (the `outcome` field and metric label) are static strings:
//! `forwarded`, `usage_api`, `client_closed`, `upstream_aborted` or the
//! problem `code` the gateway answered with (docs/http-api.md, "Access log").

mod body;

pub use body::ClientBody;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Uri};

use crate::error::ErrorKind;
use crate::ledger::KeyOwner;
use crate::metrics::Outcome;
use crate::state::Snapshot;

/// The status logged for a request whose client left before any response.
/// (nginx's "client closed request"; it never goes on the wire.)
pub const CLIENT_CLOSED_STATUS: u16 = 499;

/// Who answered a request that ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An upstream (the usual case).
    Upstream,
    /// The gateway itself: the usage API (`/v1/credits*`).
    UsageApi,
}

pub struct Record {
    /// The plane's snapshot the request runs under: its route's metrics
    /// handle and name are found there by index when the record is written.
    snapshot: Arc<Snapshot>,
    started: Instant,
    method: Method,
    /// The request target as received (its path is logged); shares the
    /// request's bytes.
    uri: Uri,
    state: Mutex<State>,
}

struct State {
    request_id: HeaderValue,
    /// Index in the snapshot's routes.
    route: Option<usize>,
    owner: Option<Arc<KeyOwner>>,
    account: Option<String>,
    answer: Answer,
    /// The gateway answered with this problem.
    problem: Option<ErrorKind>,
    /// The status handed to the connection; `None`: no response was.
    status: Option<u16>,
    body_bytes: u64,
    body_complete: bool,
    /// The upstream's response body broke off before its end.
    upstream_aborted: bool,
    /// The request's phases were dropped before they produced a response.
    client_left: bool,
    debited: u64,
    cost: u64,
    refunded: Option<u64>,
    unmetered: bool,
    upstream_elapsed: Option<Duration>,
}

impl Record {
    pub fn start(
        snapshot: Arc<Snapshot>,
        method: Method,
        uri: Uri,
        request_id: HeaderValue,
    ) -> Arc<Record> {
        Arc::new(Record {
            snapshot,
            started: Instant::now(),
            method,
            uri,
            state: Mutex::new(State {
                request_id,
                route: None,
                owner: None,
                account: None,
                answer: Answer::Upstream,
                problem: None,
                status: None,
                body_bytes: 0,
                body_complete: false,
                upstream_aborted: false,
                client_left: false,
                debited: 0,
                cost: 0,
                refunded: None,
                unmetered: false,
                upstream_elapsed: None,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request_id(&self) -> HeaderValue {
        self.state().request_id.clone()
    }

    /// The debit was recorded under another id (the client's was taken).
    pub fn set_request_id(&self, request_id: HeaderValue) {
        self.state().request_id = request_id;
    }

    /// The request matched the snapshot's route number `route`.
    pub fn set_route(&self, route: usize) {
        self.state().route = Some(route);
    }

    /// The request's key belongs to `owner` (shared, not copied).
    pub fn set_owner(&self, owner: &Arc<KeyOwner>) {
        self.state().owner = Some(owner.clone());
    }

    pub fn set_account(&self, account: &str) {
        self.state().account = Some(account.to_owned());
    }

    pub fn answered_by(&self, answer: Answer) {
        self.state().answer = answer;
    }

    pub fn set_problem(&self, kind: ErrorKind) {
        self.state().problem = Some(kind);
    }

    pub fn set_upstream_elapsed(&self, elapsed: Duration) {
        self.state().upstream_elapsed = Some(elapsed);
    }

    pub fn set_unmetered(&self) {
        self.state().unmetered = true;
    }

    /// A debit of `cost` was recorded for this request.
    pub fn debited(&self, cost: u64) {
        let mut state = self.state();
        state.debited = cost;
        state.cost = cost;
    }

    /// The request's charge now costs `cost` (a settlement).
    pub fn settled(&self, cost: u64) {
        self.state().cost = cost;
    }

    /// The request's debit was refunded (`credits` given back).
    pub fn refunded(&self, credits: u64) {
        let mut state = self.state();
        state.cost = 0;
        state.refunded = Some(credits);
    }

    /// The request's phases were dropped before a response (the client left).
    pub fn client_left(&self) {
        self.state().client_left = true;
    }

    pub fn has_client_left(&self) -> bool {
        self.state().client_left
    }

    pub fn upstream_aborted(&self) {
        self.state().upstream_aborted = true;
    }

    fn responded(&self, status: u16) {
        self.state().status = Some(status);
    }

    fn body_finished(&self, bytes: u64, complete: bool) {
        let mut state = self.state();
        state.body_bytes = bytes;
        state.body_complete = complete;
    }
}

impl State {
    fn outcome(&self) -> (u16, Outcome) {
        let Some(status) = self.status else {
            return (CLIENT_CLOSED_STATUS, Outcome::ClientClosed);
        };
        if let Some(kind) = self.problem {
            return (status, Outcome::Problem(kind));
        }
        if self.upstream_aborted {
            return (status, Outcome::UpstreamAborted);
        }
        if !self.body_complete {
            return (status, Outcome::ClientClosed);
        }
        let answer = match self.answer {
            Answer::Upstream => Outcome::Forwarded,
            Answer::UsageApi => Outcome::UsageApi,
        };
        (status, answer)
    }
}

impl Drop for Record {
    /// The request's life is over: count it and write its one line.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let (status, outcome) = state.outcome();
        let metrics = state
            .route
            .and_then(|route| self.snapshot.route_metrics.get(route))
            .unwrap_or_else(|| self.snapshot.metrics.unrouted());
        metrics.request(outcome, status);
        if state.debited > 0 {
            metrics.credits_debited(state.debited);
        }
        if let Some(credits) = state.refunded.filter(|credits| *credits > 0) {
            metrics.credits_refunded(credits);
        }
        if state.cost > 0 {
            metrics.credits_charged(state.cost);
        }
        if state.unmetered {
            metrics.unmetered();
        }
        if let Some(elapsed) = state.upstream_elapsed {
            metrics.upstream_latency(elapsed);
        }
        let account = match (&state.owner, &state.account) {
            (Some(owner), _) => owner.account_id.as_str(),
            (None, Some(account)) => account.as_str(),
            (None, None) => "",
        };
        tracing::info!(
            target: "creditgate::access",
            request_id = state.request_id.to_str().unwrap_or_default(),
            method = %self.method,
            path = self.uri.path(),
            route = &**metrics.name(),
            account,
            status,
            outcome = outcome.label(),
            cost = state.cost,
            debited = state.debited,
            refunded = state.refunded.is_some(),
            unmetered = state.unmetered,
            body_bytes = state.body_bytes,
            upstream_ms = state.upstream_elapsed.map(|d| d.as_secs_f64() * 1000.0),
            total_ms = self.started.elapsed().as_secs_f64() * 1000.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(snapshot: &Arc<Snapshot>) -> Arc<Record> {
        Record::start(
            snapshot.clone(),
            Method::POST,
            Uri::from_static("/v1/paid"),
            HeaderValue::from_static("r-1"),
        )
    }

    fn outcome(record: &Record) -> (u16, &'static str, bool) {
        let (status, outcome) = record.state().outcome();
        (
            status,
            outcome.label(),
            matches!(outcome, Outcome::Problem(_)),
        )
    }

    #[test]
    fn outcomes_follow_how_the_request_ended() {
        let snapshot = crate::state::test_snapshot();
        let abandoned = record(&snapshot);
        assert_eq!(outcome(&abandoned), (499, "client_closed", false));

        let finished = record(&snapshot);
        finished.responded(200);
        assert_eq!(outcome(&finished), (200, "client_closed", false));
        finished.body_finished(10, true);
        assert_eq!(outcome(&finished), (200, "forwarded", false));

        let usage = record(&snapshot);
        usage.answered_by(Answer::UsageApi);
        usage.responded(200);
        usage.body_finished(2, true);
        assert_eq!(outcome(&usage), (200, "usage_api", false));

        let problem = record(&snapshot);
        problem.set_problem(ErrorKind::UpstreamTimeout);
        problem.responded(504);
        assert_eq!(outcome(&problem), (504, "upstream_timeout", true));

        let aborted = record(&snapshot);
        aborted.responded(200);
        aborted.upstream_aborted();
        aborted.body_finished(3, false);
        assert_eq!(outcome(&aborted), (200, "upstream_aborted", false));
    }

    #[test]
    fn the_last_owner_writes_the_metrics_once() {
        let snapshot = crate::state::test_snapshot();
        let record = record(&snapshot);
        record.set_route(0);
        record.debited(7);
        record.refunded(7);
        let other_owner = record.clone();
        drop(record);
        let metrics = &snapshot.metrics;
        assert!(!metrics.render().contains("creditgate_requests_total{"));
        drop(other_owner);
        let text = metrics.render();
        assert!(text.contains(
            "creditgate_requests_total{route=\"paid\",outcome=\"client_closed\",status=\"499\"} 1"
        ));
        assert!(text.contains("creditgate_credits_debited_total{route=\"paid\"} 7"));
        assert!(text.contains("creditgate_credits_refunded_total{route=\"paid\"} 7"));
        assert!(!text.contains("creditgate_credits_charged_total{"));
    }
}
