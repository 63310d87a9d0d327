//! Redis going away and coming back, without restarting the gateway.

use std::time::{Duration, Instant};

use super::assert_problem;
use crate::support::gateway::{Setup, TestGateway};
use crate::support::money::assert_ledger_matches_vendors;
use crate::support::redis::RedisServer;
use crate::support::upstream::RecordingUpstream;
use crate::support::wait::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_a_quick_503_and_service_resumes_when_it_returns() {
    let mut redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let url = redis.url();
    let gateway = TestGateway::start(&Setup::new(&upstream.url()).redis(&url).failing_fast()).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let ok = gateway.post_as(&key, "/v1/paid", "x").await;
    assert_eq!(ok.status, 200);

    redis.kill();
    for _ in 0..5 {
        let started = Instant::now();
        let down = gateway.post_as(&key, "/v1/paid", "x").await;
        assert_problem(&down, 503, "ledger_unavailable");
        assert!(down.header("retry-after").is_some());
        // Bounded, not hung: the ledger timeout is 250 ms a call; only a
        // request that waits for Redis itself reaches 10 s.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        upstream.reached(),
        1,
        "nothing is forwarded while the ledger is down: {}",
        upstream.summary()
    );
    let ready = gateway.client.get(&gateway.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 503);

    // A fresh, empty Redis on the same port: the script cache is gone too.
    redis.restart();
    let key = gateway.account_with_key("site-2", "pro").await;
    let recovered = wait_until("a paid request to succeed again", async || {
        let response = gateway.post_as(&key, "/v1/paid", "x").await;
        match response.status {
            200 => Ok(response),
            _ => Err(format!("{} {}", response.status, response.text())),
        }
    })
    .await;
    let recovered_id = recovered.header("x-request-id").unwrap().to_owned();
    // site-1's debit went with the old Redis; site-2's is the one request
    // that reached the vendor since.
    let view = gateway.ledger_view(&["site-2"]).await;
    assert_eq!(view.used, 7);
    assert_ledger_matches_vendors(&view, &[&upstream], |request| {
        if request.request_id() == recovered_id {
            7
        } else {
            0
        }
    });
    let ready = gateway.client.get(&gateway.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_unavailable_allow_forwards_without_debit() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let url = redis.url();
    let mut setup = Setup::new(&upstream.url()).redis(&url).failing_fast();
    setup.on_unavailable = "allow";
    let gateway = TestGateway::start(&setup).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    // Warm the key cache, then make Redis unreachable within its lifetime.
    let metered = gateway.post_as(&key, "/v1/paid", "x").await;
    assert_eq!(metered.status, 200);
    let metered_id = metered.header("x-request-id").unwrap().to_owned();
    // Frozen rather than killed: the debit is sent, times out, and waits on
    // Redis' socket. "Without debit" must still hold once Redis wakes and
    // runs it.
    redis.signal("STOP");
    let allowed = gateway.post_as(&key, "/v1/paid", "x").await;
    redis.signal("CONT");
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(upstream.count(), 2, "{}", upstream.summary());
    assert_eq!(
        gateway
            .metrics()
            .await
            .get("creditgate_unmetered_requests_total{route=\"paid\"}"),
        1.0
    );
    let view = gateway.ledger_view(&["site-1"]).await;
    assert_eq!(
        view.debits.len(),
        1,
        "only the metered request has a debit: {view:?}"
    );
    assert_ledger_matches_vendors(&view, &[&upstream], |request| {
        if request.request_id() == metered_id {
            7
        } else {
            0
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_durable_refuses_a_redis_that_could_lose_debits() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let url = redis.url();
    let mut setup = Setup::new(&upstream.url()).redis(&url);
    setup.extra = "";
    let toml = crate::support::gateway::config_toml(&setup).replace(
        "on_unavailable = \"reject\"",
        "on_unavailable = \"reject\"\nrequire_durable = true",
    );
    let config = crate::support::gateway::parse(&toml);
    let refused = creditgate::start(config.clone()).await;
    let Err(error) = refused else {
        panic!("started on a Redis without AOF");
    };
    assert!(error.to_string().contains("appendonly is off"), "{error}");

    redis.cli(&["CONFIG", "SET", "appendonly", "yes"]);
    let running = creditgate::start(config)
        .await
        .expect("durable Redis is accepted");
    let ready = crate::support::http::TestClient::new()
        .get(&format!("http://{}/readyz", running.admin_addr), &[])
        .await
        .json();
    assert_eq!(ready["durability"]["appendonly"], true);
    assert_eq!(ready["durability"]["maxmemory_policy"], "noeviction");
    assert_eq!(ready["durability"]["risks"].as_array().unwrap().len(), 0);
    running.shutdown().await;

    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let gateway = TestGateway::start(&setup).await;
    let ready = gateway
        .client
        .get(&gateway.admin_url("/readyz"), &[])
        .await
        .json();
    assert!(
        ready["durability"]["risks"][0]
            .as_str()
            .unwrap()
            .contains("allkeys-lru"),
        "{ready}"
    );
}

/// A debit whose reply misses the ledger timeout is answered 503 — and must
/// then not stand. A relay holds Redis's replies back longer than the
/// timeout, so every debit of the burst runs in Redis and is recorded, and
/// its request is answered 503 before the reply arrives: each one must be
/// voided in the background, and the ledger must end up holding only what
/// the vendor received.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_debit_whose_reply_came_too_late_is_voided() {
    let redis = RedisServer::start();
    let relay = crate::support::relay::ReplyDelayRelay::start(redis.port()).await;
    let upstream = RecordingUpstream::start().await;
    let url = format!("redis://127.0.0.1:{}/0", relay.port());
    let mut setup = Setup::new(&upstream.url()).redis(&url);
    setup.ledger_timeout = "200ms";
    let gateway = std::sync::Arc::new(TestGateway::start(&setup).await);
    let key = gateway.account_with_key("site-1", "pro").await;
    // Warm up: the key is cached (lookups would time out too) and the
    // gateway has read the Redis clock. A loaded machine may miss even this
    // timeout now and then: those 503s are voided like the rest.
    let mut admitted = 0;
    wait_until("four admitted requests", async || {
        if gateway.post_as(&key, "/v1/paid", "x").await.status == 200 {
            admitted += 1;
        }
        if admitted == 4 {
            Ok(())
        } else {
            Err(format!("{admitted} admitted"))
        }
    })
    .await;
    // Past the batch wait (twice the timeout), so every call fails.
    relay.delay_replies(Duration::from_millis(500));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (gateway, key) = (gateway.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            gateway.post_as(&key, "/v1/paid", "x").await.status
        }));
    }
    let mut tally = crate::support::money::Tally::default();
    for task in tasks {
        tally.add(task.await.unwrap());
    }
    assert_eq!(tally.count(503), 20, "{tally}");
    // Voiding runs in the background: wait for it before reading the ledger.
    let metrics = wait_until("the voids to finish", async || {
        let metrics = gateway.metrics().await;
        match metrics.get("creditgate_charge_work_in_flight") {
            0.0 => Ok(metrics),
            n => Err(format!("{n} in flight")),
        }
    })
    .await;
    relay.delay_replies(Duration::ZERO);
    let outcome = |o: &str| {
        metrics.counter(&format!(
            "creditgate_unconfirmed_debits_total{{outcome=\"{o}\"}}"
        ))
    };
    let (voided, absent, unresolved) =
        (outcome("voided"), outcome("absent"), outcome("unresolved"));
    let view = gateway.ledger_view(&["site-1"]).await;
    eprintln!(
        "statuses {tally}; unconfirmed debits: {voided} voided, {absent} absent, \
         {unresolved} unresolved; ledger used {}; vendor {}",
        view.used,
        upstream.summary()
    );
    // Debits sent in time ran and were recorded (the relay only delays
    // replies): voided. Debits that waited for a batch slot past their
    // deadline were refused by Redis: absent.
    assert!(voided > 0.0, "no late debit was voided");
    assert_eq!(unresolved, 0.0, "Redis was reachable for every void");
    assert_eq!(upstream.reached(), 4, "the 503s must not reach the vendor");
    assert_ledger_matches_vendors(
        &view,
        &[&upstream],
        crate::support::money::by_path(&[("/v1/paid", 7)]),
    );
}
