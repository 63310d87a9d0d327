//! The ledger conformance suite: written once, run against the memory
//! backend (with a manual clock) and the Redis backend (real redis-server,
//! Redis `TIME`, short windows and real sleeps).

mod alerts;
mod differential;
mod model;

use std::sync::Arc;
use std::time::Duration;

use creditgate::clock::ManualClock;
use creditgate::ledger::{
    memory::MemoryLedger,
    redis::{RedisLedger, Target},
    AccountRecord, Debit, DebitOutcome, HistoryCursor, Ledger, LimitTable, PlanTable,
    RefundOutcome, UnconfirmedDebit, VoidOutcome, WindowLimit,
};

use crate::support::cluster::RedisCluster;
use crate::support::redis::RedisServer;

pub struct Harness {
    pub ledger: Ledger,
    clock: Option<Arc<ManualClock>>,
    redis: Option<RedisServer>,
    cluster: Option<RedisCluster>,
    pub plans: PlanTable,
    pub limits: LimitTable,
}

const T0: i64 = 1_795_521_600_000;

impl Harness {
    pub async fn memory(window: Duration) -> Harness {
        let clock = ManualClock::new(T0);
        let ledger = Ledger::Memory(Arc::new(MemoryLedger::new(
            clock.clone(),
            window,
            window * 3,
        )));
        Harness::with(ledger, Some(clock), None).await
    }

    pub async fn redis(window: Duration) -> Harness {
        let redis = RedisServer::start();
        let ledger = Ledger::Redis(Arc::new(
            RedisLedger::connect(
                Target::Single(&redis.url()),
                window,
                window * 3,
                Duration::from_millis(500),
            )
            .await
            .expect("connect"),
        ));
        Harness::with(ledger, None, Some(redis)).await
    }

    pub async fn cluster(window: Duration) -> Harness {
        let cluster = RedisCluster::start();
        let ledger = Ledger::Redis(Arc::new(
            RedisLedger::connect(
                Target::Cluster(&cluster.urls()),
                window,
                window * 3,
                Duration::from_millis(1000),
            )
            .await
            .expect("connect"),
        ));
        let mut harness = Harness::with(ledger, None, None).await;
        harness.cluster = Some(cluster);
        harness
    }

    async fn with(
        ledger: Ledger,
        clock: Option<Arc<ManualClock>>,
        redis: Option<RedisServer>,
    ) -> Harness {
        let plans: PlanTable = [
            ("free", 100),
            ("small", 1000),
            ("pro", 10_000),
            ("tiny", 10),
            ("capped", 100),
            ("boosted", 5),
        ]
        .into_iter()
        .map(|(n, a)| (n.to_owned(), a))
        .collect();
        let harness = Harness {
            ledger,
            clock,
            redis,
            cluster: None,
            plans,
            limits: [
                ("capped", vec![window_limit("2s", 2_000, 10)]),
                (
                    "boosted",
                    vec![
                        window_limit("2s", 2_000, 10),
                        window_limit("1h", 3_600_000, 12),
                    ],
                ),
            ]
            .into_iter()
            .map(|(plan, limits)| (plan.to_owned(), limits))
            .collect(),
        };
        harness.account("acct", "small").await;
        harness
    }

    pub async fn account(&self, id: &str, plan: &str) {
        self.ledger
            .put_account(
                id,
                &AccountRecord {
                    plan: plan.to_owned(),
                    suspended: false,
                },
            )
            .await
            .expect("put_account");
    }

    /// Moves time forward: the manual clock, or a real sleep for Redis.
    pub async fn advance(&self, by: Duration) {
        match &self.clock {
            Some(clock) => clock.advance_ms(by.as_millis() as i64),
            None => tokio::time::sleep(by).await,
        }
    }

    /// Real time (Redis `TIME`) rather than the manual clock.
    pub fn is_redis(&self) -> bool {
        self.clock.is_none()
    }

    /// The ledger's clock: the manual clock, or Redis `TIME` (every node of
    /// the test cluster runs on this machine's clock).
    pub fn now_ms(&self) -> i64 {
        let redis = match (&self.clock, &self.redis, &self.cluster) {
            (Some(clock), _, _) => return creditgate::clock::Clock::now_ms(clock.as_ref()),
            (None, Some(redis), _) => redis,
            (None, None, Some(cluster)) => &cluster.nodes[0],
            (None, None, None) => unreachable!("a harness has a clock or a Redis"),
        };
        let time = redis.cli_list(&["TIME"]);
        let seconds: i64 = time[0].parse().expect("TIME seconds");
        let micros: i64 = time[1].parse().expect("TIME microseconds");
        seconds * 1000 + micros / 1000
    }

    /// Moves the ledger's clock to at least `at_ms`: sets the manual clock,
    /// or waits for Redis `TIME` to pass it (a real wait, so it may overshoot
    /// under load: tests compare outcomes with the clock read around each call).
    pub async fn advance_to(&self, at_ms: i64) {
        if let Some(clock) = &self.clock {
            let now = creditgate::clock::Clock::now_ms(clock.as_ref());
            clock.set_ms(now.max(at_ms));
            return;
        }
        loop {
            let left = at_ms - self.now_ms();
            if left <= 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(left as u64)).await;
        }
    }

    /// A debit with the ledger's clock read just before and just after it.
    pub async fn timed_debit(
        &self,
        account: &str,
        id: &str,
        cost: u64,
    ) -> (i64, DebitOutcome, i64) {
        let before = self.now_ms();
        let outcome = self.debit_as(account, id, cost).await;
        (before, outcome, self.now_ms())
    }

    /// Checks `used` against `model(T)` for the ledger-clock moment `T` of
    /// the call: exact with the manual clock; with Redis, where `T` is only
    /// known to lie between two clock reads, either end's value is accepted.
    pub async fn assert_used(&self, account: &str, model: impl Fn(i64) -> u64) {
        let before = self.now_ms();
        let used = self.used(account).await;
        let after = self.now_ms();
        let (early, late) = (model(before), model(after));
        assert!(
            used == early || used == late,
            "used {used} at ledger time {before}..{after}; expected {early} (or {late} if a debit left meanwhile)"
        );
    }

    pub async fn debit_as(&self, account: &str, id: &str, cost: u64) -> DebitOutcome {
        let fallback = format!("{id}-fallback");
        self.ledger
            .debit(&Debit {
                account,
                request_id: id,
                request_id_generated: false,
                fallback_request_id: &fallback,
                route: "route-a",
                cost,
                plans: &self.plans,
                alert_thresholds: &[],
                limits: &self.limits,
            })
            .await
            .expect("debit")
    }

    pub async fn debit(&self, id: &str, cost: u64) -> DebitOutcome {
        self.debit_as("acct", id, cost).await
    }

    pub async fn used(&self, account: &str) -> u64 {
        self.ledger
            .balance(account, &self.plans, &self.limits)
            .await
            .expect("balance")
            .expect("account")
            .used
    }
}

pub fn window_limit(name: &str, window_ms: u64, credits: u64) -> WindowLimit {
    WindowLimit {
        name: name.to_owned(),
        window_ms,
        credits,
    }
}

fn admitted(outcome: &DebitOutcome) -> bool {
    matches!(outcome, DebitOutcome::Admitted { .. })
}

macro_rules! conformance {
    ($($name:ident: $window_ms:ident;)*) => {
        // Multi-threaded, like the gateway's runtime: on one thread the
        // "concurrent" debits would run one after another.
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let harness = super::Harness::memory(std::time::Duration::from_millis(super::$window_ms)).await;
                    super::$name(harness).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let harness = super::Harness::redis(std::time::Duration::from_millis(super::$window_ms)).await;
                    super::$name(harness).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let harness = super::Harness::cluster(std::time::Duration::from_millis(super::$window_ms)).await;
                    super::$name(harness).await;
                }
            )*
        }
    };
}

mod limits;

const MONTH: u64 = 30 * 86_400_000;
const TWO_SECONDS: u64 = 2_000;
const THREE_SECONDS: u64 = 3_000;
const ONE_SECOND: u64 = 1_000;

conformance! {
    admits_up_to_the_allowance_and_rejected_debits_record_nothing: MONTH;
    credits_return_when_debits_leave_the_window: TWO_SECONDS;
    retry_after_points_at_the_first_moment_the_cost_fits: THREE_SECONDS;
    cost_above_the_whole_allowance_has_no_retry_after: MONTH;
    plan_changes_and_suspension_apply_at_once: MONTH;
    refunds_remove_one_debit_once: MONTH;
    a_reused_request_id_gets_the_fallback: MONTH;
    history_pages_have_no_duplicates_or_gaps: MONTH;
    concurrent_debits_admit_exactly_floor_allowance_over_cost: MONTH;
    keys_are_added_found_and_revoked: MONTH;
    zero_cost_debits_record_nothing: MONTH;
    history_past_its_retention_is_dropped_and_its_ids_free_again: ONE_SECOND;
}

async fn admits_up_to_the_allowance_and_rejected_debits_record_nothing(h: Harness) {
    h.account("t", "tiny").await;
    for i in 0..3 {
        assert!(admitted(&h.debit_as("t", &format!("r{i}"), 3).await));
    }
    match h.debit_as("t", "r3", 3).await {
        DebitOutcome::Rejected {
            window,
            retry_after_ms,
            ..
        } => {
            assert_eq!(window.allowance, 10);
            assert_eq!(window.used, 9);
            assert_eq!(window.available(), 1);
            assert!(retry_after_ms.is_some());
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // One credit left: a cost-1 debit still fits exactly.
    match h.debit_as("t", "r4", 1).await {
        DebitOutcome::Admitted { window, .. } => assert_eq!(window.used, 10),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.used("t").await, 10);
    let history = h.ledger.history("t", 50, None).await.unwrap();
    let ids: Vec<&str> = history
        .items
        .iter()
        .map(|i| i.request_id.as_str())
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert!(!ids.contains(&"r3"), "a rejected debit is never recorded");
}

fn at_ms(outcome: &DebitOutcome) -> i64 {
    match outcome {
        DebitOutcome::Admitted { at_ms, .. } => *at_ms,
        other => panic!("expected an admission, got {other:?}"),
    }
}

/// Time-dependent outcomes are checked against the ledger's own clock, read
/// around each call, never against how long the test slept: on a loaded
/// machine a sleep overshoots, and the test must still only fail when the
/// ledger is wrong.
async fn credits_return_when_debits_leave_the_window(h: Harness) {
    const WINDOW: i64 = TWO_SECONDS as i64;
    h.account("t", "tiny").await;
    let a = at_ms(&h.debit_as("t", "a", 4).await);
    h.advance(Duration::from_millis(1_000)).await;
    let b = at_ms(&h.debit_as("t", "b", 6).await);
    // What counts at ledger time `now`: a debit made at `at` while at > now − window.
    let model = move |debits: Vec<(i64, u64)>| {
        move |now: i64| -> u64 {
            debits
                .iter()
                .filter(|(at, _)| *at > now - WINDOW)
                .map(|(_, cost)| cost)
                .sum()
        }
    };
    let balance = h
        .ledger
        .balance("t", &h.plans, &h.limits)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        balance.used,
        model(vec![(a, 4), (b, 6)])(balance.now_ms),
        "{balance:?}"
    );
    let release = balance.next_release.expect("next release");
    assert_eq!((release.at_ms, release.credits), (a + WINDOW, 4));
    let (before, outcome, _) = h.timed_debit("t", "c", 1).await;
    if before < a + WINDOW {
        assert!(!admitted(&outcome), "admitted while 10 of 10 counted");
    }
    // "a" has left, "b" has not (unless the machine stalled a whole second).
    h.advance_to(a + WINDOW).await;
    h.assert_used("t", model(vec![(a, 4), (b, 6)])).await;
    let c = at_ms(&h.debit_as("t", "c", 4).await);
    h.advance_to(b.max(c) + WINDOW).await;
    let balance = h
        .ledger
        .balance("t", &h.plans, &h.limits)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(balance.used, 0);
    assert!(balance.next_release.is_none());
    // History outlives the window.
    assert_eq!(
        h.ledger.history("t", 10, None).await.unwrap().items.len(),
        3
    );
}

async fn retry_after_points_at_the_first_moment_the_cost_fits(h: Harness) {
    const WINDOW: i64 = THREE_SECONDS as i64;
    h.account("t", "tiny").await;
    let a = at_ms(&h.debit_as("t", "a", 3).await);
    h.advance(Duration::from_millis(1_000)).await;
    let b = at_ms(&h.debit_as("t", "b", 4).await);
    h.advance(Duration::from_millis(500)).await;
    // used 7 of 10; a cost-5 request fits once "a" (3 credits) has left,
    // at a + window; the promise is exact to the millisecond of the call.
    let (before, outcome, after) = h.timed_debit("t", "c", 5).await;
    assert!(
        after < a + WINDOW,
        "the machine stalled past the scenario: {} ms after a",
        after - a
    );
    let retry = match outcome {
        DebitOutcome::Rejected {
            retry_after_ms,
            window,
            ..
        } => {
            assert_eq!(window.used, 7);
            retry_after_ms.expect("a retry time") as i64
        }
        other => panic!("{other:?}"),
    };
    assert!(
        (a + WINDOW - after..=a + WINDOW - before).contains(&retry),
        "retry after {retry} ms, called {}..{} ms before a leaves",
        a + WINDOW - after,
        a + WINDOW - before
    );
    // A cost-8 request needs both debits gone: "b" leaves 1 s after "a".
    let (before, outcome, after) = h.timed_debit("t", "d", 8).await;
    match outcome {
        DebitOutcome::Rejected { retry_after_ms, .. } => {
            let retry8 = retry_after_ms.expect("a retry time") as i64;
            assert!(
                (b + WINDOW - after..=b + WINDOW - before).contains(&retry8),
                "retry after {retry8} ms, called {}..{} ms before b leaves",
                b + WINDOW - after,
                b + WINDOW - before
            );
        }
        other => panic!("{other:?}"),
    }
    // Just before the promised moment it does not fit; at it, it does.
    let promised = a + WINDOW;
    let early_margin = if h.is_redis() { 600 } else { 1 };
    h.advance_to(promised - early_margin).await;
    let (_, outcome, after) = h.timed_debit("t", "e", 5).await;
    assert!(
        after < promised,
        "the machine stalled {} ms: the early attempt came too late to mean anything",
        after - promised + early_margin
    );
    assert!(
        !admitted(&outcome),
        "admitted {} ms before the promised time",
        promised - after
    );
    h.advance_to(promised).await;
    assert!(
        admitted(&h.debit_as("t", "f", 5).await),
        "at the promised time"
    );
}

async fn cost_above_the_whole_allowance_has_no_retry_after(h: Harness) {
    h.account("t", "tiny").await;
    match h.debit_as("t", "big", 11).await {
        DebitOutcome::Rejected {
            retry_after_ms,
            window,
            ..
        } => {
            assert_eq!(retry_after_ms, None);
            assert_eq!(window.used, 0);
        }
        other => panic!("{other:?}"),
    }
}

async fn plan_changes_and_suspension_apply_at_once(h: Harness) {
    h.account("t", "tiny").await;
    assert!(admitted(&h.debit_as("t", "a", 10).await));
    assert!(!admitted(&h.debit_as("t", "b", 10).await));
    h.account("t", "free").await;
    assert!(admitted(&h.debit_as("t", "c", 10).await));
    h.ledger
        .put_account(
            "t",
            &AccountRecord {
                plan: "free".into(),
                suspended: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(h.debit_as("t", "d", 1).await, DebitOutcome::Suspended);
    h.ledger
        .put_account(
            "t",
            &AccountRecord {
                plan: "gold".into(),
                suspended: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        h.debit_as("t", "e", 1).await,
        DebitOutcome::UnknownPlan("gold".into())
    );
    assert_eq!(h.debit_as("nobody", "f", 1).await, DebitOutcome::NoAccount);
    assert_eq!(h.used("t").await, 20, "no counter was reset");
    let balance = h
        .ledger
        .balance("t", &h.plans, &h.limits)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(balance.allowance, None);
    assert!(h
        .ledger
        .balance("nobody", &h.plans, &h.limits)
        .await
        .unwrap()
        .is_none());
}

async fn refunds_remove_one_debit_once(h: Harness) {
    assert!(admitted(&h.debit("a", 7).await));
    assert!(admitted(&h.debit("b", 5).await));
    assert_eq!(
        h.ledger.refund("acct", "a").await.unwrap(),
        RefundOutcome::Refunded
    );
    assert_eq!(h.used("acct").await, 5);
    assert_eq!(
        h.ledger.refund("acct", "a").await.unwrap(),
        RefundOutcome::AlreadyRefunded
    );
    assert_eq!(h.used("acct").await, 5);
    assert_eq!(
        h.ledger.refund("acct", "zzz").await.unwrap(),
        RefundOutcome::Unknown
    );
    assert_eq!(
        h.ledger.refund("nobody", "a").await.unwrap(),
        RefundOutcome::Unknown
    );
    let history = h.ledger.history("acct", 10, None).await.unwrap();
    let a = history.items.iter().find(|i| i.request_id == "a").unwrap();
    assert!(a.refunded);
    assert_eq!(a.cost, 7);
    let balance = h
        .ledger
        .balance("acct", &h.plans, &h.limits)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(balance.next_release.unwrap().credits, 5);
}

async fn a_reused_request_id_gets_the_fallback(h: Harness) {
    match h.debit("same", 1).await {
        DebitOutcome::Admitted { request_id, .. } => assert_eq!(request_id, "same"),
        other => panic!("{other:?}"),
    }
    match h.debit("same", 2).await {
        DebitOutcome::Admitted { request_id, .. } => assert_eq!(request_id, "same-fallback"),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.used("acct").await, 3);
    // Refunding the first leaves the second, which its own id finds.
    h.ledger.refund("acct", "same").await.unwrap();
    assert_eq!(h.used("acct").await, 2);
    assert_eq!(
        h.ledger.refund("acct", "same-fallback").await.unwrap(),
        RefundOutcome::Refunded
    );
    assert_eq!(h.used("acct").await, 0);
}

async fn history_pages_have_no_duplicates_or_gaps(h: Harness) {
    let mut expected = Vec::new();
    for i in 0..37 {
        let id = format!("req-{i:02}");
        assert!(admitted(&h.debit(&id, 1).await));
        expected.push(id);
        // Ties in `at`: several debits per clock tick.
        if i % 4 == 3 {
            h.advance(Duration::from_millis(2)).await;
        }
    }
    let mut seen = Vec::new();
    let mut cursor: Option<HistoryCursor> = None;
    let mut pages = 0;
    loop {
        let page = h.ledger.history("acct", 5, cursor.as_ref()).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 5);
        for pair in page.items.windows(2) {
            assert!(
                (pair[0].at_ms, &pair[0].request_id) > (pair[1].at_ms, &pair[1].request_id),
                "newest first"
            );
        }
        seen.extend(page.items.iter().map(|i| i.request_id.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 20);
    }
    assert_eq!(pages, 8);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 37, "no duplicates");
    expected.sort();
    assert_eq!(sorted, expected, "no gaps");
    let last_page = h.ledger.history("acct", 37, None).await.unwrap();
    assert_eq!(last_page.items.len(), 37);
    assert!(last_page.next.is_none());
}

async fn concurrent_debits_admit_exactly_floor_allowance_over_cost(h: Harness) {
    const THREADS: usize = 6;
    const PER_THREAD: usize = 50;
    let h = Arc::new(h);
    // Each OS thread drives its share of the debits (all in flight at once);
    // the barrier releases the threads together, so debits from different
    // threads really run at the same time, whatever the runtime's flavour.
    let start = Arc::new(std::sync::Barrier::new(THREADS));
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runtime = tokio::runtime::Handle::current();
    let mut threads = Vec::new();
    for thread in 0..THREADS {
        let (h, start, finished, runtime) =
            (h.clone(), start.clone(), finished.clone(), runtime.clone());
        threads.push(tokio::task::spawn_blocking(move || {
            start.wait();
            let debits = (0..PER_THREAD).map(|i| {
                let (h, finished) = (h.clone(), finished.clone());
                async move {
                    let outcome = h.debit(&format!("c{thread}-{i}"), 7).await;
                    let order = finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    (order, admitted(&outcome))
                }
            });
            runtime.block_on(futures_util::future::join_all(debits))
        }));
    }
    let mut count = 0;
    let mut interleaved = 0;
    for thread in threads {
        let mut orders = Vec::new();
        for (order, was_admitted) in thread.await.unwrap() {
            orders.push(order);
            count += usize::from(was_admitted);
        }
        orders.sort_unstable();
        // Another thread's debit finished between two of this thread's.
        interleaved += orders.windows(2).filter(|w| w[1] != w[0] + 1).count();
    }
    let used = h.used("acct").await;
    assert_eq!(
        (count, used),
        (142, 994),
        "admitted and used, {THREADS} threads × {PER_THREAD} debits, \
         {interleaved} interleavings seen"
    );
}

async fn keys_are_added_found_and_revoked(h: Harness) {
    let digest = [7u8; 32];
    assert!(!h.ledger.add_key("nobody", "k1", &digest).await.unwrap());
    assert!(h.ledger.add_key("acct", "k1", &digest).await.unwrap());
    let owner = h.ledger.find_key(&digest).await.unwrap().expect("owner");
    assert_eq!(owner.account_id, "acct");
    assert_eq!(owner.key_id, "k1");
    assert_eq!(owner.digest, digest);
    assert_eq!(owner.account.plan, "small");
    assert!(h.ledger.find_key(&[8u8; 32]).await.unwrap().is_none());
    assert!(h.ledger.revoke_key("acct", "k1").await.unwrap());
    assert!(!h.ledger.revoke_key("acct", "k1").await.unwrap());
    assert!(h.ledger.find_key(&digest).await.unwrap().is_none());
    assert!(h.ledger.get_account("acct").await.unwrap().is_some());
    assert!(h.ledger.get_account("nobody").await.unwrap().is_none());
}

/// The harness keeps history for three windows.
async fn history_past_its_retention_is_dropped_and_its_ids_free_again(h: Harness) {
    assert!(admitted(&h.debit("old-client-id", 2).await));
    h.advance(Duration::from_millis(3_300)).await;
    let new = at_ms(&h.debit("new", 3).await);
    let history = h.ledger.history("acct", 10, None).await.unwrap();
    let ids: Vec<&str> = history
        .items
        .iter()
        .map(|i| i.request_id.as_str())
        .collect();
    assert_eq!(ids, ["new"]);
    h.assert_used("acct", |now| if new > now - 1_000 { 3 } else { 0 })
        .await;
    // Its id left with it: reusing it is a fresh debit under the same id.
    match h.debit("old-client-id", 1).await {
        DebitOutcome::Admitted { request_id, .. } => assert_eq!(request_id, "old-client-id"),
        other => panic!("{other:?}"),
    }
}

async fn zero_cost_debits_record_nothing(h: Harness) {
    assert!(admitted(&h.debit("free", 0).await));
    assert_eq!(h.used("acct").await, 0);
    assert!(h
        .ledger
        .history("acct", 10, None)
        .await
        .unwrap()
        .items
        .is_empty());
}

// ---- Redis only: the script cache and the server can go away. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_debits_survive_script_flush() {
    let h = Harness::redis(Duration::from_secs(60)).await;
    assert!(admitted(&h.debit("a", 1).await));
    let redis = h.redis.as_ref().unwrap();
    assert!(redis.cli(&["SCRIPT", "FLUSH"]).eq_ignore_ascii_case("ok"));
    assert!(admitted(&h.debit("b", 1).await));
    assert!(h.ledger.history("acct", 5, None).await.is_ok());
    assert_eq!(
        h.ledger.refund("acct", "a").await.unwrap(),
        RefundOutcome::Refunded
    );
    assert_eq!(h.used("acct").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_calls_fail_fast_while_down_and_recover_after_restart() {
    let mut h = Harness::redis(Duration::from_secs(60)).await;
    assert!(admitted(&h.debit("a", 1).await));
    h.redis.as_mut().unwrap().kill();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let result = h
            .ledger
            .debit(&Debit {
                account: "acct",
                request_id: "x",
                request_id_generated: false,
                fallback_request_id: "y",
                route: "r",
                cost: 1,
                plans: &h.plans,
                alert_thresholds: &[],
                limits: &h.limits,
            })
            .await;
        assert!(result.is_err(), "{result:?}");
        // Fails rather than hangs: the timeout is 500 ms a call; 10 s is
        // only reached by a call waiting on the dead server itself.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    h.redis.as_mut().unwrap().restart();
    crate::support::wait::wait_until("the ledger to reach the restarted Redis", async || {
        h.ledger.ping().await.map_err(|error| error.to_string())
    })
    .await;
    // The restarted Redis is empty: no account, no scripts.
    h.account("acct", "small").await;
    assert!(admitted(&h.debit("b", 1).await));
}

/// `cmdstat_evalsha` + `cmdstat_eval` calls so far.
fn script_calls(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_debits_share_script_calls_and_each_stays_exact() {
    let h = Arc::new(Harness::redis(Duration::from_secs(60)).await);
    for account in ["b1", "b2", "b3"] {
        h.account(account, "tiny").await;
    }
    let before = script_calls(h.redis.as_ref().unwrap());
    let mut tasks = Vec::new();
    for i in 0..600 {
        let h = h.clone();
        let account = ["b1", "b2", "b3"][i % 3];
        tasks.push(tokio::spawn(async move {
            (account, h.debit_as(account, &format!("d{i}"), 3).await)
        }));
    }
    let mut admitted_per_account = std::collections::BTreeMap::<&str, u64>::new();
    for task in tasks {
        let (account, outcome) = task.await.unwrap();
        if admitted(&outcome) {
            *admitted_per_account.entry(account).or_default() += 1;
        }
    }
    // tiny = 10 credits: floor(10 / 3) = 3 admitted per account, whatever the batching.
    assert_eq!(
        admitted_per_account,
        [("b1", 3), ("b2", 3), ("b3", 3)].into_iter().collect()
    );
    for account in ["b1", "b2", "b3"] {
        assert_eq!(h.used(account).await, 9);
        assert_eq!(
            h.ledger
                .history(account, 50, None)
                .await
                .unwrap()
                .items
                .len(),
            3
        );
    }
    let calls = script_calls(h.redis.as_ref().unwrap()) - before;
    assert!(
        calls < 600,
        "600 concurrent debits took {calls} script calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_account_fails_alone_in_its_batch() {
    let h = Arc::new(Harness::redis(Duration::from_secs(60)).await);
    h.account("broken", "small").await;
    // A window key of the wrong type makes that account's debit fail in Redis.
    h.redis
        .as_ref()
        .unwrap()
        .cli(&["SET", "cg:{broken}:w", "not-a-zset"]);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let h = h.clone();
        let account = if i % 10 == 0 { "broken" } else { "acct" };
        tasks.push(tokio::spawn(async move {
            let fallback = format!("f{i}");
            let id = format!("r{i}");
            let result = h
                .ledger
                .debit(&Debit {
                    account,
                    request_id: &id,
                    request_id_generated: false,
                    fallback_request_id: &fallback,
                    route: "r",
                    cost: 1,
                    plans: &h.plans,
                    alert_thresholds: &[],
                    limits: &h.limits,
                })
                .await;
            (account, result)
        }));
    }
    let (mut good, mut failed) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            ("broken", result) => {
                assert!(result.is_err(), "{result:?}");
                failed += 1;
            }
            (_, result) => {
                assert!(admitted(&result.expect("a healthy account's debit")));
                good += 1;
            }
        }
    }
    assert_eq!((good, failed), (180, 20));
    assert_eq!(h.used("acct").await, 180);
}

mod bounds;
mod usage;

/// Voiding a debit whose call failed: refused until the Redis clock has
/// passed its deadline, then it finds exactly that request's debit — under
/// its fallback id when its request id was taken — and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_voids_only_the_debit_of_the_failed_call() {
    let h = Harness::redis(Duration::from_secs(60)).await;
    // Voids the call of `request_id` in from..=deadline; checks what it
    // found and `used` after.
    let expect = async |request_id: &str, (from_ms, deadline_ms), found, used| {
        let debit = UnconfirmedDebit {
            account: "acct".into(),
            request_id: request_id.into(),
            fallback_request_id: format!("{request_id}-fallback"),
            from_ms,
            deadline_ms,
        };
        let outcome = h.ledger.void_unconfirmed(&debit).await.unwrap();
        assert_eq!(outcome, found, "{debit:?}");
        assert_eq!(h.used("acct").await, used, "after {debit:?}");
    };
    let first = at_ms(&h.debit("shared", 3).await);
    let second = at_ms(&h.debit("shared", 5).await); // recorded as shared-fallback
    let other = at_ms(&h.debit("other", 7).await);
    assert_eq!(h.used("acct").await, 15);
    // Before the deadline has passed, nothing is looked at.
    let future = second + 60_000;
    expect("shared", (second - 1000, future), VoidOutcome::TooEarly, 15).await;
    // A request that never got a debit finds none, beside other debits.
    expect("never", (first - 1000, other), VoidOutcome::Absent, 15).await;
    // The second request's debit is found under its fallback id, not the
    // first request's under the shared id.
    expect("shared", (first - 1000, second), VoidOutcome::Voided, 10).await;
    let history = h.ledger.history("acct", 10, None).await.unwrap();
    let refunded: Vec<&str> = history
        .items
        .iter()
        .filter(|i| i.refunded)
        .map(|i| i.request_id.as_str())
        .collect();
    assert_eq!(refunded, ["shared-fallback"]);
    // Voiding again finds it refunded already: still not charged.
    expect("shared", (first - 1000, second), VoidOutcome::Voided, 10).await;
    // Outside its range a debit is not found.
    expect("other", (other - 5000, other - 1), VoidOutcome::Absent, 10).await;
}
