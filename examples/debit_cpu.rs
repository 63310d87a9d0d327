//! Redis CPU per debit for the three shapes of account the priced route
//! meets (run by `bash bench/ledger.sh cpu`):
//!
//! - `plain`: a plan with the 30-day window only;
//! - `limits`: two extra windows (1 h, 1 d) and a live prepaid grant the
//!   allowance never reaches (the grant is read, not spent);
//! - `grantpaid`: the same with a zero allowance, so the grant pays every
//!   debit (the grants hash is read and written each time).
//!
//! Each round runs `debits` debits per shape over 500 accounts, 256 in
//! flight (the ledger batches them as under load), the shapes interleaved,
//! and reads the time Redis spent in the debit script from `INFO
//! commandstats`. The gateway's share of the cost is measured by
//! `bench/run.sh` (`priced`, `priced_limits`, `priced_grant`).
//!
//! ```text
//! cargo run --release --example debit_cpu -- redis://127.0.0.1:6390/0 [debits] [rounds]
//! ```
//! Use a Redis of its own: it is flushed first.

#[path = "support/redis_stats.rs"]
mod redis_stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use creditgate::ledger::bounds::MAX_CREDITS;
use creditgate::ledger::redis::{RedisLedger, Target};
use creditgate::ledger::{
    AccountRecord, Debit, DebitOutcome, GrantCreated, Ledger, LimitTable, NewGrant, PlanTable,
    WindowLimit,
};
use redis_stats::{query, script_usec};

const DAY: Duration = Duration::from_secs(86_400);
const ACCOUNTS: usize = 500;
const IN_FLIGHT: usize = 256;
const SHAPES: [&str; 3] = ["plain", "limits", "grantpaid"];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6390/0".into());
    let debits: usize = args
        .next()
        .map(|n| n.parse().expect("debits: a number"))
        .unwrap_or(200_000);
    let rounds: usize = args
        .next()
        .map(|n| n.parse().expect("rounds: a number"))
        .unwrap_or(3);

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
    let limits: Arc<LimitTable> = Arc::new(
        [
            ("limits".to_owned(), windows.clone()),
            ("grantpaid".to_owned(), windows),
        ]
        .into(),
    );
    let plans: Arc<PlanTable> = Arc::new(
        [
            ("plain".to_owned(), MAX_CREDITS),
            ("limits".to_owned(), MAX_CREDITS),
            ("grantpaid".to_owned(), 0),
        ]
        .into(),
    );
    let ledger = Ledger::Redis(Arc::new(
        RedisLedger::connect(
            Target::Single(&url),
            30 * DAY,
            90 * DAY,
            Duration::from_secs(5),
        )
        .await
        .expect("connect"),
    ));
    let mut redis = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = query(&mut redis, &["FLUSHALL"]).await;

    for shape in SHAPES {
        for i in 0..ACCOUNTS {
            let account = format!("{shape}-{i}");
            let record = AccountRecord {
                plan: shape.into(),
                suspended: false,
            };
            ledger.put_account(&account, &record).await.expect("put");
            if shape != "plain" {
                let grant = NewGrant {
                    credits: 1_000_000_000_000,
                    expires_at_ms: None,
                    note: "bench".into(),
                };
                let created = ledger.create_grant(&account, &grant).await.expect("grant");
                assert!(matches!(created, GrantCreated::Created(_)), "{created:?}");
            }
        }
    }

    println!("Redis CPU in the debit script, µs per debit ({debits} debits per shape and round, {ACCOUNTS} accounts, {IN_FLIGHT} in flight):");
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); SHAPES.len()];
    for round in 0..rounds {
        for (n, shape) in SHAPES.iter().enumerate() {
            let before = script_usec(&mut redis).await;
            let started = Instant::now();
            run(&ledger, &plans, &limits, shape, debits).await;
            let elapsed = started.elapsed().as_secs_f64();
            let usec = (script_usec(&mut redis).await - before) as f64 / debits as f64;
            let rate = debits as f64 / elapsed;
            eprintln!(
                "round {}: {shape:<9} {usec:6.2} µs/debit {rate:8.0} debits/s",
                round + 1
            );
            results[n].push((usec, rate));
        }
    }
    println!("| shape     | µs/debit (best) | µs/debit (median) | debits/s (best) |");
    println!("|-----------|-----------------|-------------------|-----------------|");
    for (n, shape) in SHAPES.iter().enumerate() {
        let mut usec: Vec<f64> = results[n].iter().map(|r| r.0).collect();
        usec.sort_by(f64::total_cmp);
        let rate = results[n].iter().map(|r| r.1).fold(0.0, f64::max);
        println!(
            "| {shape:<9} | {:>15.2} | {:>17.2} | {rate:>15.0} |",
            usec[0],
            usec[usec.len() / 2]
        );
    }
}

/// `total` debits of cost 1 spread over the shape's accounts.
async fn run(
    ledger: &Ledger,
    plans: &Arc<PlanTable>,
    limits: &Arc<LimitTable>,
    shape: &'static str,
    total: usize,
) {
    let mut tasks = Vec::new();
    for worker in 0..IN_FLIGHT {
        let ledger = ledger.clone();
        let plans = plans.clone();
        let limits = limits.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = worker;
            while n < total {
                let account = format!("{shape}-{}", n % ACCOUNTS);
                let id = creditgate::request_id::generate();
                let fallback = creditgate::request_id::generate();
                let outcome = ledger
                    .debit(&Debit {
                        account: &account,
                        request_id: id.to_str().unwrap(),
                        request_id_generated: true,
                        fallback_request_id: fallback.to_str().unwrap(),
                        route: "priced",
                        cost: 1,
                        plans: &plans,
                        alert_thresholds: &[],
                        limits: &limits,
                    })
                    .await
                    .expect("debit");
                assert!(
                    matches!(outcome, DebitOutcome::Admitted { .. }),
                    "{outcome:?}"
                );
                n += IN_FLIGHT;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
