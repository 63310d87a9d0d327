//! A charge's ledger calls — the refund and the settlement — and, for those
//! it could not finish where it was, their retries in the background until
//! they succeed or the retries run out.
//!
//! Both calls are idempotent — a refund removes one debit by its id (twice
//! is a no-op), a settlement sets the debit's cost to one final value — so
//! a retry after a call whose reply was lost is safe. A refund that still
//! fails after [`RETRY`] is logged as an error and counted in
//! `creditgate_refund_failures_total`: the debit stands, and an operator can
//! refund it by request id through the admin API.

use std::sync::Arc;
use std::time::Duration;

use super::DebitId;
use crate::ledger::{LedgerError, RefundOutcome, SettleAlerts, SettleOutcome};
use crate::metrics::RouteMetrics;
use crate::record::Record;
use crate::state::Gateway;

/// Pauses before each attempt: five attempts over about two seconds (plus
/// the ledger's own timeout per attempt), enough to ride out a failover or
/// a reconnect, and short enough for shutdown to wait for.
pub const RETRY: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];

/// The one refund call: by the debit's time when known (no search).
pub async fn call(gateway: &Gateway, id: &DebitId) -> Result<RefundOutcome, LedgerError> {
    gateway
        .ledger
        .refund_debit(&id.account, &id.request_id, id.at_ms)
        .await
}

/// The one settlement call.
pub async fn settle_call(
    gateway: &Gateway,
    id: &DebitId,
    final_cost: u64,
) -> Result<SettleOutcome, LedgerError> {
    let snapshot = gateway.snapshot();
    let alerts = SettleAlerts {
        thresholds: snapshot
            .config
            .alerts
            .as_ref()
            .map_or(&[], |alerts| &alerts.thresholds),
        plans: &snapshot.config.plans,
    };
    let (outcome, queued) = gateway
        .ledger
        .settle(
            &id.account,
            &id.request_id,
            Some(id.at_ms),
            final_cost,
            &alerts,
        )
        .await?;
    if queued > 0 {
        // Queued with the settlement; the sender files the account.
        gateway.metrics.alerts_queued(queued);
        gateway.alerts.add(&id.account);
    }
    Ok(outcome)
}

/// What is left to do.
#[derive(Debug, Clone, Copy)]
pub enum Pending {
    Refund,
    Settle(u64),
}

/// A charge's unfinished business, owned by a background task.
pub struct Work {
    pub gateway: Arc<Gateway>,
    /// Held until the work is done, so the access line shows the outcome.
    pub record: Arc<Record>,
    /// The route's metrics (its refund failures are counted there).
    pub route: Arc<RouteMetrics>,
    pub id: DebitId,
    /// The cost before this work.
    pub cost: u64,
    pub pending: Pending,
}

/// Logs and counts work dropped before it ran to its end: no runtime was
/// left to spawn it, or the runtime tore down with it still queued.
struct Unfinished {
    route: Arc<RouteMetrics>,
    id: DebitId,
    pending: Pending,
    done: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.done {
            give_up(
                &self.route,
                &self.id,
                self.pending,
                "the process stopped first",
            );
        }
    }
}

/// Runs `work` on the runtime (counted by [`crate::tasks::Tasks`], so
/// shutdown waits for it). Work that cannot run (no runtime left) is
/// logged and counted as failed.
pub fn finish_in_background(work: Work) {
    let tasks = work.gateway.tasks.clone();
    let unfinished = Unfinished {
        route: work.route.clone(),
        id: work.id.clone(),
        pending: work.pending,
        done: false,
    };
    // Not spawned, the future is dropped here and `unfinished` reports it.
    let _ = tasks.spawn(async move {
        let mut unfinished = unfinished;
        work.run().await;
        unfinished.done = true;
    });
}

impl Work {
    async fn run(self) {
        let mut last_error = None;
        for pause in RETRY {
            tokio::time::sleep(pause).await;
            match self.attempt().await {
                Ok(()) => return,
                Err(error) => last_error = Some(error),
            }
        }
        let error = last_error.map(|e| e.to_string()).unwrap_or_default();
        give_up(&self.route, &self.id, self.pending, &error);
    }

    async fn attempt(&self) -> Result<(), LedgerError> {
        let request_id = &self.id.request_id;
        match self.pending {
            Pending::Refund => match call(&self.gateway, &self.id).await? {
                RefundOutcome::Refunded | RefundOutcome::AlreadyRefunded => {
                    self.record.refunded(self.cost)
                }
                RefundOutcome::Unknown => {
                    tracing::error!(%request_id, "refund found no debit for this request")
                }
            },
            Pending::Settle(cost) => match settle_call(&self.gateway, &self.id, cost).await? {
                SettleOutcome::Settled { .. } => self.record.settled(cost),
                SettleOutcome::Refunded => self.record.refunded(self.cost),
                SettleOutcome::Unknown => {
                    tracing::error!(%request_id, "settlement found no debit")
                }
            },
        }
        Ok(())
    }
}

fn give_up(route: &RouteMetrics, id: &DebitId, pending: Pending, error: &str) {
    match pending {
        Pending::Refund => {
            route.refund_failed();
            tracing::error!(
                request_id = %id.request_id,
                account = %id.account,
                "REFUND FAILED after every retry; the debit stands until refunded by hand: {error}"
            );
        }
        Pending::Settle(cost) => tracing::error!(
            request_id = %id.request_id,
            account = %id.account,
            "settlement to {cost} failed after every retry; the reservation stands: {error}"
        ),
    }
}
