//! The ledger at its numeric edges (docs/ledger.md, "Bounds and repair"),
//! on every backend: sums it cannot hold exactly are refused and never
//! stored, a settlement may overdraw the allowance without `available` ever
//! going negative, and an account whose stored totals are damaged is
//! reported as such and repaired by a recount.

use std::time::Duration;

use creditgate::ledger::bounds::MAX_CREDITS;
use creditgate::ledger::keys::AccountKeys;
use creditgate::ledger::{
    Debit, DebitOutcome, LedgerError, PlanTable, Recount, RefundOutcome, SettleOutcome,
};

use super::{admitted, Harness, MONTH, ONE_SECOND};
use crate::support::redis::RedisServer;

conformance! {
    a_cost_beyond_the_bound_is_rejected_and_never_stored: MONTH;
    an_allowance_beyond_the_bound_is_refused_before_anything_is_written: MONTH;
    a_settlement_beyond_the_bound_is_refused_and_the_reservation_stands: MONTH;
    a_settlement_above_the_reservation_may_overdraw_but_available_stays_zero: MONTH;
    a_recount_of_a_healthy_account_agrees_with_its_totals: ONE_SECOND;
    refunding_a_debit_that_already_left_the_window_changes_nothing: ONE_SECOND;
    settling_a_debit_that_already_left_the_window_changes_nothing: ONE_SECOND;
}

/// An account on a plan whose allowance is the bound itself.
async fn at_the_bound(h: &mut Harness) {
    h.plans.insert("max".into(), MAX_CREDITS);
    h.account("m", "max").await;
}

fn rejected_without_retry(outcome: &DebitOutcome) -> bool {
    matches!(
        outcome,
        DebitOutcome::Rejected {
            retry_after_ms: None,
            ..
        }
    )
}

async fn a_cost_beyond_the_bound_is_rejected_and_never_stored(mut h: Harness) {
    at_the_bound(&mut h).await;
    for cost in [MAX_CREDITS + 1, 1 << 53, i64::MAX as u64, u64::MAX] {
        let outcome = h.debit_as("m", &format!("over-{cost}"), cost).await;
        assert!(rejected_without_retry(&outcome), "cost {cost}: {outcome:?}");
    }
    assert_eq!(h.used("m").await, 0);
    // The bound itself fits exactly, and then nothing more does.
    match h.debit_as("m", "all", MAX_CREDITS).await {
        DebitOutcome::Admitted { window, .. } => assert_eq!(window.used, MAX_CREDITS),
        other => panic!("{other:?}"),
    }
    match h.debit_as("m", "one-more", 1).await {
        DebitOutcome::Rejected {
            window,
            retry_after_ms,
            ..
        } => {
            assert_eq!((window.used, window.available()), (MAX_CREDITS, 0));
            assert!(retry_after_ms.is_some(), "credits come back in a month");
        }
        other => panic!("{other:?}"),
    }
    let history = h.ledger.history("m", 50, None).await.unwrap();
    let costs: Vec<u64> = history.items.iter().map(|item| item.cost).collect();
    assert_eq!(costs, [MAX_CREDITS], "only the admitted debit is recorded");
}

async fn an_allowance_beyond_the_bound_is_refused_before_anything_is_written(h: Harness) {
    let mut plans: PlanTable = h.plans.clone();
    plans.insert("huge".into(), MAX_CREDITS + 1);
    let outcome = h
        .ledger
        .debit(&Debit {
            account: "acct",
            request_id: "r1",
            request_id_generated: false,
            fallback_request_id: "r1-fallback",
            route: "route-a",
            cost: 1,
            plans: &plans,
            alert_thresholds: &[],
            limits: &creditgate::ledger::NO_LIMITS,
        })
        .await;
    match outcome {
        Err(LedgerError::OutOfRange(message)) => assert!(message.contains("`huge`"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(h.used("acct").await, 0);
    assert!(h
        .ledger
        .history("acct", 50, None)
        .await
        .unwrap()
        .items
        .is_empty());
}

async fn a_settlement_beyond_the_bound_is_refused_and_the_reservation_stands(mut h: Harness) {
    at_the_bound(&mut h).await;
    assert!(admitted(&h.debit_as("m", "big", MAX_CREDITS - 10).await));
    assert!(admitted(&h.debit_as("m", "small", 10).await));
    assert_eq!(h.used("m").await, MAX_CREDITS);
    // The new total would be one credit past the bound.
    match h.ledger.settle("m", "small", None, 11).await {
        Err(LedgerError::OutOfRange(message)) => {
            assert!(message.contains("nothing was written"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A settled cost beyond the bound is refused before the ledger is asked.
    assert!(matches!(
        h.ledger.settle("m", "small", None, MAX_CREDITS + 1).await,
        Err(LedgerError::OutOfRange(_))
    ));
    assert_eq!(h.used("m").await, MAX_CREDITS, "the reservation stands");
    let history = h.ledger.history("m", 50, None).await.unwrap();
    let small = history
        .items
        .iter()
        .find(|i| i.request_id == "small")
        .unwrap();
    assert_eq!(small.cost, 10);
    // Below the bound, settling works as ever.
    assert_eq!(
        h.ledger.settle("m", "small", None, 4).await.unwrap(),
        SettleOutcome::Settled {
            used: MAX_CREDITS - 6
        }
    );
}

/// `settle.max` may exceed the reservation: the upstream did the work, so
/// the settled cost is charged even when it takes `used` past the
/// allowance. Then `available` is 0 (never negative), priced requests are
/// rejected until enough credits leave the window, and free ones pass.
async fn a_settlement_above_the_reservation_may_overdraw_but_available_stays_zero(h: Harness) {
    h.account("t", "tiny").await;
    assert!(admitted(&h.debit_as("t", "reserved", 8).await));
    assert!(admitted(&h.debit_as("t", "other", 2).await));
    assert_eq!(
        h.ledger.settle("t", "reserved", None, 15).await.unwrap(),
        SettleOutcome::Settled { used: 17 }
    );
    let balance = h
        .ledger
        .balance("t", &h.plans, &h.limits)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((balance.used, balance.allowance), (17, Some(10)));
    // What GET /v1/credits answers for it.
    let body = creditgate::api::balance_json("t", &balance);
    assert_eq!(body["used"], 17);
    assert_eq!(body["monthly_allowance"], 10);
    assert_eq!(body["available"], 0);
    match h.debit_as("t", "next", 1).await {
        DebitOutcome::Rejected {
            window,
            retry_after_ms,
            ..
        } => {
            assert_eq!((window.used, window.available()), (17, 0));
            // Once "reserved" leaves, 2 + 1 fits: there is a time.
            assert!(retry_after_ms.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert!(admitted(&h.debit_as("t", "free", 0).await));
    assert_eq!(
        h.ledger.refund("t", "reserved").await.unwrap(),
        RefundOutcome::Refunded
    );
    assert_eq!(h.used("t").await, 2);
    assert!(admitted(&h.debit_as("t", "fits", 8).await));
    assert_eq!(h.used("t").await, 10);
}

async fn a_recount_of_a_healthy_account_agrees_with_its_totals(h: Harness) {
    assert!(admitted(&h.debit("gone", 5).await));
    h.advance(Duration::from_millis(1_200)).await;
    for (id, cost) in [("a", 3), ("b", 4), ("c", 6)] {
        assert!(admitted(&h.debit(id, cost).await));
    }
    h.ledger.refund("acct", "b").await.unwrap();
    h.ledger.settle("acct", "c", None, 2).await.unwrap();
    let recount = h.ledger.recount("acct").await.unwrap().expect("account");
    assert_eq!(
        recount,
        Recount {
            previous_used: "5".into(),
            used: 5,
            counted: 2,
            voided: 0,
            changed: false,
        }
    );
    assert_eq!(h.used("acct").await, 5);
    assert_eq!(h.ledger.recount("nobody").await.unwrap(), None);
}

/// A debit that left the window was already given back by the window;
/// refunding it afterwards (an admin refund of an old request) must not
/// give it back a second time, nor keep it counted.
async fn refunding_a_debit_that_already_left_the_window_changes_nothing(h: Harness) {
    assert!(admitted(&h.debit("old", 3).await));
    h.advance(Duration::from_millis(1_200)).await;
    assert_eq!(
        h.ledger.refund("acct", "old").await.unwrap(),
        RefundOutcome::Refunded
    );
    assert_eq!(h.used("acct").await, 0);
    match h.debit("new", 10).await {
        DebitOutcome::Admitted { window, .. } => assert_eq!(window.used, 10),
        other => panic!("{other:?}"),
    }
}

/// Likewise a settlement that arrives after its reservation left the window
/// (a stream longer than the window): the history shows the settled cost,
/// the window, which no longer counts it, does not move.
async fn settling_a_debit_that_already_left_the_window_changes_nothing(h: Harness) {
    assert!(admitted(&h.debit("long", 8).await));
    h.advance(Duration::from_millis(1_200)).await;
    assert_eq!(
        h.ledger.settle("acct", "long", None, 3).await.unwrap(),
        SettleOutcome::Settled { used: 0 }
    );
    assert_eq!(h.used("acct").await, 0);
    let history = h.ledger.history("acct", 50, None).await.unwrap();
    assert_eq!(history.items[0].cost, 3);
    match h.debit("new", 10).await {
        DebitOutcome::Admitted { window, .. } => assert_eq!(window.used, 10),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Damaged totals, as an older build could leave them: written straight into a
// real Redis (one server, or the cluster node that owns the account's slot).
// The memory ledger keeps its totals in typed memory and cannot be damaged.

macro_rules! on_redis {
    ($($name:ident;)*) => {
        mod damaged_on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let harness = super::super::Harness::redis(std::time::Duration::from_millis(super::super::MONTH)).await;
                    super::$name(harness).await;
                }
            )*
        }
        mod damaged_on_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let harness = super::super::Harness::cluster(std::time::Duration::from_millis(super::super::MONTH)).await;
                    super::$name(harness).await;
                }
            )*
        }
    };
}

on_redis! {
    a_damaged_total_is_reported_and_a_recount_repairs_it;
    a_recount_voids_debits_it_cannot_count_and_refuses_totals_beyond_the_bound;
}

/// The Redis server holding `account`'s keys.
fn node_of<'h>(h: &'h Harness, account: &str) -> &'h RedisServer {
    if let Some(redis) = &h.redis {
        return redis;
    }
    let cluster = h.cluster.as_ref().expect("a Redis-backed harness");
    let slot = cluster.keyslot(&AccountKeys::new(account).account);
    &cluster.nodes[cluster.owner_of(slot)]
}

/// Runs one command with binary arguments on `node`.
fn command(node: &RedisServer, args: &[&[u8]]) -> ::redis::Value {
    let client = ::redis::Client::open(node.url()).expect("client");
    let mut connection = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect");
    let mut command = ::redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query(&mut connection).expect("command")
}

fn damaged_field(error: LedgerError, field: &str) {
    match error {
        LedgerError::Inconsistent(message) => {
            assert!(message.contains(&format!("`{field}`")), "{message}");
            assert!(
                message.contains("/admin/v1/accounts/acct/recount"),
                "{message}"
            );
        }
        other => panic!("expected the damage to be named, got {other:?}"),
    }
}

async fn a_damaged_total_is_reported_and_a_recount_repairs_it(h: Harness) {
    assert!(admitted(&h.debit("a", 3).await));
    assert!(admitted(&h.debit("b", 4).await));
    let keys = AccountKeys::new("acct");
    let node = node_of(&h, "acct");
    // What an older build stored after an unbounded cost: 2^63.
    node.cli(&["HSET", &keys.account, "used", "9223372036854775808"]);

    // Every path that computes with the total says what is wrong, instead
    // of failing on a reply it cannot read.
    damaged_field(
        h.ledger
            .balance("acct", &h.plans, &h.limits)
            .await
            .unwrap_err(),
        "used",
    );
    let fallback = "c-fallback";
    let debit = h
        .ledger
        .debit(&Debit {
            account: "acct",
            request_id: "c",
            request_id_generated: false,
            fallback_request_id: fallback,
            route: "route-a",
            cost: 1,
            plans: &h.plans,
            alert_thresholds: &[],
            limits: &h.limits,
        })
        .await;
    damaged_field(debit.unwrap_err(), "used");
    damaged_field(
        h.ledger.settle("acct", "a", None, 1).await.unwrap_err(),
        "used",
    );
    // A refund still marks its debit (the recount counts only what stands).
    assert_eq!(
        h.ledger.refund("acct", "b").await.unwrap(),
        RefundOutcome::Refunded
    );
    // Nothing was recorded meanwhile, and the stored total was left alone.
    assert_eq!(
        h.ledger
            .history("acct", 50, None)
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(
        node.cli(&["HGET", &keys.account, "used"]),
        "9223372036854775808"
    );

    let recount = h.ledger.recount("acct").await.unwrap().expect("account");
    assert_eq!(
        recount,
        Recount {
            previous_used: "9223372036854775808".into(),
            used: 3,
            counted: 1,
            voided: 0,
            changed: true,
        }
    );
    assert_eq!(h.used("acct").await, 3);
    match h.debit("d", 5).await {
        DebitOutcome::Admitted { window, .. } => assert_eq!(window.used, 8),
        other => panic!("{other:?}"),
    }

    // Any field of the bookkeeping: named, then repaired the same way.
    node.cli(&["HSET", &keys.account, "first", "not-a-time"]);
    damaged_field(
        h.ledger
            .balance("acct", &h.plans, &h.limits)
            .await
            .unwrap_err(),
        "first",
    );
    assert!(h.ledger.recount("acct").await.unwrap().unwrap().changed);
    assert_eq!(h.used("acct").await, 8);

    // The sweep schedule is no total: a bad one is taken as due and rewritten.
    node.cli(&["HSET", &keys.account, "sweep", "soon"]);
    assert!(admitted(&h.debit("e", 1).await));
    assert_ne!(node.cli(&["HGET", &keys.account, "sweep"]), "soon");
}

/// A window member in the debit record format (docs/ledger.md): a text id
/// (which, like any client id, also needs its entry in the id index).
fn member(id: &str, cost: u64, route: u64) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut n: u64) {
        loop {
            let low = (n % 128) as u8;
            n /= 128;
            if n == 0 {
                out.push(low);
                return;
            }
            out.push(low | 128);
        }
    }
    let mut bytes = vec![0];
    varint(&mut bytes, id.len() as u64);
    bytes.extend_from_slice(id.as_bytes());
    varint(&mut bytes, cost);
    varint(&mut bytes, route);
    bytes
}

async fn a_recount_voids_debits_it_cannot_count_and_refuses_totals_beyond_the_bound(h: Harness) {
    assert!(admitted(&h.debit("ok", 3).await));
    let keys = AccountKeys::new("acct");
    let node = node_of(&h, "acct");
    let now_ms = match node.cli_raw(&["TIME"]) {
        ::redis::Value::Array(parts) => {
            let part = |i: usize| match &parts[i] {
                ::redis::Value::BulkString(b) => {
                    std::str::from_utf8(b).unwrap().parse::<i64>().unwrap()
                }
                other => panic!("{other:?}"),
            };
            part(0) * 1000 + part(1) / 1000
        }
        other => panic!("{other:?}"),
    };
    let at = now_ms.to_string();
    // A debit an older build recorded with a cost no double holds exactly.
    let legacy = member("legacy", i64::MAX as u64, 1);
    command(
        node,
        &[b"ZADD", keys.window.as_bytes(), at.as_bytes(), &legacy],
    );
    node.cli(&["HSET", &keys.ids, "legacy", &at]);
    node.cli(&["HSET", &keys.account, "used", "9223372036854775810"]);

    let recount = h.ledger.recount("acct").await.unwrap().expect("account");
    assert_eq!((recount.used, recount.counted, recount.voided), (3, 1, 1));
    assert!(recount.changed);
    let history = h.ledger.history("acct", 50, None).await.unwrap();
    let voided = history
        .items
        .iter()
        .find(|i| i.request_id == "legacy")
        .unwrap();
    assert!(
        voided.refunded,
        "history keeps the voided debit, marked refunded"
    );
    assert_eq!(h.used("acct").await, 3);

    // Debits each within the bound but together beyond it: the recount
    // writes nothing and says so; refunding one through the admin path
    // (which works on a damaged account) lets the next recount through.
    for id in ["huge-1", "huge-2"] {
        let huge = member(id, 600_000_000_000_000, 1);
        command(
            node,
            &[b"ZADD", keys.window.as_bytes(), at.as_bytes(), &huge],
        );
        node.cli(&["HSET", &keys.ids, id, &at]);
    }
    node.cli(&["HSET", &keys.account, "used", "-1"]);
    match h.ledger.recount("acct").await {
        Err(LedgerError::OutOfRange(message)) => {
            assert!(message.contains("1200000000000003"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(node.cli(&["HGET", &keys.account, "used"]), "-1");
    assert_eq!(
        h.ledger.refund("acct", "huge-2").await.unwrap(),
        RefundOutcome::Refunded
    );
    let recount = h.ledger.recount("acct").await.unwrap().unwrap();
    assert_eq!((recount.used, recount.counted), (600_000_000_000_003, 2));
    assert_eq!(h.used("acct").await, 600_000_000_000_003);
}

/// A debit script call whose keys and arguments do not make whole debits
/// (a caller built for another layout, one key short) is refused at once
/// with an error naming the counts, and Redis stays responsive: the batch
/// loop would otherwise never finish and hold Redis busy for every client.
#[test]
fn a_debit_call_that_is_not_whole_debits_is_refused_at_once() {
    let node = RedisServer::start();
    let script = format!(
        "{}\n{}",
        include_str!("../../src/ledger/redis/lua/prelude.lua"),
        include_str!("../../src/ledger/redis/lua/debit.lua")
    );
    let keys = AccountKeys::new("acct");
    let client = ::redis::Client::open(node.url()).expect("client");
    let mut connection = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect");
    connection
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let packed = |byte: u8| [&[2u8][..], &[byte; 8][..]].concat();
    // Five keys and six debit arguments: the layout before alert queues.
    let reply: ::redis::RedisResult<String> = ::redis::cmd("EVAL")
        .arg(&script)
        .arg(5)
        .arg(&keys.account)
        .arg(&keys.window)
        .arg(&keys.ids)
        .arg(&keys.usage)
        .arg(&keys.grants)
        .arg(2_592_000_000u64)
        .arg(7_776_000_000u64)
        .arg(1)
        .arg("free")
        .arg(100)
        .arg("")
        .arg(1)
        .arg(packed(1))
        .arg(packed(2))
        .arg("")
        .arg("priced")
        .arg(0)
        .query(&mut connection);
    let error = reply.expect_err("a call that is not whole debits is refused");
    assert!(
        error.to_string().contains("are not whole debits"),
        "{error}"
    );
    assert_eq!(node.try_cli(&["PING"]).as_deref(), Ok("PONG"));
    assert_eq!(node.cli(&["EXISTS", &keys.window]), "0");
}
