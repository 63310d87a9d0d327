//! Threshold alerts in the ledger (docs/alerts.md): queued by the debit that
//! crosses, in the same step; re-armed when `used` falls below again; the
//! senders' claim, retry and give-up. Run on memory, Redis and a Redis
//! Cluster (every key the debit touches in the account's slot).

use std::time::Duration;

use creditgate::ledger::alerts::{AlertState, Attempt, QueuedAlert, Settled};
use creditgate::ledger::{Debit, DebitOutcome, RefundOutcome, SettleAlerts, SettleOutcome};

use super::{Harness, MONTH, TWO_SECONDS};

/// 0.5, 0.8 and 1.0 of the allowance: on plan `small` (1000), 500, 800, 1000.
const THRESHOLDS: [u32; 3] = [500_000, 800_000, 1_000_000];

async fn debit(h: &Harness, id: &str, cost: u64) -> DebitOutcome {
    let fallback = format!("{id}-fallback");
    h.ledger
        .debit(&Debit {
            account: "acct",
            request_id: id,
            request_id_generated: false,
            fallback_request_id: &fallback,
            route: "route-a",
            cost,
            plans: &h.plans,
            alert_thresholds: &THRESHOLDS,
            limits: &h.limits,
        })
        .await
        .expect("debit")
}

async fn pending(h: &Harness) -> Vec<QueuedAlert> {
    listed(h, AlertState::Pending).await
}

async fn listed(h: &Harness, state: AlertState) -> Vec<QueuedAlert> {
    // The list reads the index (Redis): file the account first, as the
    // gateway does after a debit that crossed.
    h.ledger.hint_alerts("acct").await.expect("hint");
    let list = h.ledger.list_alerts(state, 1000).await.expect("list");
    assert!(!list.truncated);
    list.items
}

fn summary(alerts: &[QueuedAlert]) -> Vec<(u32, u64, u64, u64)> {
    alerts
        .iter()
        .map(|a| (a.threshold_ppm, a.used, a.monthly_allowance, a.available))
        .collect()
}

fn admitted(outcome: &DebitOutcome) -> bool {
    matches!(outcome, DebitOutcome::Admitted { .. })
}

macro_rules! conformance {
    ($($name:ident: $window_ms:ident;)*) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::memory(std::time::Duration::from_millis(super::$window_ms)).await).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::redis(std::time::Duration::from_millis(super::$window_ms)).await).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::cluster(std::time::Duration::from_millis(super::$window_ms)).await).await;
                }
            )*
        }
    };
}

conformance! {
    a_crossing_queues_one_alert_per_threshold: MONTH;
    one_debit_across_several_thresholds_queues_each: MONTH;
    a_refund_rearms_a_threshold: MONTH;
    debits_leaving_the_window_rearm_a_threshold: TWO_SECONDS;
    claims_lease_retry_deliver_and_give_up: MONTH;
    a_settlement_above_the_reservation_crosses_like_a_debit: MONTH;
}

async fn a_crossing_queues_one_alert_per_threshold(h: Harness) {
    assert!(admitted(&debit(&h, "a", 499).await));
    assert!(pending(&h).await.is_empty(), "below every threshold");
    assert!(admitted(&debit(&h, "b", 1).await)); // 500: crosses 0.5
    assert!(admitted(&debit(&h, "c", 299).await)); // 799: nothing
    assert!(admitted(&debit(&h, "d", 1).await)); // 800: crosses 0.8
    assert!(admitted(&debit(&h, "e", 100).await)); // 900: nothing
                                                   // A rejected debit records nothing, alerts included.
    assert!(matches!(
        debit(&h, "f", 101).await,
        DebitOutcome::Rejected { .. }
    ));
    assert!(admitted(&debit(&h, "g", 100).await)); // 1000: crosses 1.0
    let alerts = pending(&h).await;
    assert_eq!(
        summary(&alerts),
        [
            (500_000, 500, 1000, 500),
            (800_000, 800, 1000, 200),
            (1_000_000, 1000, 1000, 0)
        ]
    );
    let numbers: Vec<u64> = alerts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2, 3]);
    let mut ids: Vec<String> = alerts.iter().map(QueuedAlert::event_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "event ids are distinct");
    assert!(alerts
        .iter()
        .all(|a| a.account == "acct" && a.attempts == 0 && a.last_error.is_none()));
    assert!(listed(&h, AlertState::Failed).await.is_empty());
    // Without thresholds (alerts not configured) nothing is queued.
    h.account("quiet", "small").await;
    assert!(admitted(&h.debit_as("quiet", "q", 1000).await));
    assert!(pending(&h).await.iter().all(|a| a.account == "acct"));
}

async fn one_debit_across_several_thresholds_queues_each(h: Harness) {
    assert!(admitted(&debit(&h, "a", 1000).await));
    assert_eq!(
        summary(&pending(&h).await),
        [
            (500_000, 1000, 1000, 0),
            (800_000, 1000, 1000, 0),
            (1_000_000, 1000, 1000, 0)
        ]
    );
}

async fn a_refund_rearms_a_threshold(h: Harness) {
    assert!(admitted(&debit(&h, "a", 500).await));
    assert!(admitted(&debit(&h, "b", 10).await)); // above: nothing new
    assert_eq!(pending(&h).await.len(), 1);
    assert_eq!(
        h.ledger.refund("acct", "a").await.unwrap(),
        RefundOutcome::Refunded
    );
    assert!(admitted(&debit(&h, "c", 489).await)); // 499: still below
    assert_eq!(pending(&h).await.len(), 1);
    assert!(admitted(&debit(&h, "d", 1).await)); // 500 again: crosses again
    let alerts = pending(&h).await;
    assert_eq!(
        summary(&alerts),
        [(500_000, 500, 1000, 500), (500_000, 500, 1000, 500)]
    );
    assert_ne!(alerts[0].event_id(), alerts[1].event_id());
}

async fn debits_leaving_the_window_rearm_a_threshold(h: Harness) {
    assert!(admitted(&debit(&h, "a", 800).await));
    assert_eq!(pending(&h).await.len(), 2);
    h.advance(Duration::from_millis(TWO_SECONDS + 200)).await;
    assert!(admitted(&debit(&h, "b", 500).await)); // 800 left: 0 → 500
    let alerts = pending(&h).await;
    assert_eq!(
        summary(&alerts),
        [
            (500_000, 800, 1000, 200),
            (800_000, 800, 1000, 200),
            (500_000, 500, 1000, 500)
        ]
    );
}

async fn claims_lease_retry_deliver_and_give_up(h: Harness) {
    assert!(admitted(&debit(&h, "a", 800).await)); // 0.5 and 0.8
    h.ledger.hint_alerts("acct").await.unwrap();
    assert_eq!(
        h.ledger.alert_accounts_due(10).await.unwrap(),
        ["acct".to_owned()]
    );
    let lease = Duration::from_secs(60);
    let claim = h.ledger.claim_alerts("acct", lease, 10).await.unwrap();
    assert_eq!(claim.alerts.len(), 2);
    assert!(claim.alerts.iter().all(|a| a.attempts == 1));
    let leased_until = claim.alerts[0].next_ms;
    assert_eq!(claim.next_due_ms, Some(leased_until));
    h.ledger
        .index_alert_account("acct", claim.next_due_ms)
        .await
        .unwrap();
    // Leased: no other sender gets them, and the index says so.
    let again = h.ledger.claim_alerts("acct", lease, 10).await.unwrap();
    assert!(again.alerts.is_empty());
    assert!(h.ledger.alert_accounts_due(10).await.unwrap().is_empty());

    // The first is delivered; the second fails and waits.
    let (first, second) = (&claim.alerts[0], &claim.alerts[1]);
    let done = h
        .ledger
        .finish_alert(first, &Attempt::Delivered)
        .await
        .unwrap();
    assert_eq!(done.settled, Settled::Delivered);
    let failed_once = Attempt::Failed {
        wait: Duration::from_millis(300),
        retry_for: Duration::from_secs(3600),
        error: "the receiver answered 500".into(),
    };
    let retry = h.ledger.finish_alert(second, &failed_once).await.unwrap();
    assert_eq!(retry.settled, Settled::WillRetry);
    h.ledger
        .index_alert_account("acct", retry.next_due_ms)
        .await
        .unwrap();
    // A finish with a stale token (the lease ran out, another took it) changes nothing.
    let stale = QueuedAlert {
        next_ms: second.next_ms - 1,
        ..second.clone()
    };
    assert_eq!(
        h.ledger
            .finish_alert(&stale, &failed_once)
            .await
            .unwrap()
            .settled,
        Settled::NotHeld
    );
    let left = pending(&h).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].number, second.number);
    assert_eq!(left[0].attempts, 1);
    assert_eq!(
        left[0].last_error.as_deref(),
        Some("the receiver answered 500")
    );
    assert!(left[0].next_ms > h.now_ms() - 1000);

    // Due again after the wait; claimed again; given up on.
    h.advance(Duration::from_millis(400)).await;
    let due = h.ledger.alert_accounts_due(10).await.unwrap();
    assert_eq!(due, ["acct".to_owned()]);
    let claim = h.ledger.claim_alerts("acct", lease, 10).await.unwrap();
    assert_eq!(claim.alerts.len(), 1);
    assert_eq!(claim.alerts[0].attempts, 2);
    let give_up = Attempt::Failed {
        wait: Duration::from_millis(300),
        retry_for: Duration::from_millis(1),
        error: "no answer within 10s".into(),
    };
    let finished = h
        .ledger
        .finish_alert(&claim.alerts[0], &give_up)
        .await
        .unwrap();
    assert_eq!(finished.settled, Settled::GaveUp);
    h.ledger
        .index_alert_account("acct", finished.next_due_ms)
        .await
        .unwrap();
    assert!(pending(&h).await.is_empty());
    let failed = listed(&h, AlertState::Failed).await;
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].threshold_ppm, failed[0].attempts), (800_000, 2));
    // A failed alert is never claimed again.
    h.advance(Duration::from_millis(400)).await;
    assert!(h
        .ledger
        .claim_alerts("acct", lease, 10)
        .await
        .unwrap()
        .alerts
        .is_empty());
}

/// Redis only: a queue the index does not name (its hint was lost) is found
/// by the sweep, once per lease period across the fleet.
async fn the_sweep_finds_queues_the_index_missed(h: Harness) {
    assert!(admitted(&debit(&h, "a", 500).await));
    assert!(
        h.ledger.alert_accounts_due(10).await.unwrap().is_empty(),
        "no hint was given"
    );
    let every = Duration::from_secs(60);
    assert_eq!(h.ledger.sweep_alert_queues(every).await.unwrap(), Some(1));
    assert_eq!(
        h.ledger.alert_accounts_due(10).await.unwrap(),
        ["acct".to_owned()]
    );
    assert_eq!(
        h.ledger.sweep_alert_queues(every).await.unwrap(),
        None,
        "another sweep within the lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_the_sweep_finds_queues_the_index_missed() {
    the_sweep_finds_queues_the_index_missed(Harness::redis(Duration::from_millis(MONTH)).await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_the_sweep_finds_queues_the_index_missed() {
    the_sweep_finds_queues_the_index_missed(Harness::cluster(Duration::from_millis(MONTH)).await)
        .await;
}

/// A settlement above the reservation that takes `used` across a threshold
/// queues its alert in the same step; one below re-arms; a settlement made
/// without thresholds queues nothing.
async fn a_settlement_above_the_reservation_crosses_like_a_debit(h: Harness) {
    let alerts = SettleAlerts {
        thresholds: &THRESHOLDS,
        plans: &h.plans,
    };
    assert!(admitted(&debit(&h, "a", 400).await));
    let (outcome, queued) = h
        .ledger
        .settle_alerting("acct", "a", None, 600, &alerts)
        .await
        .unwrap();
    assert_eq!((outcome, queued), (SettleOutcome::Settled { used: 600 }, 1));
    assert_eq!(summary(&pending(&h).await), [(500_000, 600, 1000, 400)]);
    // Down below 0.5 again, then up across it once more.
    let (_, queued) = h
        .ledger
        .settle_alerting("acct", "a", None, 300, &alerts)
        .await
        .unwrap();
    assert_eq!(queued, 0);
    let (_, queued) = h
        .ledger
        .settle_alerting("acct", "a", None, 850, &alerts)
        .await
        .unwrap();
    assert_eq!(queued, 2, "0.5 and 0.8");
    // Without thresholds: nothing.
    assert!(admitted(&debit(&h, "b", 10).await)); // 860
    assert_eq!(
        h.ledger.settle("acct", "b", None, 150).await.unwrap(),
        SettleOutcome::Settled { used: 1000 }
    );
    assert_eq!(
        summary(&pending(&h).await),
        [
            (500_000, 600, 1000, 400),
            (500_000, 850, 1000, 150),
            (800_000, 850, 1000, 150)
        ]
    );
}
