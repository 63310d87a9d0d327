//! Property test: the Redis ledger's usage aggregates (kept by the Lua
//! scripts) against a brute-force sum over every debit, after every step of
//! random debits on several routes, refunds, settlements up and down, and
//! real waits past a 1.2-second window (Redis reads its own clock, so time
//! moves for real; the at of each debit is the one the script recorded).
//! UTC midnights are crossed by the memory ledger's test (`model.rs`),
//! whose clock can move; the code that turns instants into days is shared.

use std::sync::Arc;
use std::time::Duration;

use creditgate::ledger::{
    redis::{RedisLedger, Target},
    AccountRecord, Debit, DebitOutcome, Ledger, PlanTable, RefundOutcome, SettleOutcome,
};
use proptest::prelude::*;

use super::{brute_force, observed, Known};
use crate::support::redis::RedisServer;

const WINDOW_MS: u64 = 1_200;
const ROUTES: [&str; 3] = ["image-generate", "video-generate", "agents"];

#[derive(Debug, Clone)]
enum Op {
    Debit(u64, usize),
    Refund(usize),
    Settle(usize, u64),
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..=40, 0usize..ROUTES.len()).prop_map(|(c, r)| Op::Debit(c, r)),
        1 => (0usize..64).prop_map(Op::Refund),
        1 => (0usize..64, 0u64..=80).prop_map(|(i, c)| Op::Settle(i, c)),
        2 => (0u64..=800).prop_map(Op::Wait),
    ]
}

#[test]
fn redis_aggregates_equal_a_brute_force_sum() {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ledger = runtime.block_on(async {
        Ledger::Redis(Arc::new(
            RedisLedger::connect(
                Target::Single(&redis.url()),
                Duration::from_millis(WINDOW_MS),
                Duration::from_millis(WINDOW_MS * 1000),
                Duration::from_secs(2),
            )
            .await
            .unwrap(),
        ))
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(16))
        .run(&proptest::collection::vec(op(), 1..25), |ops| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            runtime.block_on(check(&ledger, &format!("case-{case}"), &ops));
            Ok(())
        })
        .unwrap();
}

async fn check(ledger: &Ledger, account: &str, ops: &[Op]) {
    let plans: PlanTable = [("p".to_owned(), 600)].into_iter().collect();
    let record = AccountRecord {
        plan: "p".into(),
        suspended: false,
    };
    ledger.put_account(account, &record).await.unwrap();
    let mut model: Vec<Known> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::Debit(cost, route) => {
                let id = format!("d{step}");
                let outcome = ledger
                    .debit(&Debit {
                        account,
                        request_id: &id,
                        request_id_generated: false,
                        fallback_request_id: "unused",
                        route: ROUTES[route],
                        cost,
                        plans: &plans,
                        alert_thresholds: &[],
                        limits: &creditgate::ledger::NO_LIMITS,
                    })
                    .await
                    .unwrap();
                if let DebitOutcome::Admitted { at_ms, .. } = outcome {
                    if cost > 0 {
                        model.push(Known {
                            id,
                            at_ms,
                            route: ROUTES[route].into(),
                            cost,
                            refunded: false,
                        });
                    }
                }
            }
            Op::Refund(index) => {
                if model.is_empty() {
                    continue;
                }
                let count = model.len();
                let debit = &mut model[index % count];
                let outcome = ledger.refund(account, &debit.id).await.unwrap();
                let expected = if debit.refunded {
                    RefundOutcome::AlreadyRefunded
                } else {
                    RefundOutcome::Refunded
                };
                assert_eq!(outcome, expected, "{account} step {step}");
                debit.refunded = true;
            }
            Op::Settle(index, cost) => {
                if model.is_empty() {
                    continue;
                }
                let count = model.len();
                let debit = &mut model[index % count];
                match ledger
                    .settle(account, &debit.id, Some(debit.at_ms), cost)
                    .await
                    .unwrap()
                {
                    SettleOutcome::Settled { .. } => {
                        assert!(!debit.refunded, "{account} step {step}");
                        debit.cost = cost;
                    }
                    SettleOutcome::Refunded => assert!(debit.refunded, "{account} step {step}"),
                    SettleOutcome::Unknown => panic!("{account} step {step}: unknown debit"),
                }
            }
        }
        let usage = ledger.usage(account, &plans).await.unwrap().unwrap();
        assert_eq!(
            usage.rebuilt, None,
            "{account} step {step}: kept, never rebuilt"
        );
        assert_eq!(
            observed(&usage),
            brute_force(&model, usage.now_ms, WINDOW_MS),
            "{account} step {step} {op:?} after {ops:?}"
        );
    }
}
