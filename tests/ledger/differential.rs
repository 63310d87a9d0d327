//! Property test: the Redis ledger (packed records, batched calls) against
//! the memory ledger, operation by operation, within one window: outcomes,
//! totals and history must agree. Ids mix the gateway's packed form, client
//! text ids and reused ids; the plan has two extra windows, and prepaid
//! grants (with and without expiry) are created, spent, given back and
//! voided along the way. Time-driven behaviour is covered by the
//! conformance suite. Threshold alerts too: both queue the same alerts,
//! and exactly those a model derives from the debits' outcomes.

use std::sync::Arc;
use std::time::Duration;

use creditgate::clock::ManualClock;
use creditgate::ledger::{
    alerts::{crossed, AlertState},
    memory::MemoryLedger,
    redis::{RedisLedger, Target},
    AccountRecord, Debit, DebitOutcome, GrantCreated, Ledger, LimitTable, NewGrant, PlanTable,
    SettleAlerts, SettleOutcome,
};
use proptest::prelude::*;

use crate::support::redis::RedisServer;

#[derive(Debug, Clone)]
enum Op {
    /// Cost, id choice, route choice.
    Debit(u64, usize, usize),
    Refund(usize),
    Settle(usize, u64),
    /// Credits, expiry (0: never, else in that many days).
    Grant(u64, i64),
    /// The n-th grant (by number, modulo those made).
    Void(u64),
}

/// Packed (16 hex), text, upper-case hex (text) and a few reused ids.
const IDS: [&str; 8] = [
    "00000000000000ff",
    "ffffffffffffff00",
    "0123456789abcdef",
    "client-1",
    "client-2",
    "ABCDEF0123456789",
    "x",
    "a-much-longer-client-request-id-0123456789-0123456789-0123456789-0123456789",
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // An id choice past IDS is a fresh id the gateway generated.
        5 => (0u64..=300, 0usize..IDS.len() + 3, 0usize..3).prop_map(|(c, i, r)| Op::Debit(c, i, r)),
        1 => (0usize..64).prop_map(Op::Refund),
        1 => (0usize..64, 0u64..=500).prop_map(|(i, c)| Op::Settle(i, c)),
        1 => (1u64..=300, 0i64..4).prop_map(|(c, d)| Op::Grant(c, d)),
        1 => (0u64..8).prop_map(Op::Void),
    ]
}

async fn both(redis: &RedisServer, case: u64) -> (Ledger, Ledger, String) {
    let month = Duration::from_secs(30 * 86_400);
    let memory = Ledger::Memory(Arc::new(MemoryLedger::new(
        ManualClock::new(1_795_521_600_000),
        month,
        month * 3,
    )));
    let redis = Ledger::Redis(Arc::new(
        RedisLedger::connect(
            Target::Single(&redis.url()),
            month,
            month * 3,
            Duration::from_secs(2),
        )
        .await
        .unwrap(),
    ));
    let account = format!("case-{case}");
    let record = AccountRecord {
        plan: "p".into(),
        suspended: false,
    };
    for ledger in [&memory, &redis] {
        ledger.put_account(&account, &record).await.unwrap();
    }
    (memory, redis, account)
}

#[test]
fn redis_ledger_matches_the_memory_ledger() {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let case = std::sync::atomic::AtomicU64::new(0);
    let config = ProptestConfig::with_cases(48);
    proptest::test_runner::TestRunner::new(config)
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            runtime.block_on(check(&redis, case, ops));
            Ok(())
        })
        .unwrap();
}

async fn check(redis: &RedisServer, case: u64, ops: Vec<Op>) {
    let (memory, redis, account) = both(redis, case).await;
    let plans: PlanTable = [("p".to_owned(), 400)].into_iter().collect();
    let limits: LimitTable = [(
        "p".to_owned(),
        vec![
            crate::ledger::window_limit("1h", 3_600_000, 900),
            crate::ledger::window_limit("1d", 86_400_000, 1_500),
        ],
    )]
    .into_iter()
    .collect();
    let memory_now = 1_795_521_600_000i64;
    let mut grants_made = 0u64;
    let routes = ["image-generate", "video", "agents"];
    let mut ids: Vec<String> = IDS.iter().map(|id| id.to_string()).collect();
    // Thresholds at 100, 200, 320 and 400 credits: refunds re-arm them.
    let thresholds = [250_000, 500_000, 800_000, 1_000_000];
    let mut expected_alerts: Vec<(u32, u64)> = Vec::new();
    let mut used_before = 0;
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Debit(cost, choice, route) => {
                let fallback = format!("{:016x}", 0xf000 + step);
                let generated = choice >= IDS.len();
                let id = if generated {
                    let fresh = format!("{:016x}", 0xa000_0000 + step);
                    ids.push(fresh.clone());
                    fresh
                } else {
                    IDS[choice].to_owned()
                };
                let debit = Debit {
                    account: &account,
                    request_id: &id,
                    request_id_generated: generated,
                    fallback_request_id: &fallback,
                    route: routes[route],
                    cost,
                    plans: &plans,
                    alert_thresholds: &thresholds,
                    limits: &limits,
                };
                let (a, b) = (
                    memory.debit(&debit).await.unwrap(),
                    redis.debit(&debit).await.unwrap(),
                );
                match (&a, &b) {
                    (
                        DebitOutcome::Admitted {
                            request_id: x,
                            window: wx,
                            ..
                        },
                        DebitOutcome::Admitted {
                            request_id: y,
                            window: wy,
                            ..
                        },
                    ) => {
                        assert_eq!(x, y, "step {step} {op:?}");
                        // Release times follow each ledger's own clock.
                        let figures = |w: &creditgate::ledger::WindowState| {
                            let limits: Vec<u64> = w.limits.iter().map(|l| l.used).collect();
                            (w.used, w.grants, limits, w.available())
                        };
                        assert_eq!(figures(wx), figures(wy), "step {step} {op:?}");
                        // Only the allowance part counts in `used`.
                        for ppm in crossed(&thresholds, 400, used_before, wx.used) {
                            expected_alerts.push((ppm, wx.used));
                        }
                    }
                    (
                        DebitOutcome::Rejected {
                            window: wx,
                            retry_after_ms: rx,
                            limit: lx,
                        },
                        DebitOutcome::Rejected {
                            window: wy,
                            retry_after_ms: ry,
                            limit: ly,
                        },
                    ) => {
                        assert_eq!(wx.used, wy.used, "step {step} {op:?}");
                        assert_eq!(wx.grants, wy.grants, "step {step} {op:?}");
                        let used = |w: &creditgate::ledger::WindowState| {
                            w.limits.iter().map(|l| l.used).collect::<Vec<_>>()
                        };
                        assert_eq!(used(wx), used(wy), "step {step} {op:?}");
                        assert_eq!(lx, ly, "step {step} {op:?}");
                        assert_eq!(rx.is_some(), ry.is_some(), "step {step} {op:?}");
                    }
                    _ => panic!("step {step} {op:?}: memory {a:?}, redis {b:?}"),
                }
            }
            Op::Refund(id) => {
                let id = &ids[id % ids.len()];
                assert_eq!(
                    memory.refund(&account, id).await.unwrap(),
                    redis.refund(&account, id).await.unwrap(),
                    "step {step} {op:?}"
                )
            }
            Op::Settle(id, cost) => {
                let id = &ids[id % ids.len()];
                let alerts = SettleAlerts {
                    thresholds: &thresholds,
                    plans: &plans,
                };
                let (a, queued_a) = memory
                    .settle_alerting(&account, id, None, cost, &alerts)
                    .await
                    .unwrap();
                let (b, queued_b) = redis
                    .settle_alerting(&account, id, None, cost, &alerts)
                    .await
                    .unwrap();
                assert_eq!(queued_a, queued_b, "step {step} {op:?}");
                match (a, b) {
                    (SettleOutcome::Settled { used: x }, SettleOutcome::Settled { used: y }) => {
                        assert_eq!(x, y, "step {step} {op:?}");
                        for ppm in crossed(&thresholds, 400, used_before, x) {
                            expected_alerts.push((ppm, x));
                        }
                    }
                    (a, b) => assert_eq!(a, b, "step {step} {op:?}"),
                }
            }
            Op::Grant(credits, days) => {
                let expiry = (days > 0).then_some(days * 86_400_000);
                let redis_now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                let mut made = Vec::new();
                for (ledger, now) in [(&memory, memory_now), (&redis, redis_now)] {
                    let grant = NewGrant {
                        credits,
                        expires_at_ms: expiry.map(|e| now + e),
                        note: String::new(),
                    };
                    match ledger.create_grant(&account, &grant).await.unwrap() {
                        GrantCreated::Created(grant) => made.push(grant.grant_id),
                        other => panic!("step {step}: {other:?}"),
                    }
                }
                assert_eq!(made[0], made[1], "step {step}");
                grants_made += 1;
            }
            Op::Void(n) => {
                if grants_made > 0 {
                    let number = 1 + n % grants_made;
                    assert_eq!(
                        memory.void_grant(&account, number).await.unwrap(),
                        redis.void_grant(&account, number).await.unwrap(),
                        "step {step} {op:?}"
                    );
                }
            }
        }
        let (a, b) = (
            memory
                .balance(&account, &plans, &limits)
                .await
                .unwrap()
                .unwrap(),
            redis
                .balance(&account, &plans, &limits)
                .await
                .unwrap()
                .unwrap(),
        );
        assert_eq!(a.used, b.used, "step {step} {op:?}");
        used_before = a.used;
        let remaining = |b: &creditgate::ledger::Balance| {
            b.grants
                .iter()
                .map(|g| (g.grant_id.clone(), g.remaining))
                .collect::<Vec<_>>()
        };
        assert_eq!(remaining(&a), remaining(&b), "step {step} {op:?}");
        let used =
            |b: &creditgate::ledger::Balance| b.limits.iter().map(|l| l.used).collect::<Vec<_>>();
        assert_eq!(used(&a), used(&b), "step {step} {op:?}");
        assert_eq!(a.available(), b.available(), "step {step} {op:?}");
        assert_eq!(
            a.next_release.is_some(),
            b.next_release.is_some(),
            "step {step}"
        );
    }
    // History: the same debits (ids, costs, routes, refunds), newest first;
    // within one millisecond the backends may order ties differently.
    let key = |item: &creditgate::ledger::HistoryItem| {
        (
            item.request_id.clone(),
            item.cost,
            item.route.clone(),
            item.refunded,
            item.from_allowance,
            item.from_grants,
        )
    };
    let mut pages = Vec::new();
    for ledger in [&memory, &redis] {
        let mut items = Vec::new();
        let mut cursor = None;
        loop {
            let page = ledger.history(&account, 3, cursor.as_ref()).await.unwrap();
            items.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut keys: Vec<_> = items.iter().map(key).collect();
        keys.sort();
        pages.push(keys);
    }
    assert_eq!(pages[0], pages[1], "history differs after {ops:?}");
    // Alerts: the same queue in both, the one the model expects.
    redis.hint_alerts(&account).await.unwrap();
    let mut queues = Vec::new();
    for ledger in [&memory, &redis] {
        let list = ledger.list_alerts(AlertState::Pending, 1000).await.unwrap();
        let mut mine: Vec<_> = list
            .items
            .into_iter()
            .filter(|alert| alert.account == account)
            .collect();
        mine.sort_by_key(|alert| alert.number);
        let facts: Vec<(u64, u32, u64, u64, u64)> = mine
            .iter()
            .map(|a| {
                (
                    a.number,
                    a.threshold_ppm,
                    a.used,
                    a.monthly_allowance,
                    a.available,
                )
            })
            .collect();
        queues.push(facts);
    }
    assert_eq!(queues[0], queues[1], "alerts differ after {ops:?}");
    let model: Vec<(u32, u64)> = queues[0].iter().map(|q| (q.1, q.2)).collect();
    assert_eq!(model, expected_alerts, "alerts after {ops:?}");
}
