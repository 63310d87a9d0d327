//! Ledger scaling against a real Redis (run by `bench/ledger.sh`):
//!
//! 1. debit latency on an empty window versus a window holding 1 M debits
//!    of one account (the debit script must not slow down with the window);
//! 2. the usage report's latency on both accounts (it reads the per-account
//!    aggregates, never the debits), and the one-time rebuild of the
//!    aggregates from a 1 M-debit window (an account from before them);
//! 3. Redis memory per debit over 1 M debits across 1 000 accounts, with
//!    what one account's keys take.
//!
//! With `limits` as the third argument every plan has two extra windows
//! (1 h and 1 d) and the memory part's accounts are on a small allowance
//! with a prepaid grant each, so most of their debits are paid partly or
//! wholly from the grant (the largest debit record).
//!
//! ```text
//! cargo run --release --example ledger_scaling -- redis://127.0.0.1:6390/0 [debits] [limits]
//! ```
//! Use a Redis of its own: the second part flushes it.

#[path = "support/redis_stats.rs"]
mod redis_stats;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use creditgate::ledger::bounds::MAX_CREDITS;
use creditgate::ledger::keys::AccountKeys;
use creditgate::ledger::redis::{RedisLedger, Target, REBUILD_LIMIT};
use creditgate::ledger::usage::Rebuilt;
use creditgate::ledger::{
    AccountRecord, Debit, DebitOutcome, GrantCreated, Ledger, LedgerError, LimitTable, NewGrant,
    PlanTable, WindowLimit,
};
use redis_stats::{query, script_usec};

/// The plans' extra windows (empty unless `limits` was asked for).
static LIMITS: OnceLock<LimitTable> = OnceLock::new();
/// The plan of the memory part's accounts.
static MEMORY_PLAN: OnceLock<&'static str> = OnceLock::new();

const DAY: Duration = Duration::from_secs(86_400);
const SAMPLES: usize = 3_000;
const USAGE_SAMPLES: usize = 1_000;
const ROUTES: [&str; 3] = ["image-generate", "video-generate", "agent-chat"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6390/0".into());
    let total: usize = args
        .next()
        .map(|n| n.parse().expect("debits: a number"))
        .unwrap_or(1_000_000);
    let with_limits = args.next().as_deref() == Some("limits");
    let windows = vec![
        WindowLimit {
            name: "1h".into(),
            window_ms: 3_600_000,
            credits: MAX_CREDITS,
        },
        WindowLimit {
            name: "1d".into(),
            window_ms: 86_400_000,
            credits: MAX_CREDITS,
        },
    ];
    let mut limits = LimitTable::new();
    if with_limits {
        limits.insert("bench".into(), windows.clone());
        limits.insert("topup".into(), windows);
        println!("mode: two extra windows (1h, 1d); memory accounts on a 1000-credit allowance plus a grant");
    }
    LIMITS.set(limits).expect("set once");
    MEMORY_PLAN
        .set(if with_limits { "topup" } else { "bench" })
        .expect("set once");
    let ledger = Ledger::Redis(Arc::new(
        RedisLedger::connect(
            Target::Single(&url),
            30 * DAY,
            90 * DAY,
            // Long enough for the one-time rebuild from 1 M debits.
            Duration::from_secs(30),
        )
        .await
        .expect("connect"),
    ));
    let plans: Arc<PlanTable> = Arc::new(
        [
            ("bench".to_owned(), MAX_CREDITS),
            ("topup".to_owned(), 1000),
        ]
        .into(),
    );
    // FLUSHALL of a million entries takes longer than the default reply timeout.
    let slow =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(120)));
    let mut redis = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection_with_config(&slow)
        .await
        .expect("redis");
    let _: () = query(&mut redis, &["FLUSHALL"]).await;

    // 1. Latency: sequential debits (one in flight, as a lone request sees it).
    put(&ledger, "empty").await;
    let empty = sequential_latency(&ledger, &plans, "empty").await;
    put(&ledger, "big").await;
    let started = Instant::now();
    fill(&ledger, &plans, &["big".to_owned()], total).await;
    eprintln!(
        "filled one window with {total} debits in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let big = sequential_latency(&ledger, &plans, "big").await;
    println!("debit latency, one at a time ({SAMPLES} debits each, µs):");
    println!("| window            |   p50 |   p99 |  mean |");
    println!("|-------------------|-------|-------|-------|");
    for (name, stats) in [("empty", &empty), (&format!("{total} debits"), &big)] {
        println!(
            "| {name:<17} | {:>5.0} | {:>5.0} | {:>5.0} |",
            stats.p50, stats.p99, stats.mean
        );
    }
    println!(
        "ratio full / empty: p50 {:.2}, mean {:.2} (target <= 1.5)",
        big.p50 / empty.p50,
        big.mean / empty.mean
    );

    // 2. The usage report: its cost must not grow with the debits.
    let usage_empty = usage_latency(&ledger, &plans, "empty").await;
    let usage_big = usage_latency(&ledger, &plans, "big").await;
    println!();
    println!("usage report latency, one at a time ({USAGE_SAMPLES} reads each, µs):");
    println!("| window            |   p50 |   p99 |  mean |");
    println!("|-------------------|-------|-------|-------|");
    for (name, stats) in [
        (&format!("{} debits", 200 + SAMPLES), &usage_empty),
        (&format!("{total} debits"), &usage_big),
    ] {
        println!(
            "| {name:<17} | {:>5.0} | {:>5.0} | {:>5.0} |",
            stats.p50, stats.p99, stats.mean
        );
    }
    println!(
        "ratio full / small: p50 {:.2}, mean {:.2}",
        usage_big.p50 / usage_empty.p50,
        usage_big.mean / usage_empty.mean
    );
    let big_keys = AccountKeys::new("big");
    let aggregate_bytes: i64 = query(&mut redis, &["MEMORY", "USAGE", &big_keys.usage]).await;
    let aggregate_fields: i64 = query(&mut redis, &["HLEN", &big_keys.usage]).await;
    println!(
        "aggregates of the {total}-debit account: {aggregate_fields} fields, {aggregate_bytes} B"
    );
    // An account from before the aggregates. A report rebuilds them itself
    // from a window of up to REBUILD_LIMIT debits (one scan, on the request
    // path: the worst case is timed here); a larger window is refused until
    // the admin recount has rebuilt them.
    put(&ledger, "limit").await;
    fill(
        &ledger,
        &plans,
        &["limit".to_owned()],
        REBUILD_LIMIT as usize,
    )
    .await;
    let limit_keys = AccountKeys::new("limit");
    let _: i64 = query(&mut redis, &["HDEL", &limit_keys.account, "uw"]).await;
    let started = Instant::now();
    let rebuilt = ledger
        .usage("limit", &plans)
        .await
        .expect("usage")
        .expect("account");
    assert_eq!(rebuilt.rebuilt, Some(Rebuilt::NotKept));
    println!(
        "rebuild by the first report from a {REBUILD_LIMIT}-debit window (the most it scans): {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let _: i64 = query(&mut redis, &["HDEL", &big_keys.account, "uw"]).await;
    let refused = ledger.usage("big", &plans).await;
    assert!(
        matches!(refused, Err(LedgerError::Inconsistent(_))),
        "{refused:?}"
    );
    let started = Instant::now();
    ledger
        .recount("big")
        .await
        .expect("recount")
        .expect("account");
    println!(
        "recount (rebuilds the aggregates) of the {total}-debit window: {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let after = ledger
        .usage("big", &plans)
        .await
        .expect("usage")
        .expect("account");
    assert_eq!(after.rebuilt, None);

    // 2. Memory: 1000 accounts, total / 1000 debits each.
    let _: () = query(&mut redis, &["FLUSHALL"]).await;
    let before = used_memory(&mut redis).await;
    let accounts: Vec<String> = (0..1000).map(|i| format!("site-{i}")).collect();
    for account in &accounts {
        put_on(&ledger, account, MEMORY_PLAN.get().expect("set")).await;
        if !LIMITS.get().expect("set").is_empty() {
            let grant = NewGrant {
                credits: 1_000_000_000_000,
                expires_at_ms: None,
                note: "bench".into(),
            };
            let created = ledger.create_grant(account, &grant).await.expect("grant");
            assert!(matches!(created, GrantCreated::Created(_)), "{created:?}");
        }
    }
    let cpu_before = script_usec(&mut redis).await;
    fill(&ledger, &plans, &accounts, total).await;
    let script_cpu = script_usec(&mut redis).await - cpu_before;
    let after = used_memory(&mut redis).await;
    let per_debit = (after - before) as f64 / total as f64;
    println!(
        "redis CPU in the debit script: {:.2} µs per debit (INFO commandstats, {total} debits in batches)",
        script_cpu as f64 / total as f64
    );
    let keys = AccountKeys::new("site-1");
    let window_bytes: i64 = query(
        &mut redis,
        &["MEMORY", "USAGE", &keys.window, "SAMPLES", "0"],
    )
    .await;
    let account_bytes: i64 = query(&mut redis, &["MEMORY", "USAGE", &keys.account]).await;
    let encoding: String = query(&mut redis, &["OBJECT", "ENCODING", &keys.window]).await;
    let members: i64 = query(&mut redis, &["ZCARD", &keys.window]).await;
    println!();
    println!(
        "redis memory: {total} debits over {} accounts: {:.1} MB, {per_debit:.0} bytes per debit (target <= 120)",
        accounts.len(),
        (after - before) as f64 / 1e6
    );
    println!(
        "one account: window {encoding} of {members} members {window_bytes} B ({:.0} B per debit), account hash {account_bytes} B",
        window_bytes as f64 / members as f64
    );
}

async fn put(ledger: &Ledger, account: &str) {
    put_on(ledger, account, "bench").await;
}

async fn put_on(ledger: &Ledger, account: &str, plan: &str) {
    let record = AccountRecord {
        plan: plan.into(),
        suspended: false,
    };
    ledger.put_account(account, &record).await.expect("put");
}

async fn debit(ledger: &Ledger, plans: &PlanTable, account: &str) {
    let id = creditgate::request_id::generate();
    let fallback = creditgate::request_id::generate();
    let outcome = ledger
        .debit(&Debit {
            account,
            request_id: id.to_str().unwrap(),
            request_id_generated: true,
            fallback_request_id: fallback.to_str().unwrap(),
            route: ROUTES[(id.as_bytes()[1] % 3) as usize],
            cost: 1 + (id.as_bytes()[0] % 8) as u64,
            plans,
            alert_thresholds: &[],
            limits: LIMITS.get().expect("set"),
        })
        .await
        .expect("debit");
    assert!(
        matches!(outcome, DebitOutcome::Admitted { .. }),
        "{outcome:?}"
    );
}

/// `total` debits spread over `accounts`, 256 in flight (the ledger batches them).
async fn fill(ledger: &Ledger, plans: &Arc<PlanTable>, accounts: &[String], total: usize) {
    let workers = 256;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let ledger = ledger.clone();
        let plans = plans.clone();
        let accounts = accounts.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut n = worker;
            while n < total {
                debit(&ledger, &plans, &accounts[n % accounts.len()]).await;
                n += workers;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

struct Latency {
    p50: f64,
    p99: f64,
    mean: f64,
}

async fn sequential_latency(ledger: &Ledger, plans: &PlanTable, account: &str) -> Latency {
    for _ in 0..200 {
        debit(ledger, plans, account).await;
    }
    let mut micros = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        debit(ledger, plans, account).await;
        micros.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let mean = micros.iter().sum::<f64>() / micros.len() as f64;
    micros.sort_by(f64::total_cmp);
    Latency {
        p50: micros[micros.len() / 2],
        p99: micros[micros.len() * 99 / 100],
        mean,
    }
}

async fn usage_latency(ledger: &Ledger, plans: &PlanTable, account: &str) -> Latency {
    let mut micros = Vec::with_capacity(USAGE_SAMPLES);
    for _ in 0..USAGE_SAMPLES {
        let started = Instant::now();
        let usage = ledger
            .usage(account, plans)
            .await
            .expect("usage")
            .expect("account");
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        assert_eq!(usage.rebuilt, None, "the aggregates are kept");
    }
    let mean = micros.iter().sum::<f64>() / micros.len() as f64;
    micros.sort_by(f64::total_cmp);
    Latency {
        p50: micros[micros.len() / 2],
        p99: micros[micros.len() * 99 / 100],
        mean,
    }
}

async fn used_memory(redis: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = query(redis, &["INFO", "memory"]).await;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("used_memory")
}
