//! The usage aggregates and the account index on every backend
//! (docs/ledger.md, "Usage aggregates" and "The account index"): the report
//! is exact — every figure equals a brute-force sum over the debits — and
//! adds up to `used`; accounts are listed in id order with their balances.

mod model;
mod redis_model;

use std::collections::BTreeMap;
use std::time::Duration;

use creditgate::ledger::usage::{utc_day, Rebuilt, Usage};
use creditgate::ledger::{Debit, DebitOutcome, LedgerError, RefundOutcome, SettleOutcome};

use super::{Harness, MONTH, TWO_SECONDS};

conformance! {
    the_report_splits_credits_by_route_day_and_return_day: MONTH;
    the_report_follows_debits_out_of_the_window: TWO_SECONDS;
    the_report_of_an_unknown_account_is_none_and_a_recount_keeps_it: MONTH;
    accounts_are_listed_in_id_order_with_their_balances: MONTH;
}

/// A debit the test made, as the ledger recorded it.
#[derive(Debug, Clone)]
pub struct Known {
    pub id: String,
    pub at_ms: i64,
    pub route: String,
    pub cost: u64,
    pub refunded: bool,
}

/// What the aggregates must hold, summed from scratch over the debits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub used: u64,
    /// (UTC day, route) → (credits, debits).
    pub cells: BTreeMap<(i64, String), (u64, u64)>,
    /// UTC day the credits leave → credits.
    pub returning: BTreeMap<i64, u64>,
}

/// The brute-force sum: debits not refunded with `at > now − window`.
pub fn brute_force(debits: &[Known], now_ms: i64, window_ms: u64) -> Expected {
    let mut expected = Expected {
        used: 0,
        cells: BTreeMap::new(),
        returning: BTreeMap::new(),
    };
    for debit in debits {
        if debit.refunded || debit.at_ms <= now_ms - window_ms as i64 {
            continue;
        }
        expected.used += debit.cost;
        let cell = expected
            .cells
            .entry((utc_day(debit.at_ms), debit.route.clone()))
            .or_default();
        cell.0 += debit.cost;
        cell.1 += 1;
        if debit.cost > 0 {
            *expected
                .returning
                .entry(utc_day(debit.at_ms + window_ms as i64))
                .or_default() += debit.cost;
        }
    }
    expected
}

/// The report in the same shape, checked to add up to its own `used`.
pub fn observed(usage: &Usage) -> Expected {
    let cells: BTreeMap<(i64, String), (u64, u64)> = usage
        .spent
        .iter()
        .map(|cell| {
            (
                (cell.day, cell.route.clone()),
                (cell.credits, cell.requests),
            )
        })
        .collect();
    let returning: BTreeMap<i64, u64> = usage
        .returning
        .iter()
        .map(|day| (day.day, day.credits))
        .collect();
    let spent: u64 = cells.values().map(|cell| cell.0).sum();
    let leaving: u64 = returning.values().sum();
    assert_eq!(
        (spent, leaving),
        (usage.used, usage.used),
        "the report does not add up to used: {usage:?}"
    );
    Expected {
        used: usage.used,
        cells,
        returning,
    }
}

/// Debits `cost` on `route`; the admitted debit as recorded.
pub async fn debit_on(h: &Harness, account: &str, id: &str, route: &str, cost: u64) -> Known {
    let fallback = format!("{id}-fallback");
    let outcome = h
        .ledger
        .debit(&Debit {
            account,
            request_id: id,
            request_id_generated: false,
            fallback_request_id: &fallback,
            route,
            cost,
            plans: &h.plans,
            alert_thresholds: &[],
            limits: &h.limits,
        })
        .await
        .expect("debit");
    match outcome {
        DebitOutcome::Admitted {
            request_id, at_ms, ..
        } => Known {
            id: request_id,
            at_ms,
            route: route.to_owned(),
            cost,
            refunded: false,
        },
        other => panic!("debit {id} of {cost} on {route}: {other:?}"),
    }
}

async fn usage(h: &Harness, account: &str) -> Usage {
    h.ledger
        .usage(account, &h.plans)
        .await
        .expect("usage")
        .expect("the account exists")
}

async fn the_report_splits_credits_by_route_day_and_return_day(h: Harness) {
    h.account("u", "pro").await;
    let mut known = vec![
        debit_on(&h, "u", "img-1", "image-generate", 10).await,
        debit_on(&h, "u", "img-2", "image-generate", 10).await,
        debit_on(&h, "u", "vid-1", "video-generate", 30).await,
        debit_on(&h, "u", "agent-1", "agents", 5).await,
        debit_on(&h, "u", "agent-2", "agents", 5).await,
        debit_on(&h, "u", "img-3", "image-generate", 10).await,
    ];
    // A free route records nothing.
    let _ = h
        .ledger
        .debit(&Debit {
            account: "u",
            request_id: "free-1",
            request_id_generated: false,
            fallback_request_id: "free-1b",
            route: "status",
            cost: 0,
            plans: &h.plans,
            alert_thresholds: &[],
            limits: &h.limits,
        })
        .await
        .unwrap();
    // Settled down, settled up, refunded.
    for (index, id, cost) in [(3, "agent-1", 2), (4, "agent-2", 9)] {
        let settled = h.ledger.settle("u", id, None, cost).await.unwrap();
        assert!(
            matches!(settled, SettleOutcome::Settled { .. }),
            "{settled:?}"
        );
        known[index].cost = cost;
    }
    assert_eq!(
        h.ledger.refund("u", "img-3").await.unwrap(),
        RefundOutcome::Refunded
    );
    known[5].refunded = true;
    if !h.is_redis() {
        // Across a UTC day boundary (the memory ledger's clock can move a day).
        h.advance(Duration::from_secs(86_400)).await;
        known.push(debit_on(&h, "u", "img-4", "image-generate", 10).await);
        h.advance(Duration::from_secs(20 * 3_600)).await;
        known.push(debit_on(&h, "u", "vid-2", "video-generate", 30).await);
    }
    let report = usage(&h, "u").await;
    let expected = brute_force(&known, report.now_ms, MONTH);
    assert_eq!(observed(&report), expected);
    let balance = h
        .ledger
        .balance("u", &h.plans, &h.limits)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.used, balance.used);
    assert_eq!(report.allowance, Some(10_000));
    assert_eq!(report.window_ms, MONTH);
    assert_eq!(report.account.plan, "pro");
    let routes: Vec<&str> = report.spent.iter().map(|c| c.route.as_str()).collect();
    assert!(!routes.contains(&"status"), "cost-0 debits are not counted");
    if !h.is_redis() {
        let days: std::collections::BTreeSet<i64> = report.spent.iter().map(|c| c.day).collect();
        assert_eq!(days.len(), 3, "three UTC days: {report:?}");
    }
    assert_eq!(
        report.used,
        20 + 30 + 2 + 9 + if h.is_redis() { 0 } else { 40 }
    );
}

async fn the_report_follows_debits_out_of_the_window(h: Harness) {
    h.account("t", "tiny").await;
    let mut known = vec![debit_on(&h, "t", "a", "image-generate", 4).await];
    h.advance(Duration::from_millis(1_000)).await;
    known.push(debit_on(&h, "t", "b", "video-generate", 6).await);
    let report = usage(&h, "t").await;
    assert_eq!(
        observed(&report),
        brute_force(&known, report.now_ms, TWO_SECONDS)
    );
    assert_eq!(report.used, 10);
    // "a" leaves: only "b" remains, in every part of the report.
    h.advance(Duration::from_millis(1_100)).await;
    let report = usage(&h, "t").await;
    assert_eq!(
        observed(&report),
        brute_force(&known, report.now_ms, TWO_SECONDS)
    );
    assert_eq!(report.used, 6);
    let routes: Vec<&str> = report.spent.iter().map(|c| c.route.as_str()).collect();
    assert_eq!(routes, ["video-generate"]);
    // Refunding a debit that already left changes nothing.
    assert_eq!(
        h.ledger.refund("t", "a").await.unwrap(),
        RefundOutcome::Refunded
    );
    known[0].refunded = true;
    let report = usage(&h, "t").await;
    assert_eq!(report.used, 6);
    assert_eq!(
        observed(&report),
        brute_force(&known, report.now_ms, TWO_SECONDS)
    );
    // Everything left: an empty report.
    h.advance(Duration::from_millis(2_100)).await;
    let report = usage(&h, "t").await;
    assert_eq!(report.used, 0);
    assert!(report.spent.is_empty(), "{report:?}");
    assert!(report.returning.is_empty(), "{report:?}");
    // And a new debit starts from there.
    known.push(debit_on(&h, "t", "c", "agents", 3).await);
    let report = usage(&h, "t").await;
    assert_eq!(
        observed(&report),
        brute_force(&known, report.now_ms, TWO_SECONDS)
    );
    assert_eq!(report.used, 3);
}

async fn the_report_of_an_unknown_account_is_none_and_a_recount_keeps_it(h: Harness) {
    assert!(h.ledger.usage("nobody", &h.plans).await.unwrap().is_none());
    let known = vec![
        debit_on(&h, "acct", "x", "image-generate", 7).await,
        debit_on(&h, "acct", "y", "agents", 1).await,
    ];
    let before = usage(&h, "acct").await;
    let recount = h.ledger.recount("acct").await.unwrap().unwrap();
    assert!(!recount.changed, "{recount:?}");
    let after = usage(&h, "acct").await;
    assert_eq!(observed(&after), observed(&before));
    assert_eq!(observed(&after), brute_force(&known, after.now_ms, MONTH));
    assert_eq!(after.rebuilt, None);
}

async fn accounts_are_listed_in_id_order_with_their_balances(h: Harness) {
    // The harness made "acct" (small).
    for (id, plan) in [
        ("b", "free"),
        ("a-1", "tiny"),
        ("Z", "pro"),
        ("a.2", "free"),
        ("zz", "gold"),
    ] {
        h.account(id, plan).await;
    }
    debit_on(&h, "a-1", "d1", "image-generate", 4).await;
    debit_on(&h, "b", "d2", "image-generate", 60).await;
    let all = h.ledger.list_accounts(None, 500, &h.plans).await.unwrap();
    let ids: Vec<&str> = all.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["Z", "a-1", "a.2", "acct", "b", "zz"], "byte order");
    assert_eq!(all.next, None);
    let a1 = &all.items[1];
    assert_eq!(
        (a1.account.plan.as_str(), a1.allowance, a1.used),
        ("tiny", Some(10), Some(4))
    );
    let b = &all.items[4];
    assert_eq!((b.allowance, b.used), (Some(100), Some(60)));
    let zz = &all.items[5];
    assert_eq!((zz.allowance, zz.used), (None, Some(0)), "unknown plan");
    // Pages of two: no gaps, no duplicates, `next` until the end.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    for page_number in 0.. {
        assert!(page_number < 5, "too many pages");
        let page = h
            .ledger
            .list_accounts(after.as_deref(), 2, &h.plans)
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        paged.extend(page.items.iter().map(|i| i.id.clone()));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), page.items.last().map(|i| &i.id));
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(paged, ids);
    let rest = h
        .ledger
        .list_accounts(Some("zz"), 10, &h.plans)
        .await
        .unwrap();
    assert!(rest.items.is_empty() && rest.next.is_none(), "{rest:?}");
    let from_a = h
        .ledger
        .list_accounts(Some("a"), 2, &h.plans)
        .await
        .unwrap();
    let ids: Vec<&str> = from_a.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a-1", "a.2"]);
    assert_eq!(from_a.next.as_deref(), Some("a.2"));
    assert_eq!(h.ledger.reindex_accounts().await.unwrap(), 6);
}

// ---- Redis only: what the Redis layout adds. ----

/// Runs a command on the node that holds `key` (one Redis, or the cluster
/// node owning its slot).
fn on_key(h: &Harness, key: &str, args: &[&str]) -> String {
    if let Some(redis) = &h.redis {
        return redis.cli(args);
    }
    let cluster = h.cluster.as_ref().expect("a Redis harness");
    let node = cluster.owner_of(cluster.keyslot(key));
    cluster.nodes[node].cli(args)
}

async fn accounts_from_before_the_index_are_found_by_a_reindex(h: Harness) {
    h.account("listed", "small").await;
    // Accounts written by an older build: the hash only, no index entry.
    for id in ["old-1", "old-2", "zold"] {
        let key = format!("cg:{{{id}}}:a");
        on_key(&h, &key, &["HSET", &key, "plan", "small", "suspended", "0"]);
    }
    // An index entry whose account write never happened is skipped.
    on_key(&h, "cg:accounts", &["ZADD", "cg:accounts", "0", "ghost"]);
    let before = h.ledger.list_accounts(None, 500, &h.plans).await.unwrap();
    let ids: Vec<&str> = before.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["acct", "listed"]);
    // A page that meets the orphan reads on past it.
    let page = h
        .ledger
        .list_accounts(Some("acct"), 1, &h.plans)
        .await
        .unwrap();
    let ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["listed"]);
    assert_eq!(page.next, None);
    assert_eq!(h.ledger.reindex_accounts().await.unwrap(), 5);
    let after = h.ledger.list_accounts(None, 500, &h.plans).await.unwrap();
    let ids: Vec<&str> = after.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["acct", "listed", "old-1", "old-2", "zold"]);
    // A damaged account is listed, without a balance, and fails nothing.
    on_key(
        &h,
        "cg:{old-2}:a",
        &["HSET", "cg:{old-2}:a", "used", "not-a-number"],
    );
    let listed = h.ledger.list_accounts(None, 500, &h.plans).await.unwrap();
    let damaged = listed.items.iter().find(|i| i.id == "old-2").unwrap();
    assert_eq!((damaged.used, damaged.allowance), (None, Some(1000)));
}

async fn aggregates_missing_or_wrong_are_rebuilt_by_the_report(h: Harness) {
    let mut known = vec![
        debit_on(&h, "acct", "a", "image-generate", 10).await,
        debit_on(&h, "acct", "b", "agents", 3).await,
    ];
    // An account from before the aggregates: no `uw`, no hash.
    on_key(&h, "cg:{acct}:a", &["HDEL", "cg:{acct}:a", "uw"]);
    on_key(&h, "cg:{acct}:u", &["DEL", "cg:{acct}:u"]);
    known.push(debit_on(&h, "acct", "c", "image-generate", 10).await);
    assert_eq!(
        on_key(&h, "cg:{acct}:u", &["EXISTS", "cg:{acct}:u"]),
        "0",
        "aggregates are not kept while they would be partial"
    );
    let report = usage(&h, "acct").await;
    assert_eq!(report.rebuilt, Some(Rebuilt::NotKept));
    assert_eq!(observed(&report), brute_force(&known, report.now_ms, MONTH));
    // From then on they are kept.
    known.push(debit_on(&h, "acct", "d", "video-generate", 30).await);
    h.ledger.refund("acct", "a").await.unwrap();
    known[0].refunded = true;
    let report = usage(&h, "acct").await;
    assert_eq!(report.rebuilt, None);
    assert_eq!(observed(&report), brute_force(&known, report.now_ms, MONTH));
    // Aggregates that disagree with `used` are rebuilt, not shown.
    let day = utc_day(report.now_ms);
    let field = format!("c:{day}:1");
    on_key(&h, "cg:{acct}:u", &["HINCRBY", "cg:{acct}:u", &field, "5"]);
    let report = usage(&h, "acct").await;
    assert_eq!(report.rebuilt, Some(Rebuilt::Disagreed));
    assert_eq!(observed(&report), brute_force(&known, report.now_ms, MONTH));
    // Damaged totals: the report refuses, like the balance; a recount repairs.
    on_key(&h, "cg:{acct}:a", &["HSET", "cg:{acct}:a", "used", "12abc"]);
    match h.ledger.usage("acct", &h.plans).await {
        Err(LedgerError::Inconsistent(message)) => assert!(message.contains("used"), "{message}"),
        other => panic!("{other:?}"),
    }
    h.ledger.recount("acct").await.unwrap().unwrap();
    let report = usage(&h, "acct").await;
    assert_eq!(report.rebuilt, None, "the recount rebuilt them");
    assert_eq!(observed(&report), brute_force(&known, report.now_ms, MONTH));
}

async fn aggregates_stay_small(h: Harness) {
    for i in 0..200 {
        let route = ["image-generate", "video-generate", "agents"][i % 3];
        debit_on(&h, "acct", &format!("r{i}"), route, 1).await;
    }
    // One day, three routes: three credit fields and three count fields
    // (a 30-day window derives the return day) — whatever the number of debits.
    let fields: u64 = on_key(&h, "cg:{acct}:u", &["HLEN", "cg:{acct}:u"])
        .parse()
        .unwrap();
    assert!(
        (6..=12).contains(&fields),
        "{fields} fields (6, up to 12 across a midnight)"
    );
}

/// A report does not scan a large window on the request path: past the
/// limit it refuses (as for damaged totals) until the recount rebuilds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_rebuild_is_left_to_the_recount() {
    let redis = crate::support::redis::RedisServer::start();
    let ledger = creditgate::ledger::Ledger::Redis(std::sync::Arc::new(
        creditgate::ledger::redis::RedisLedger::connect(
            creditgate::ledger::redis::Target::Single(&redis.url()),
            Duration::from_millis(MONTH),
            Duration::from_millis(MONTH * 3),
            Duration::from_secs(2),
        )
        .await
        .unwrap()
        .with_rebuild_limit(3),
    ));
    let mut h = Harness::with(ledger, None, None).await;
    h.redis = Some(redis);
    let mut known = Vec::new();
    for i in 0..4 {
        known.push(debit_on(&h, "acct", &format!("d{i}"), "agents", 2).await);
    }
    on_key(&h, "cg:{acct}:a", &["HDEL", "cg:{acct}:a", "uw"]);
    match h.ledger.usage("acct", &h.plans).await {
        Err(LedgerError::Inconsistent(message)) => {
            assert!(message.contains("recount"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Debits go on meanwhile; the recount rebuilds, and the report answers.
    known.push(debit_on(&h, "acct", "d4", "agents", 2).await);
    h.ledger.recount("acct").await.unwrap().unwrap();
    let report = usage(&h, "acct").await;
    assert_eq!(report.rebuilt, None);
    assert_eq!(observed(&report), brute_force(&known, report.now_ms, MONTH));
    // Within the limit, the report rebuilds by itself.
    h.account("small", "small").await;
    let few = vec![debit_on(&h, "small", "s1", "agents", 5).await];
    on_key(&h, "cg:{small}:a", &["HDEL", "cg:{small}:a", "uw"]);
    let report = usage(&h, "small").await;
    assert_eq!(report.rebuilt, Some(Rebuilt::NotKept));
    assert_eq!(observed(&report), brute_force(&few, report.now_ms, MONTH));
}

macro_rules! redis_only {
    ($($name:ident;)*) => {
        mod redis_only {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let harness = super::Harness::redis(std::time::Duration::from_millis(super::MONTH)).await;
                    super::$name(harness).await;
                }
            )*
        }
        mod cluster_only {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let harness = super::Harness::cluster(std::time::Duration::from_millis(super::MONTH)).await;
                    super::$name(harness).await;
                }
            )*
        }
    };
}

redis_only! {
    accounts_from_before_the_index_are_found_by_a_reindex;
    aggregates_missing_or_wrong_are_rebuilt_by_the_report;
    aggregates_stay_small;
}
