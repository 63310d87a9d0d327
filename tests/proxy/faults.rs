//! Redis misbehaving under load: frozen, flushed, out of memory, read-only.
//! After each: the ledger equals what reached the upstream minus refunds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::assert_problem;
use crate::support::gateway::{Setup, TestGateway};
use crate::support::money::{assert_ledger_matches_vendors, by_path, Tally};
use crate::support::redis::RedisServer;
use crate::support::upstream::RecordingUpstream;
use crate::support::wait::wait_until;

/// `failing_fast`: a short ledger timeout, where the test makes Redis
/// unresponsive; otherwise one no load can reach.
async fn gateway_on(
    redis: &RedisServer,
    upstream: &RecordingUpstream,
    failing_fast: bool,
) -> (TestGateway, String) {
    let url = redis.url();
    let mut setup = Setup::new(&upstream.url()).redis(&url);
    if failing_fast {
        setup = setup.failing_fast();
    }
    let gateway = TestGateway::start(&setup).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    (gateway, key)
}

async fn paid(gateway: &TestGateway, key: &str) -> crate::support::http::Response {
    gateway.post_as(key, "/v1/paid", "x").await
}

/// The ledger equals what the vendor received: every paid request it got
/// whole costs 7, nothing else is charged.
async fn assert_money(gateway: &TestGateway, upstream: &RecordingUpstream) {
    let view = gateway.ledger_view(&["site-1"]).await;
    assert_ledger_matches_vendors(&view, &[upstream], by_path(&[("/v1/paid", 7)]));
}

/// Waits for the gateway to serve a paid request again.
async fn wait_for_recovery(gateway: &TestGateway, key: &str, after: &str) {
    wait_until(&format!("a 200 after {after}"), async || {
        let response = paid(gateway, key).await;
        match response.status {
            200 => Ok(()),
            _ => Err(format!("{} {}", response.status, response.text())),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_gives_bounded_503s_and_service_resumes_after_sigcont() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let (gateway, key) = gateway_on(&redis, &upstream, true).await;
    assert_eq!(paid(&gateway, &key).await.status, 200);

    redis.signal("STOP");
    let mut slowest = Duration::ZERO;
    let frozen = Instant::now();
    // Longer than the ledger's reconnect threshold (3 s), so the connection
    // is also replaced while Redis is frozen.
    while frozen.elapsed() < Duration::from_millis(3_600) {
        let started = Instant::now();
        let response = paid(&gateway, &key).await;
        let elapsed = started.elapsed();
        slowest = slowest.max(elapsed);
        assert_problem(&response, 503, "ledger_unavailable");
        assert!(response.header("retry-after").is_some());
        // Bounded, not hung: ledger.timeout is 250 ms; 10 s is only reached
        // by a request that waits for Redis itself.
        assert!(elapsed < Duration::from_secs(10), "503 took {elapsed:?}");
    }
    eprintln!("SIGSTOP: slowest 503 took {slowest:?} (ledger.timeout 250ms)");
    assert_eq!(
        upstream.reached(),
        1,
        "nothing forwarded while Redis is frozen: {}",
        upstream.summary()
    );

    // The debits queued on the frozen socket run when Redis wakes: the
    // ledger must refuse them (their requests were answered 503).
    redis.signal("CONT");
    let resumed = Instant::now();
    wait_for_recovery(&gateway, &key, "SIGCONT").await;
    eprintln!("SIGCONT: serving again after {:?}", resumed.elapsed());
    assert_money(&gateway, &upstream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_flush_under_load_fails_no_request() {
    let redis = Arc::new(RedisServer::start());
    let upstream = RecordingUpstream::start().await;
    let (gateway, key) = gateway_on(&redis, &upstream, false).await;
    let gateway = Arc::new(gateway);
    let flusher = {
        let redis = redis.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..40 {
                redis.cli(&["SCRIPT", "FLUSH"]);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let gateway = gateway.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..25 {
                statuses.push(paid(&gateway, &key).await.status);
            }
            statuses
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        for status in task.await.unwrap() {
            tally.add(status);
        }
    }
    flusher.await.unwrap();
    let used = gateway.used("site-1").await;
    assert_eq!(
        tally.count(200),
        400,
        "requests failed while scripts were flushed: statuses {tally}; ledger used {used}; vendor {}",
        upstream.summary()
    );
    assert_eq!(upstream.reached(), 400, "{}", upstream.summary());
    assert_eq!(used, 400 * 7);
    assert_money(&gateway, &upstream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_error_replies_oom_and_readonly_are_503_with_nothing_forwarded() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let (gateway, key) = gateway_on(&redis, &upstream, false).await;
    assert_eq!(paid(&gateway, &key).await.status, 200);

    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    let oom = paid(&gateway, &key).await;
    assert_problem(&oom, 503, "ledger_unavailable");
    assert!(
        !oom.text().to_lowercase().contains("oom"),
        "Redis detail stays internal"
    );
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(paid(&gateway, &key).await.status, 200);

    // A replica of a master that does not exist answers writes with READONLY.
    let nowhere = crate::support::process::free_port().to_string();
    redis.cli(&["REPLICAOF", "127.0.0.1", &nowhere]);
    let readonly = paid(&gateway, &key).await;
    assert_problem(&readonly, 503, "ledger_unavailable");
    redis.cli(&["REPLICAOF", "NO", "ONE"]);
    assert_eq!(paid(&gateway, &key).await.status, 200);

    assert_eq!(upstream.reached(), 3, "{}", upstream.summary());
    assert_eq!(gateway.used("site-1").await, 21);
    assert_money(&gateway, &upstream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_redis_is_503_with_nothing_forwarded() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let (gateway, key) = gateway_on(&redis, &upstream, false).await;
    assert_eq!(paid(&gateway, &key).await.status, 200);
    // A script that never yields: after busy-reply-threshold every other
    // client gets BUSY until it is killed.
    redis.cli(&["CONFIG", "SET", "busy-reply-threshold", "100"]);
    // The thread holds only the URL: should the test fail, dropping the
    // server kills it (and the script) instead of leaking both.
    let runner = {
        let url = redis.url();
        std::thread::spawn(move || {
            let client = redis::Client::open(url).unwrap();
            let mut connection = client.get_connection().unwrap();
            let _: redis::RedisResult<redis::Value> = redis::cmd("EVAL")
                .arg("while true do end")
                .arg(0)
                .query(&mut connection);
        })
    };
    // Once the script has run past the threshold, Redis answers BUSY.
    wait_until("Redis to answer BUSY", async || {
        match redis.try_cli(&["PING"]) {
            Err(error) if error.contains("BUSY") => Ok(()),
            other => Err(format!("PING answered {other:?}")),
        }
    })
    .await;
    let busy = paid(&gateway, &key).await;
    assert_problem(&busy, 503, "ledger_unavailable");
    redis.cli(&["SCRIPT", "KILL"]);
    runner.join().unwrap();
    assert_eq!(upstream.reached(), 1, "{}", upstream.summary());
    wait_for_recovery(&gateway, &key, "SCRIPT KILL").await;
    assert_money(&gateway, &upstream).await;
}
