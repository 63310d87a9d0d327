//! Redis Cluster: the same exactness with a fleet of gateways, accounts
//! spread over every primary, and a slot moving under load.

use std::sync::Arc;
use std::time::Duration;

use crate::support::cluster::RedisCluster;
use crate::support::gateway::{config_toml, Setup, TestGateway};
use crate::support::money::{assert_ledger_matches_vendors, by_path, Tally};
use crate::support::upstream::RecordingUpstream;
use crate::support::wait::wait_until;

fn cluster_toml(cluster: &RedisCluster, upstream: &RecordingUpstream) -> String {
    config_toml(&Setup::new(&upstream.url())).replace(
        "backend = \"memory\"",
        &format!("cluster = {}", cluster.toml_urls()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_gateways_on_a_cluster_admit_exactly_142() {
    let cluster = RedisCluster::start();
    let upstream = RecordingUpstream::start().await;
    let toml = cluster_toml(&cluster, &upstream);
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(Arc::new(TestGateway::start_toml(&toml).await));
    }
    let key = gateways[0].account_with_key("busy", "small").await;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(128));
    let mut tasks = Vec::new();
    for i in 0..2000 {
        let gateway = gateways[i % 3].clone();
        let key = key.to_owned();
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let status = gateway.post_as(&key, "/v1/paid", "x").await.status;
            drop(permit);
            status
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.add(task.await.unwrap());
    }
    let view = gateways[1].ledger_view(&["busy"]).await;
    let report = format!(
        "statuses {tally}; ledger used {}; vendor {}",
        view.used,
        upstream.summary()
    );
    assert_eq!(
        (tally.count(200), tally.count(429)),
        (142, 1858),
        "only 200 and 429: {report}"
    );
    assert_eq!(upstream.reached(), 142, "{report}");
    assert_eq!(view.used, 994, "{report}");
    assert_eq!(view.debits.len(), 142, "{report}");
    assert_ledger_matches_vendors(&view, &[&upstream], by_path(&[("/v1/paid", 7)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_spread_over_all_three_primaries() {
    let cluster = RedisCluster::start();
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start_toml(&cluster_toml(&cluster, &upstream)).await;
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..24 {
        let id = format!("site-{i}");
        let key = gateway.account_with_key(&id, "pro").await;
        let paid = gateway.post_as(&key, "/v1/paid", "x").await;
        assert_eq!(paid.status, 200);
        // Every key of the account hashes to the account's slot.
        let slot = cluster.keyslot(&format!("cg:{{{id}}}:w"));
        assert_eq!(slot, cluster.keyslot(&format!("cg:{{{id}}}:a")));
        owners.insert(cluster.owner_of(slot));
    }
    assert_eq!(owners.len(), 3, "accounts on every primary: {owners:?}");
}

/// 3500 credits at 7 each.
const MOVING: &str = "[plans.medium]\nmonthly_allowance = 3500\n";
const MOVING_FITS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_a_busy_accounts_slot_under_load_never_overspends() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let cluster = Arc::new(RedisCluster::start());
    let upstream = RecordingUpstream::start().await;
    let toml = format!("{}\n{MOVING}", cluster_toml(&cluster, &upstream));
    let gateway = Arc::new(TestGateway::start_toml(&toml).await);
    let key = gateway.account_with_key("busy", "medium").await;
    let slot = cluster.keyslot("cg:{busy}:w");
    let from = cluster.owner_of(slot);
    let to = (from + 1) % 3;

    // Eight clients send back to back, paced while the slot moves (so the
    // allowance outlasts the move), at full speed after it, and stop once
    // the move is done and they are refused for credits: the account is
    // then spent, and must be spent exactly. Each answer is tagged with the
    // phase of the move it was sent and answered in.
    const BEFORE: usize = 0;
    const MOVED: usize = 3;
    let phase = Arc::new(AtomicUsize::new(BEFORE));
    let answered = Arc::new(AtomicUsize::new(0));
    let moved = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (gateway, key) = (gateway.clone(), key.clone());
        let (phase, answered, moved) = (phase.clone(), answered.clone(), moved.clone());
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            loop {
                let sent_in = phase.load(Ordering::SeqCst);
                let response = gateway.post_as(&key, "/v1/paid", "x").await;
                let answered_in = phase.load(Ordering::SeqCst);
                answered.fetch_add(1, Ordering::SeqCst);
                let retry_after = response.header("retry-after").is_some();
                answers.push((response.status, retry_after, sent_in, answered_in));
                if moved.load(Ordering::SeqCst) && response.status == 429 {
                    return answers;
                }
                assert!(answers.len() < 5_000, "the load never ran out of credits");
                if !moved.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    wait_until(
        "the account's keys to exist (some admissions)",
        async || match upstream.count() {
            n if n >= 20 => Ok(()),
            n => Err(format!("{n} admitted")),
        },
    )
    .await;
    // The move holds in each intermediate state until the load has been
    // answered there a few times.
    let mover = cluster.clone();
    let (mover_phase, mover_answered) = (phase.clone(), answered.clone());
    tokio::task::spawn_blocking(move || {
        let mut hold = |state: &str| {
            mover_phase.fetch_add(1, Ordering::SeqCst);
            let start = mover_answered.load(Ordering::SeqCst);
            let deadline = std::time::Instant::now() + crate::support::http::GENEROUS;
            while mover_answered.load(Ordering::SeqCst) < start + 16 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no load answered while the slot was {state}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        mover.move_slot(slot, from, to, &mut hold);
    })
    .await
    .unwrap();
    phase.store(MOVED, Ordering::SeqCst);
    moved.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    assert_eq!(cluster.owner_of(slot), to, "the slot moved");

    let tally: Tally = answers.iter().map(|(status, ..)| *status).collect();
    // Sent and answered within one intermediate state of the move.
    let in_state = |state: usize| -> Tally {
        answers
            .iter()
            .filter(|(_, _, sent, answered)| *sent == state && *answered == state)
            .map(|(status, ..)| *status)
            .collect()
    };
    let (migrating, migrated) = (in_state(1), in_state(2));
    let view = gateway.ledger_view(&["busy"]).await;
    let report = format!(
        "statuses {tally}; while migrating: {migrating}; while migrated, not yet \
         reassigned: {migrated}; ledger used {}; vendor {}",
        view.used,
        upstream.summary()
    );
    eprintln!("resharding: {report}");
    for (status, has_retry_after, ..) in &answers {
        match status {
            200 | 429 => {}
            503 => assert!(has_retry_after, "503 without Retry-After: {report}"),
            other => panic!("unexpected {other} during resharding: {report}"),
        }
    }
    assert!(
        migrating.total() > 0 && migrated.total() > 0,
        "the load did not overlap both states of the move: {report}"
    );
    assert_eq!(tally.count(200), MOVING_FITS, "admitted: {report}");
    assert_eq!(view.used, MOVING_FITS as u64 * 7, "{report}");
    assert_eq!(upstream.reached(), MOVING_FITS, "{report}");
    assert_ledger_matches_vendors(&view, &[&upstream], by_path(&[("/v1/paid", 7)]));
}
