//! Property test: the memory ledger against a model that sums the window
//! from scratch at every step (obviously right, and slow).

use std::sync::Arc;
use std::time::Duration;

use creditgate::clock::ManualClock;
use creditgate::ledger::{
    memory::MemoryLedger, AccountRecord, Debit, DebitOutcome, Ledger, PlanTable, RefundOutcome,
};
use proptest::prelude::*;

const WINDOW_MS: i64 = 10_000;
const ALLOWANCE: u64 = 50;

#[derive(Debug, Clone)]
enum Op {
    Debit(u64),
    Refund(usize),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..=20).prop_map(Op::Debit),
        1 => (0usize..40).prop_map(Op::Refund),
        3 => (0i64..4_000).prop_map(Op::Advance),
    ]
}

struct ModelDebit {
    id: String,
    at: i64,
    cost: u64,
    refunded: bool,
}

fn counted(debits: &[ModelDebit], now: i64) -> impl Iterator<Item = &ModelDebit> {
    debits
        .iter()
        .filter(move |d| !d.refunded && d.at > now - WINDOW_MS)
}

fn model_retry(debits: &[ModelDebit], now: i64, cost: u64) -> Option<u64> {
    if cost > ALLOWANCE {
        return None;
    }
    // Try every moment a debit leaves, in order; the first that fits wins.
    let mut leaves: Vec<i64> = counted(debits, now).map(|d| d.at + WINDOW_MS).collect();
    leaves.sort();
    leaves.into_iter().find_map(|t| {
        let used: u64 = counted(debits, t).map(|d| d.cost).sum();
        (used + cost <= ALLOWANCE).then_some((t - now) as u64)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn memory_ledger_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let clock = ManualClock::new(1_000_000);
            let ledger = Ledger::Memory(Arc::new(MemoryLedger::new(
                clock.clone(),
                Duration::from_millis(WINDOW_MS as u64),
                Duration::from_millis(WINDOW_MS as u64 * 10),
            )));
            let plans: PlanTable = [("p".to_owned(), ALLOWANCE)].into_iter().collect();
            ledger.put_account("a", &AccountRecord { plan: "p".into(), suspended: false }).await.unwrap();
            let mut model: Vec<ModelDebit> = Vec::new();
            for (step, op) in ops.into_iter().enumerate() {
                let now = clock.now_ms_for_test();
                match op {
                    Op::Advance(ms) => clock.advance_ms(ms),
                    Op::Refund(index) => {
                        let id = format!("d{index}");
                        let expected = match model.iter_mut().find(|d| d.id == id) {
                            None => RefundOutcome::Unknown,
                            Some(d) if d.refunded => RefundOutcome::AlreadyRefunded,
                            Some(d) => { d.refunded = true; RefundOutcome::Refunded }
                        };
                        prop_assert_eq!(ledger.refund("a", &id).await.unwrap(), expected);
                    }
                    Op::Debit(cost) => {
                        let id = format!("d{step}");
                        let used: u64 = counted(&model, now).map(|d| d.cost).sum();
                        let outcome = ledger.debit(&Debit {
                            account: "a", request_id: &id, request_id_generated: false, fallback_request_id: "unused",
                            route: "r", cost, plans: &plans, alert_thresholds: &[], limits: &creditgate::ledger::NO_LIMITS,
                        }).await.unwrap();
                        if used + cost <= ALLOWANCE {
                            let DebitOutcome::Admitted { window, .. } = outcome else {
                                return Err(TestCaseError::fail(format!("step {step}: expected admission, got {outcome:?}")));
                            };
                            if cost > 0 {
                                model.push(ModelDebit { id, at: now, cost, refunded: false });
                            }
                            prop_assert_eq!(window.used, used + cost);
                        } else {
                            let DebitOutcome::Rejected { window, retry_after_ms, .. } = outcome else {
                                return Err(TestCaseError::fail(format!("step {step}: expected rejection, got {outcome:?}")));
                            };
                            prop_assert_eq!(window.used, used);
                            prop_assert_eq!(retry_after_ms, model_retry(&model, now, cost));
                        }
                    }
                }
                let now = clock.now_ms_for_test();
                let balance = ledger.balance("a", &plans, &creditgate::ledger::NO_LIMITS).await.unwrap().unwrap();
                let used: u64 = counted(&model, now).map(|d| d.cost).sum();
                prop_assert_eq!(balance.used, used);
                let oldest = counted(&model, now).map(|d| d.at).min();
                prop_assert_eq!(balance.next_release.as_ref().map(|r| r.at_ms), oldest.map(|at| at + WINDOW_MS));
                let credits: u64 = counted(&model, now).filter(|d| Some(d.at) == oldest).map(|d| d.cost).sum();
                prop_assert_eq!(balance.next_release.map(|r| r.credits).unwrap_or(0), credits);
            }
            Ok(())
        })?;
    }
}

trait NowForTest {
    fn now_ms_for_test(&self) -> i64;
}

impl NowForTest for ManualClock {
    fn now_ms_for_test(&self) -> i64 {
        creditgate::clock::Clock::now_ms(self)
    }
}
