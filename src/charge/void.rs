//! Debits whose call failed after it may have run.
//!
//! A debit call that times out, loses its connection or gets a garbled
//! reply may still have been recorded by the ledger; the request is
//! answered as for any outage (503, or forwarded unmetered under
//! `on_unavailable = "allow"`), so such a debit must not stand. Each one is
//! voided in the background: once the ledger's clock has passed the debit's
//! deadline (after which the ledger records nothing for it), it is refunded
//! if it was recorded. Counted in `creditgate_unconfirmed_debits_total` by
//! what was found: `voided`, `absent`, or `unresolved` (the ledger stayed
//! unreachable: the debit may stand; the error log names it for a refund by
//! hand).

use std::sync::Arc;
use std::time::Duration;

use crate::ledger::{UnconfirmedDebit, VoidOutcome};
use crate::state::Gateway;

/// Pauses before each attempt: about three seconds in all (plus the
/// ledger's timeout per attempt), within what shutdown waits for.
const ATTEMPTS: [Duration; 7] = [
    Duration::ZERO,
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
    Duration::from_millis(1000),
];

/// Starts voiding `debit` in the background (counted by the gateway's
/// tasks, so shutdown waits for it).
pub fn void_in_background(gateway: &Arc<Gateway>, debit: Arc<UnconfirmedDebit>) {
    let gateway = gateway.clone();
    let tasks = gateway.tasks.clone();
    let spawned = tasks.spawn({
        let debit = debit.clone();
        async move { void(&gateway, &debit).await }
    });
    if !spawned {
        unresolved(&debit, "no runtime left to void it");
    }
}

async fn void(gateway: &Gateway, debit: &UnconfirmedDebit) {
    let mut last = String::from("its deadline had not passed on the ledger's clock");
    for pause in ATTEMPTS {
        tokio::time::sleep(pause).await;
        match gateway.ledger.void_unconfirmed(debit).await {
            Ok(VoidOutcome::Voided) => {
                gateway.metrics.unconfirmed_debit("voided");
                tracing::warn!(
                    request_id = %debit.request_id,
                    account = %debit.account,
                    "a debit whose call failed had been recorded; refunded it"
                );
                return;
            }
            Ok(VoidOutcome::Absent) => {
                gateway.metrics.unconfirmed_debit("absent");
                return;
            }
            Ok(VoidOutcome::TooEarly) => {}
            Err(error) => last = error.to_string(),
        }
    }
    gateway.metrics.unconfirmed_debit("unresolved");
    unresolved(debit, &last);
}

fn unresolved(debit: &UnconfirmedDebit, why: &str) {
    tracing::error!(
        request_id = %debit.request_id,
        fallback_request_id = %debit.fallback_request_id,
        account = %debit.account,
        "A DEBIT WHOSE CALL FAILED MAY STAND for a request that was not charged: \
         could not void it ({why}); check the account's history and refund by hand"
    );
}
