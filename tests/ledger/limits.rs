//! Conformance for extra windows and prepaid grants, on memory, Redis and
//! Redis Cluster (docs/ledger.md, "Extra windows" and "Prepaid grants").
//! Plans of the harness: `capped` (100 credits, at most 10 in any 2 s),
//! `boosted` (5 credits, at most 10 in 2 s and 12 in 1 h), `tiny` (10).

use std::time::Duration;

use creditgate::ledger::{
    AccountRecord, Balance, DebitOutcome, GrantCreated, GrantVoided, NewGrant, RefundOutcome,
    SettleOutcome, WindowState,
};

use super::{admitted, Harness};

const HOUR: u64 = 3_600_000;

conformance! {
    extra_windows_stop_a_burst_and_name_the_window: HOUR;
    a_window_new_to_the_account_is_built_from_its_debits: HOUR;
    grants_are_spent_after_the_allowance_soonest_expiry_first: HOUR;
    refunds_and_settlements_give_back_last_taken_first: HOUR;
    expired_grants_are_not_spent_and_get_nothing_back: HOUR;
    short_windows_count_what_grants_paid: HOUR;
    grants_are_created_listed_and_voided: HOUR;
    the_usage_report_counts_whole_costs_and_returns_the_allowance_part: HOUR;
}

fn window_of(outcome: &DebitOutcome) -> &WindowState {
    match outcome {
        DebitOutcome::Admitted { window, .. } | DebitOutcome::Rejected { window, .. } => window,
        other => panic!("no window in {other:?}"),
    }
}

async fn balance(h: &Harness, account: &str) -> Balance {
    h.ledger
        .balance(account, &h.plans, &h.limits)
        .await
        .expect("balance")
        .expect("account")
}

async fn grant(h: &Harness, account: &str, credits: u64, expires_in_ms: Option<i64>) -> String {
    let expires_at_ms = expires_in_ms.map(|ms| h.now_ms() + ms);
    match h
        .ledger
        .create_grant(
            account,
            &NewGrant {
                credits,
                expires_at_ms,
                note: format!("{credits} credits"),
            },
        )
        .await
        .expect("create_grant")
    {
        GrantCreated::Created(grant) => {
            assert_eq!((grant.credits, grant.remaining), (credits, credits));
            grant.grant_id
        }
        other => panic!("{other:?}"),
    }
}

/// Grant id → remaining, as `/v1/credits` lists them (live, with credits).
async fn live_grants(h: &Harness, account: &str) -> Vec<(String, u64)> {
    balance(h, account)
        .await
        .grants
        .into_iter()
        .map(|g| (g.grant_id, g.remaining))
        .collect()
}

async fn extra_windows_stop_a_burst_and_name_the_window(h: Harness) {
    h.account("c", "capped").await;
    let first = h.debit_as("c", "b1", 4).await;
    assert!(admitted(&first));
    let window = window_of(&first);
    assert_eq!(window.limits.len(), 1);
    assert_eq!(
        (window.limits[0].name.as_str(), window.limits[0].used),
        ("2s", 4)
    );
    assert!(admitted(&h.debit_as("c", "b2", 4).await));
    // 8 of the 2 s window's 10 are used: a cost of 4 is refused by it,
    // though the 30-day window has 92 left.
    let refused = h.debit_as("c", "b3", 4).await;
    let DebitOutcome::Rejected {
        window,
        retry_after_ms,
        limit,
    } = &refused
    else {
        panic!("{refused:?}")
    };
    assert_eq!(*limit, Some(0), "the 2 s window refused");
    assert_eq!((window.used, window.limits[0].used), (8, 8));
    assert_eq!(window.available(), 2, "the least any window leaves");
    let retry = retry_after_ms.expect("the 2 s window frees up");
    assert!((1..=2_000).contains(&retry), "{retry}");
    // More than the whole window: no retry time.
    let DebitOutcome::Rejected {
        retry_after_ms: None,
        limit: Some(0),
        ..
    } = h.debit_as("c", "b4", 11).await
    else {
        panic!("a cost above the 2 s window's whole 10")
    };
    // Nothing was recorded by the refusals.
    let b = balance(&h, "c").await;
    assert_eq!((b.used, b.limits[0].used, b.limits[0].credits), (8, 8, 10));
    assert_eq!(b.available(), Some(2));
    // A refund leaves every window.
    assert_eq!(
        h.ledger.refund("c", "b1").await.unwrap(),
        RefundOutcome::Refunded
    );
    assert_eq!(balance(&h, "c").await.limits[0].used, 4);
    assert!(admitted(&h.debit_as("c", "b5", 6).await));
    assert!(!admitted(&h.debit_as("c", "b6", 1).await));
    // Once the 2 s have passed the burst's credits are back in that window,
    // but still count in the 30-day one.
    h.advance(Duration::from_millis(2_100)).await;
    let later = h.debit_as("c", "b7", 10).await;
    assert!(admitted(&later), "{later:?}");
    let window = window_of(&later);
    assert_eq!((window.used, window.limits[0].used), (20, 10));
}

async fn a_window_new_to_the_account_is_built_from_its_debits(h: Harness) {
    h.account("n", "small").await;
    for i in 0..3 {
        assert!(admitted(&h.debit_as("n", &format!("n{i}"), 3).await));
    }
    assert!(balance(&h, "n").await.limits.is_empty());
    // The plan change brings a 2 s window: its total comes from the debits
    // already in it, at once, and the next debit is held to it.
    h.ledger
        .put_account(
            "n",
            &AccountRecord {
                plan: "capped".into(),
                suspended: false,
            },
        )
        .await
        .unwrap();
    let refused = h.debit_as("n", "n3", 2).await;
    assert!(
        matches!(refused, DebitOutcome::Rejected { limit: Some(0), .. }),
        "{refused:?}"
    );
    assert_eq!(window_of(&refused).limits[0].used, 9);
    assert!(admitted(&h.debit_as("n", "n4", 1).await));
    // Away and back: the window is dropped, then rebuilt with what counts.
    for plan in ["small", "capped"] {
        h.ledger
            .put_account(
                "n",
                &AccountRecord {
                    plan: plan.into(),
                    suspended: false,
                },
            )
            .await
            .unwrap();
        assert!(admitted(&h.debit_as("n", &format!("to-{plan}"), 0).await));
    }
    let b = balance(&h, "n").await;
    assert_eq!((b.used, b.limits[0].used), (10, 10));
}

async fn grants_are_spent_after_the_allowance_soonest_expiry_first(h: Harness) {
    h.account("g", "tiny").await;
    let day = 86_400_000;
    let never = grant(&h, "g", 7, None).await;
    let later = grant(&h, "g", 5, Some(10 * day)).await;
    let sooner = grant(&h, "g", 3, Some(5 * day)).await;
    assert_eq!(
        live_grants(&h, "g").await,
        vec![(sooner.clone(), 3), (later.clone(), 5), (never.clone(), 7)],
        "listed in spending order"
    );
    // The allowance first.
    let first = h.debit_as("g", "g1", 8).await;
    assert!(admitted(&first));
    assert_eq!((window_of(&first).used, window_of(&first).grants), (8, 15));
    assert_eq!(window_of(&first).available(), 2 + 15);
    h.advance(Duration::from_millis(2)).await;
    // 2 from the allowance, then 3 from the soonest expiry, 1 from the next.
    let split = h.debit_as("g", "g2", 6).await;
    assert!(admitted(&split), "{split:?}");
    assert_eq!((window_of(&split).used, window_of(&split).grants), (10, 11));
    assert_eq!(
        live_grants(&h, "g").await,
        vec![(later.clone(), 4), (never.clone(), 7)]
    );
    let history = h.ledger.history("g", 10, None).await.unwrap().items;
    let g2 = history.iter().find(|i| i.request_id == "g2").unwrap();
    assert_eq!((g2.cost, g2.from_allowance, g2.from_grants), (6, 2, 4));
    let g1 = history.iter().find(|i| i.request_id == "g1").unwrap();
    assert_eq!((g1.from_allowance, g1.from_grants), (8, 0));
    // 11 left in grants, none in the allowance: 12 is refused, and it would
    // fit once the first debit's 8 allowance credits leave the window.
    let refused = h.debit_as("g", "g3", 12).await;
    let DebitOutcome::Rejected {
        retry_after_ms: Some(retry),
        limit: None,
        ..
    } = refused
    else {
        panic!("{refused:?}")
    };
    assert!(retry > HOUR - 60_000 && retry <= HOUR, "{retry}");
    // More than the allowance and every grant together: never.
    assert!(matches!(
        h.debit_as("g", "g4", 10 + 11 + 1).await,
        DebitOutcome::Rejected {
            retry_after_ms: None,
            ..
        }
    ));
    // Exactly what the grants hold.
    assert!(admitted(&h.debit_as("g", "g5", 11).await));
    assert!(live_grants(&h, "g").await.is_empty());
    let b = balance(&h, "g").await;
    assert_eq!((b.used, b.available()), (10, Some(0)));
    // The 30-day window counts only the allowance part: used stays 10 and
    // next_release gives back the first debit's 8.
    assert_eq!(b.next_release.unwrap().credits, 8);
}

async fn refunds_and_settlements_give_back_last_taken_first(h: Harness) {
    h.account("r", "tiny").await;
    let a = grant(&h, "r", 4, Some(86_400_000)).await;
    let b = grant(&h, "r", 10, None).await;
    assert!(admitted(&h.debit_as("r", "r1", 7).await));
    // 3 from the allowance, 4 from a, 2 from b.
    assert!(admitted(&h.debit_as("r", "r2", 9).await));
    assert_eq!(live_grants(&h, "r").await, vec![(b.clone(), 8)]);
    // Settled at 4: 5 come back, last taken first — b's 2, a's 3.
    let settled = h.ledger.settle("r", "r2", None, 4).await.unwrap();
    assert_eq!(settled, SettleOutcome::Settled { used: 10 });
    assert_eq!(
        live_grants(&h, "r").await,
        vec![(a.clone(), 3), (b.clone(), 10)]
    );
    let item = |items: &[creditgate::ledger::HistoryItem], id: &str| {
        let i = items.iter().find(|i| i.request_id == id).unwrap().clone();
        (i.cost, i.from_allowance, i.from_grants, i.refunded)
    };
    let history = h.ledger.history("r", 10, None).await.unwrap().items;
    assert_eq!(item(&history, "r2"), (4, 3, 1, false));
    // Refunded: a's last credit goes back, and the 3 allowance credits leave
    // the window.
    assert_eq!(
        h.ledger.refund("r", "r2").await.unwrap(),
        RefundOutcome::Refunded
    );
    assert_eq!(h.used("r").await, 7);
    assert_eq!(
        live_grants(&h, "r").await,
        vec![(a.clone(), 4), (b.clone(), 10)]
    );
    let history = h.ledger.history("r", 10, None).await.unwrap().items;
    assert_eq!(item(&history, "r2"), (4, 3, 1, true));
    // A second refund changes nothing.
    assert_eq!(
        h.ledger.refund("r", "r2").await.unwrap(),
        RefundOutcome::AlreadyRefunded
    );
    assert_eq!(live_grants(&h, "r").await.len(), 2);
    assert_eq!(h.used("r").await, 7);
    // A settlement above the reservation is charged to the allowance part.
    assert!(admitted(&h.debit_as("r", "r3", 5).await));
    assert_eq!(
        live_grants(&h, "r").await,
        vec![(a.clone(), 2), (b.clone(), 10)]
    );
    assert_eq!(
        h.ledger.settle("r", "r3", None, 8).await.unwrap(),
        SettleOutcome::Settled { used: 13 }
    );
    let history = h.ledger.history("r", 10, None).await.unwrap().items;
    assert_eq!(item(&history, "r3"), (8, 6, 2, false));
}

async fn expired_grants_are_not_spent_and_get_nothing_back(h: Harness) {
    h.account("x", "tiny").await;
    assert!(admitted(&h.debit_as("x", "x1", 10).await));
    let soon = grant(&h, "x", 50, Some(1_500)).await;
    assert!(admitted(&h.debit_as("x", "x2", 20).await));
    assert_eq!(live_grants(&h, "x").await, vec![(soon.clone(), 30)]);
    h.advance(Duration::from_millis(1_600)).await;
    assert!(live_grants(&h, "x").await.is_empty(), "expired");
    let refused = h.debit_as("x", "x3", 1).await;
    assert!(
        matches!(refused, DebitOutcome::Rejected { limit: None, .. }),
        "{refused:?}"
    );
    assert_eq!(window_of(&refused).grants, 0);
    // The refund finds the grant expired: its 20 are gone.
    assert_eq!(
        h.ledger.refund("x", "x2").await.unwrap(),
        RefundOutcome::Refunded
    );
    let list = h.ledger.grants("x").await.unwrap().unwrap();
    assert_eq!(list.grants.len(), 1);
    assert_eq!(
        (list.grants[0].remaining, list.grants[0].voided),
        (30, false)
    );
    assert!(list.grants[0].expires_at_ms.unwrap() <= list.now_ms);
    assert_eq!(balance(&h, "x").await.available(), Some(0));
    // A grant that would start expired is refused.
    let past = h
        .ledger
        .create_grant(
            "x",
            &NewGrant {
                credits: 5,
                expires_at_ms: Some(h.now_ms() - 1),
                note: String::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(past, GrantCreated::AlreadyExpired);
    assert_eq!(h.ledger.grants("x").await.unwrap().unwrap().grants.len(), 1);
}

async fn short_windows_count_what_grants_paid(h: Harness) {
    h.account("s", "boosted").await;
    grant(&h, "s", 100, None).await;
    // 5 from the allowance, 3 from the grant: all 8 count in both windows.
    let first = h.debit_as("s", "s1", 8).await;
    assert!(admitted(&first));
    let window = window_of(&first);
    assert_eq!(window.used, 5);
    assert_eq!(
        window
            .limits
            .iter()
            .map(|l| (l.name.as_str(), l.used))
            .collect::<Vec<_>>(),
        vec![("2s", 8), ("1h", 8)]
    );
    assert_eq!(window.available(), 2, "the 2 s window leaves 2");
    // The grant holds 97, but the 2 s window refuses 3.
    let refused = h.debit_as("s", "s2", 3).await;
    assert!(
        matches!(refused, DebitOutcome::Rejected { limit: Some(0), .. }),
        "{refused:?}"
    );
    h.advance(Duration::from_millis(2_100)).await;
    // The 2 s window is free again; the hour leaves 4: refused by the hour,
    // with no retry within this test's patience but one within the hour.
    let refused = h.debit_as("s", "s3", 5).await;
    let DebitOutcome::Rejected {
        limit: Some(1),
        retry_after_ms: Some(retry),
        ..
    } = refused
    else {
        panic!("{refused:?}")
    };
    assert!(retry > HOUR - 60_000 && retry <= HOUR, "{retry}");
    assert!(admitted(&h.debit_as("s", "s4", 4).await));
    let b = balance(&h, "s").await;
    assert_eq!(
        (
            b.used,
            b.limits[0].used,
            b.limits[1].used,
            b.grants[0].remaining
        ),
        (5, 4, 12, 100 - 3 - 4)
    );
    assert_eq!(b.available(), Some(0));
}

async fn grants_are_created_listed_and_voided(h: Harness) {
    h.account("v", "tiny").await;
    let no_account = h
        .ledger
        .create_grant(
            "nobody",
            &NewGrant {
                credits: 5,
                expires_at_ms: None,
                note: String::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(no_account, GrantCreated::NoAccount);
    assert!(h.ledger.grants("nobody").await.unwrap().is_none());
    let first = grant(&h, "v", 5, None).await;
    let second = grant(&h, "v", 9, None).await;
    assert_ne!(first, second);
    let list = h.ledger.grants("v").await.unwrap().unwrap();
    assert_eq!(
        list.grants
            .iter()
            .map(|g| (g.grant_id.clone(), g.remaining, g.note.clone()))
            .collect::<Vec<_>>(),
        vec![
            (first.clone(), 5, "5 credits".to_owned()),
            (second.clone(), 9, "9 credits".to_owned())
        ],
        "never-expiring grants in the order they were made"
    );
    // 10 from the allowance, 5 from the first grant.
    assert!(admitted(&h.debit_as("v", "v1", 15).await));
    assert_eq!(live_grants(&h, "v").await, vec![(second.clone(), 9)]);
    let number = creditgate::ledger::grant_number(&second).unwrap();
    assert_eq!(
        h.ledger.void_grant("v", number).await.unwrap(),
        GrantVoided::Voided(9)
    );
    assert_eq!(
        h.ledger.void_grant("v", number).await.unwrap(),
        GrantVoided::Voided(0),
        "voiding twice voids nothing more"
    );
    assert_eq!(
        h.ledger.void_grant("v", number + 100).await.unwrap(),
        GrantVoided::Unknown
    );
    assert!(live_grants(&h, "v").await.is_empty());
    assert!(!admitted(&h.debit_as("v", "v2", 1).await));
    // A refund does not bring a voided grant back to life.
    assert!(h.ledger.grants("v").await.unwrap().unwrap().grants[1].voided);
    assert_eq!(
        h.ledger.refund("v", "v1").await.unwrap(),
        RefundOutcome::Refunded
    );
    assert_eq!(live_grants(&h, "v").await, vec![(first.clone(), 5)]);
    assert_eq!(h.used("v").await, 0);
}

async fn the_usage_report_counts_whole_costs_and_returns_the_allowance_part(h: Harness) {
    h.account("u", "tiny").await;
    grant(&h, "u", 100, None).await;
    for (id, cost) in [("u1", 6), ("u2", 9), ("u3", 12)] {
        assert!(admitted(&h.debit_as("u", id, cost).await));
    }
    assert_eq!(
        h.ledger.settle("u", "u3", None, 8).await.unwrap(),
        SettleOutcome::Settled { used: 10 }
    );
    let check = |usage: &creditgate::ledger::usage::Usage, used: u64, from_grants: u64| {
        let spent: u64 = usage.spent.iter().map(|c| c.credits).sum();
        let returning: u64 = usage.returning.iter().map(|d| d.credits).sum();
        assert_eq!((usage.used, usage.from_grants), (used, from_grants));
        assert_eq!(
            spent,
            used + from_grants,
            "by day and route: the whole costs"
        );
        assert_eq!(returning, used, "only the allowance part comes back");
    };
    let usage = h.ledger.usage("u", &h.plans).await.unwrap().unwrap();
    // 6 + 9 + 8 spent: 10 by the allowance, 13 by the grant.
    check(&usage, 10, 13);
    assert_eq!(
        h.ledger.refund("u", "u2").await.unwrap(),
        RefundOutcome::Refunded
    );
    let usage = h.ledger.usage("u", &h.plans).await.unwrap().unwrap();
    check(&usage, 6, 8);
    // The recount rebuilds the same aggregates.
    h.ledger.recount("u").await.unwrap().unwrap();
    let usage = h.ledger.usage("u", &h.plans).await.unwrap().unwrap();
    check(&usage, 6, 8);
}

/// An account written by a version that kept each extra window as one
/// `"used seen first"` string in `l:<ms>` (and no `lf:`/`ls:`) has that
/// window rebuilt from its debits by the next debit, which then keeps it in
/// the current layout: the stale string is never read as a total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rebuilds_a_window_kept_in_the_earlier_layout() {
    use creditgate::ledger::keys::AccountKeys;

    let h = Harness::redis(Duration::from_millis(HOUR)).await;
    let node = h.redis.as_ref().expect("a Redis harness");
    h.account("old", "capped").await;
    assert!(admitted(&h.debit_as("old", "o1", 3).await));
    assert!(admitted(&h.debit_as("old", "o2", 4).await));
    let keys = AccountKeys::new("old");
    node.cli(&["HSET", &keys.account, "l:2000", "1 0 -1"]);
    node.cli(&["HDEL", &keys.account, "lf:2000", "ls:2000"]);
    let next = h.debit_as("old", "o3", 3).await;
    assert!(admitted(&next), "{next:?}");
    assert_eq!(window_of(&next).limits[0].used, 10, "rebuilt: 3 + 4 + 3");
    assert_eq!(node.cli(&["HGET", &keys.account, "l:2000"]), "10");
    let first = node.cli(&["HGET", &keys.account, "lf:2000"]);
    assert!(first.parse::<i64>().is_ok_and(|at| at > 0), "lf: {first}");
    let refused = h.debit_as("old", "o4", 1).await;
    assert!(
        matches!(refused, DebitOutcome::Rejected { limit: Some(0), .. }),
        "{refused:?}"
    );
}
