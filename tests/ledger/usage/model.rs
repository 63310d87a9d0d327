//! Property test: the memory ledger's usage aggregates against a brute-force
//! sum over every debit, after every step of random debits on several
//! routes, refunds, settlements (up and down) and clock moves across UTC
//! midnights and past the window. The window is not a whole number of days,
//! so the day a credit comes back is not its debit's day plus a constant.

use std::sync::Arc;
use std::time::Duration;

use creditgate::clock::{Clock, ManualClock};
use creditgate::ledger::{
    memory::MemoryLedger, AccountRecord, Debit, DebitOutcome, Ledger, PlanTable, RefundOutcome,
    SettleOutcome,
};
use proptest::prelude::*;

use super::{brute_force, observed, Known};

const HOUR_MS: i64 = 3_600_000;
/// 2 days, 7 hours and 13 seconds.
const WINDOW_MS: i64 = 55 * HOUR_MS + 13_000;
/// 2026-11-24T22:30:00Z: the first midnight is near.
const START_MS: i64 = 1_795_559_400_000;
const ROUTES: [&str; 3] = ["image-generate", "video-generate", "agents"];

#[derive(Debug, Clone)]
pub enum Op {
    /// Cost, route.
    Debit(u64, usize),
    Refund(usize),
    /// Which debit, its settled cost.
    Settle(usize, u64),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u64..=40, 0usize..ROUTES.len()).prop_map(|(c, r)| Op::Debit(c, r)),
        1 => (0usize..64).prop_map(Op::Refund),
        1 => (0usize..64, 0u64..=80).prop_map(|(i, c)| Op::Settle(i, c)),
        3 => prop_oneof![0i64..60_000, 0i64..30 * HOUR_MS].prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn memory_aggregates_equal_a_brute_force_sum(ops in proptest::collection::vec(op(), 1..80)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let clock = ManualClock::new(START_MS);
            let ledger = Ledger::Memory(Arc::new(MemoryLedger::new(
                clock.clone(),
                Duration::from_millis(WINDOW_MS as u64),
                Duration::from_millis(WINDOW_MS as u64 * 1000),
            )));
            let plans: PlanTable = [("p".to_owned(), 600)].into_iter().collect();
            ledger.put_account("a", &AccountRecord { plan: "p".into(), suspended: false }).await.unwrap();
            let mut model: Vec<Known> = Vec::new();
            for (step, op) in ops.iter().enumerate() {
                match *op {
                    Op::Advance(ms) => clock.advance_ms(ms),
                    Op::Debit(cost, route) => {
                        let id = format!("d{step}");
                        let outcome = ledger.debit(&Debit {
                            account: "a", request_id: &id, request_id_generated: false,
                            fallback_request_id: "unused", route: ROUTES[route], cost, plans: &plans, alert_thresholds: &[], limits: &creditgate::ledger::NO_LIMITS,
                        }).await.unwrap();
                        if let DebitOutcome::Admitted { at_ms, .. } = outcome {
                            if cost > 0 {
                                model.push(Known { id, at_ms, route: ROUTES[route].into(), cost, refunded: false });
                            }
                        }
                    }
                    Op::Refund(index) => {
                        if model.is_empty() { continue; }
                        let count = model.len();
                let debit = &mut model[index % count];
                        let outcome = ledger.refund("a", &debit.id).await.unwrap();
                        let expected = if debit.refunded { RefundOutcome::AlreadyRefunded } else { RefundOutcome::Refunded };
                        prop_assert_eq!(outcome, expected, "step {}", step);
                        debit.refunded = true;
                    }
                    Op::Settle(index, cost) => {
                        if model.is_empty() { continue; }
                        let count = model.len();
                let debit = &mut model[index % count];
                        match ledger.settle("a", &debit.id, Some(debit.at_ms), cost).await.unwrap() {
                            SettleOutcome::Settled { .. } => {
                                prop_assert!(!debit.refunded, "step {}", step);
                                debit.cost = cost;
                            }
                            SettleOutcome::Refunded => prop_assert!(debit.refunded, "step {}", step),
                            SettleOutcome::Unknown => prop_assert!(false, "step {}: unknown debit", step),
                        }
                    }
                }
                let now = clock.now_ms();
                let usage = ledger.usage("a", &plans).await.unwrap().unwrap();
                prop_assert_eq!(usage.now_ms, now);
                prop_assert_eq!(observed(&usage), brute_force(&model, now, WINDOW_MS as u64), "step {} {:?}", step, op);
            }
            Ok(())
        })?;
    }
}
