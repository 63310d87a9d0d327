//! The debit phase: check and record a request's cost in one atomic ledger
//! step, and turn every answer into a [`Charge`] or a problem.

use std::sync::Arc;

use http::HeaderValue;

use super::{Charge, DebitId};
use crate::config::OnUnavailable;
use crate::error::{ErrorKind, Extra, GatewayError};
use crate::ledger::{alerts, Debit, DebitOutcome, KeyOwner, WindowState};
use crate::ratelimit::CreditHeaders;
use crate::record::Record;
use crate::request_id;
use crate::state::{Gateway, Snapshot};

/// Debits `cost` (> 0) for the request. `Ok(None)`: the ledger could not
/// be reached and the config forwards anyway, unmetered.
///
/// Call it where the request cannot cancel it (inside the exchange, see
/// `exchange.rs`): a debit call dropped half-way may still be recorded by
/// the ledger, and then no charge would exist to refund it.
pub async fn debit(
    gateway: &Arc<Gateway>,
    snapshot: &Arc<Snapshot>,
    route_index: usize,
    owner: &KeyOwner,
    cost: u64,
    request_id_generated: bool,
    record: &Arc<Record>,
) -> Result<Option<Charge>, GatewayError> {
    let route = &snapshot.config.routes[route_index].name;
    let preferred = record.request_id();
    let fallback = request_id::generate();
    let debit = Debit {
        account: &owner.account_id,
        request_id: preferred.to_str().unwrap_or_default(),
        request_id_generated,
        fallback_request_id: fallback.to_str().unwrap_or_default(),
        route,
        cost,
        plans: &snapshot.config.plans,
        alert_thresholds: alert_thresholds(snapshot),
        limits: &snapshot.config.limits,
    };
    let window_secs = snapshot.window_secs;
    match gateway.ledger.debit(&debit).await {
        // Only an outage may forward unmetered; a damaged account or a sum
        // the ledger cannot hold is never waved through.
        Err(error) if !error.is_outage() => Err(GatewayError::from_ledger(error)),
        Err(error) => {
            if let Some(unconfirmed) = error.unconfirmed_debit() {
                super::void::void_in_background(gateway, unconfirmed.clone());
            }
            match snapshot.config.ledger.on_unavailable {
                OnUnavailable::Reject => Err(GatewayError::ledger_unavailable(error)),
                OnUnavailable::Allow => {
                    tracing::warn!(
                        route = %route,
                        "ledger unreachable; forwarding without a debit: {error}"
                    );
                    record.set_unmetered();
                    Ok(None)
                }
            }
        }
        Ok(DebitOutcome::Admitted {
            request_id,
            at_ms,
            window,
            from_grants,
        }) => {
            // Only the allowance part of the cost counts in `used`.
            let crossed = alerts::crossed(
                debit.alert_thresholds,
                window.allowance,
                window.used.saturating_sub(cost - from_grants),
                window.used,
            )
            .count();
            if crossed > 0 {
                // The ledger queued them with the debit; the sender files
                // the account in its index, off this request's path.
                gateway.metrics.alerts_queued(crossed as u64);
                gateway.alerts.add(&owner.account_id);
            }
            if request_id.as_bytes() != preferred.as_bytes() {
                record.set_request_id(HeaderValue::from_str(&request_id).unwrap_or(fallback));
            }
            let id = DebitId {
                account: owner.account_id.clone(),
                request_id,
                at_ms,
            };
            Ok(Some(Charge::new(
                gateway.clone(),
                snapshot.clone(),
                route_index,
                record.clone(),
                id,
                cost,
                CreditHeaders::new(&window, cost, window_secs),
            )))
        }
        Ok(DebitOutcome::Rejected {
            window,
            retry_after_ms,
            limit,
        }) => Err(credits_exhausted(&window, cost, retry_after_ms, limit)
            .with_credit_headers(&CreditHeaders::new(&window, cost, window_secs))),
        Ok(DebitOutcome::NoAccount) => Err(GatewayError::new(
            ErrorKind::Unauthenticated,
            "the account for this key no longer exists",
        )),
        Ok(DebitOutcome::Suspended) => Err(suspended()),
        Ok(DebitOutcome::UnknownPlan(plan)) => Err(GatewayError::new(
            ErrorKind::PlanUnavailable,
            "this account's plan is not available; contact support",
        )
        .with_internal(format_args!(
            "account {} has unknown plan {plan}",
            owner.account_id
        ))),
    }
}

fn alert_thresholds(snapshot: &Snapshot) -> &[u32] {
    snapshot
        .config
        .alerts
        .as_ref()
        .map_or(&[], |alerts| &alerts.thresholds)
}

pub fn suspended() -> GatewayError {
    GatewayError::new(ErrorKind::AccountSuspended, "this account is suspended")
}

/// The 429. `limit` names the extra window that refused (the one that
/// frees last), `None` for the 30-day window.
fn credits_exhausted(
    window: &WindowState,
    cost: u64,
    retry_after_ms: Option<u64>,
    limit: Option<usize>,
) -> GatewayError {
    let available = window.available();
    let retry_after_secs = retry_after_ms.map(|ms| ms.div_ceil(1000).max(1));
    let refusing = limit.and_then(|index| window.limits.get(index));
    let detail = match (retry_after_secs, refusing) {
        (Some(secs), None) => format!(
            "this request costs {cost} credits and {available} are available; enough credits return in {secs} s"
        ),
        (Some(secs), Some(limit)) => format!(
            "this request costs {cost} credits and the plan's {} limit of {} credits leaves {}; enough credits return in {secs} s",
            limit.name,
            limit.credits,
            limit.available()
        ),
        (None, None) => format!(
            "this request costs {cost} credits, more than the plan's whole allowance of {} and the account's grants",
            window.allowance
        ),
        (None, Some(limit)) => format!(
            "this request costs {cost} credits, more than the plan's whole {} limit of {}",
            limit.name, limit.credits
        ),
    };
    GatewayError::new(ErrorKind::CreditsExhausted, detail).with_extra(Extra::Credits {
        cost,
        available,
        retry_after_secs,
        limit: refusing.map(|limit| limit.name.clone()),
    })
}
