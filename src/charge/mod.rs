//! A request's money has one owner: its [`Charge`].
//!
//! The debit creates it ([`debit()`]); from then on it is the only way credits
//! move on the data plane — [`Charge::mark_delivered`], [`Charge::refund`],
//! [`Charge::settle`] — and it carries the account, the request id, the
//! debit's time on the ledger clock, the cost and the credit headers.
//!
//! ```text
//! reserved ──(upstream answered)──▶ delivered ──▶ settled
//!     │                                 │
//!     └──────────▶ refunded ◀───────────┘ (route's failure rules)
//! ```
//!
//! **A charge follows delivery** (docs/http-api.md, "Charges"): a charge
//! dropped while still *reserved* — whatever dropped it: a client that left,
//! an HTTP/2 reset, a stalled body, the drain timeout, a panic — refunds
//! itself in the background ([`retry`]), with retries. A ledger call that
//! was under way when its charge was dropped (a refund or a settlement) is
//! finished in the background the same way; both are idempotent.
//!
//! A route with `refund_on_failure = false` keeps the debit of an upstream
//! failure ([`Charge::keep`]); a body that broke off on the client's side is
//! refunded whatever the route says (the upstream never had the request).
//!
//! The charge holds the request's [`Record`], so the access line is only
//! written once the money is final.
//!
//! Layout: [`mod@debit`] (admission: the debit and its refusals), [`retry`]
//! (the refund and settle calls, and their retries in the background), [`settle`]
//! (settlement from the response head or a JSON body), [`body`] (the
//! response body that carries the charge to its end: event streams, bodies
//! that break off, clients that leave), [`usage`] (reading reported
//! figures), [`void`] (debits whose call failed after it may have run).

pub mod body;
pub mod debit;
pub mod retry;
pub mod settle;
pub mod usage;
pub mod void;

pub use debit::debit;

use std::sync::Arc;
use std::time::Duration;

use crate::config::RouteConfig;
use crate::ledger::{RefundOutcome, SettleOutcome};
use crate::pricing;
use crate::ratelimit::CreditHeaders;
use crate::record::Record;
use crate::state::{Gateway, Snapshot};

/// Where a charge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Debited; the upstream has not answered. Dropped now, it refunds.
    Reserved,
    /// The upstream answered: the debit stands unless the route's rules
    /// refund or settle it.
    Delivered,
    /// A refund is under way; dropped now, it is finished in the background.
    Refunding,
    /// A settlement to `cost` is under way; likewise.
    Settling { cost: u64 },
    /// Nothing more will change (refunded, settled, or finished elsewhere).
    Closed,
}

/// Who a debit belongs to and how to find it again.
#[derive(Debug, Clone)]
pub struct DebitId {
    pub account: String,
    /// The id the debit was recorded under.
    pub request_id: String,
    /// When it was recorded, on the ledger clock (unix ms).
    pub at_ms: i64,
}

/// The money of one request; see the module doc.
pub struct Charge {
    gateway: Arc<Gateway>,
    snapshot: Arc<Snapshot>,
    route_index: usize,
    record: Arc<Record>,
    id: DebitId,
    /// What the debit took at admission (the reservation, for settled routes).
    reserved: u64,
    /// What the request costs now.
    cost: u64,
    state: State,
    headers: CreditHeaders,
}

impl Charge {
    fn new(
        gateway: Arc<Gateway>,
        snapshot: Arc<Snapshot>,
        route_index: usize,
        record: Arc<Record>,
        id: DebitId,
        cost: u64,
        headers: CreditHeaders,
    ) -> Charge {
        record.debited(cost);
        Charge {
            gateway,
            snapshot,
            route_index,
            record,
            id,
            reserved: cost,
            cost,
            state: State::Reserved,
            headers,
        }
    }

    pub fn route(&self) -> &RouteConfig {
        &self.snapshot.config.routes[self.route_index]
    }

    /// How long the route's upstream may take (also bounds how long a
    /// client-less stream is still read for its usage figure).
    pub fn upstream_timeout(&self) -> Duration {
        self.snapshot.route_upstreams[self.route_index]
            .config
            .timeout
    }

    pub fn headers(&self) -> &CreditHeaders {
        &self.headers
    }

    pub fn record(&self) -> &Arc<Record> {
        &self.record
    }

    /// The upstream answered (its response head arrived): from now on the
    /// debit stands unless the route's rules refund or settle it.
    pub fn mark_delivered(&mut self) {
        if self.state == State::Reserved {
            self.state = State::Delivered;
        }
    }

    /// The upstream failed (no answer, a timeout, a malformed response) on
    /// a route with `refund_on_failure = false`: the debit stands as if
    /// delivered.
    pub fn keep(&mut self) {
        self.mark_delivered();
    }

    /// Whether a refund or settlement can still change the cost.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Reserved | State::Delivered)
    }

    /// Gives the request's credits back. One attempt here; if the ledger
    /// fails it, the refund is retried in the background (and the credit
    /// headers keep showing the debit, which still stands for now).
    pub async fn refund(&mut self) {
        if !self.is_open() {
            return;
        }
        self.state = State::Refunding;
        let outcome = retry::call(&self.gateway, &self.id).await;
        match outcome {
            Ok(RefundOutcome::Refunded | RefundOutcome::AlreadyRefunded) => self.refunded(),
            Ok(RefundOutcome::Unknown) => {
                tracing::error!(
                    request_id = %self.id.request_id,
                    "refund found no debit for this request"
                );
                self.state = State::Closed;
            }
            Err(error) => {
                tracing::warn!(
                    request_id = %self.id.request_id,
                    "refund failed, retrying in the background: {error}"
                );
                self.finish_in_background(retry::Pending::Refund);
            }
        }
    }

    /// Replaces the reservation by the cost of `reported` units of work
    /// (the route's `settle` rule); `None` leaves the reservation standing.
    /// Only a delivered charge settles.
    pub async fn settle(&mut self, reported: Option<f64>) {
        if self.state != State::Delivered {
            return;
        }
        let final_cost = match (&self.route().settle, reported) {
            (Some(settle), Some(reported)) => {
                pricing::settled_cost(self.route().cost, settle, reported, self.reserved)
            }
            _ => self.cost,
        };
        if final_cost == self.cost {
            self.state = State::Closed;
            return;
        }
        self.state = State::Settling { cost: final_cost };
        let outcome = retry::settle_call(&self.gateway, &self.id, final_cost).await;
        match outcome {
            Ok(SettleOutcome::Settled { used }) => self.settled(final_cost, Some(used)),
            Ok(SettleOutcome::Refunded) => self.refunded(),
            Ok(SettleOutcome::Unknown) => {
                tracing::error!(request_id = %self.id.request_id, "settlement found no debit");
                self.state = State::Closed;
            }
            Err(error) => {
                tracing::warn!(
                    request_id = %self.id.request_id,
                    "settlement failed, retrying in the background: {error}"
                );
                self.finish_in_background(retry::Pending::Settle(final_cost));
            }
        }
    }

    fn refunded(&mut self) {
        self.record.refunded(self.cost);
        self.headers.refunded();
        self.cost = 0;
        self.state = State::Closed;
    }

    fn settled(&mut self, cost: u64, used: Option<u64>) {
        self.record.settled(cost);
        self.headers.settled(cost, used);
        self.cost = cost;
        self.state = State::Closed;
    }

    /// Refunds in the background (where nothing can wait for it: a response
    /// body that broke off). Consumes the charge.
    pub fn refund_later(mut self) {
        if self.is_open() {
            self.state = State::Refunding;
        }
    }

    /// Settles in the background for `reported` units; `None` leaves the
    /// reservation standing. Consumes the charge.
    pub fn settle_later(mut self, reported: Option<f64>) {
        if self.state != State::Delivered {
            return;
        }
        if let (Some(settle), Some(reported)) = (&self.route().settle, reported) {
            let cost = pricing::settled_cost(self.route().cost, settle, reported, self.reserved);
            if cost != self.cost {
                self.state = State::Settling { cost };
            }
        }
    }

    /// The background work this charge's gateway runs (and shutdown awaits).
    pub fn tasks(&self) -> &Arc<crate::tasks::Tasks> {
        &self.gateway.tasks
    }

    /// Hands what is left to do to a background task; this charge is done.
    fn finish_in_background(&mut self, pending: retry::Pending) {
        self.state = State::Closed;
        retry::finish_in_background(retry::Work {
            gateway: self.gateway.clone(),
            record: self.record.clone(),
            route: self.snapshot.route_metrics[self.route_index].clone(),
            id: self.id.clone(),
            cost: self.cost,
            pending,
        });
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        match self.state {
            State::Reserved | State::Refunding => self.finish_in_background(retry::Pending::Refund),
            State::Settling { cost } => self.finish_in_background(retry::Pending::Settle(cost)),
            State::Delivered | State::Closed => {}
        }
    }
}
