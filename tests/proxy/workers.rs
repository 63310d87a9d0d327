//! The per-core data plane: what must agree across a gateway's workers
//! does — the money (exact admission across instances × workers), key
//! revocations, config reloads and the metrics.
//!
//! The kernel spreads connections over the workers' listeners by a hash of
//! the connection's addresses, so a check made over [`FRESH_CONNECTIONS`]
//! new connections reaches every worker of a two-worker gateway (the chance
//! that all of them land on one worker is 2 in 2^16).

use std::sync::Arc;

use creditgate::config::Config;

use super::assert_problem;
use crate::support::gateway::{config_toml, parse, Setup, TestGateway, ADMIN_TOKEN};
use crate::support::http::{Response, TestClient};
use crate::support::redis::RedisServer;
use crate::support::upstream::RecordingUpstream;

const FRESH_CONNECTIONS: usize = 16;

fn two_workers(setup: &Setup<'_>) -> Config {
    let mut config = parse(&config_toml(setup));
    config.server.workers = 2;
    config
}

/// One GET per fresh connection (a client of its own each time).
async fn get_on_fresh_connections(gateway: &TestGateway, path: &str, key: &str) -> Vec<Response> {
    let auth = format!("Bearer {key}");
    let mut responses = Vec::with_capacity(FRESH_CONNECTIONS);
    for _ in 0..FRESH_CONNECTIONS {
        responses.push(
            TestClient::new()
                .get(&gateway.url(path), &[("authorization", &auth)])
                .await,
        );
    }
    responses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_of_two_workers_on_one_redis_admit_exactly_floor_allowance_over_cost() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let url = redis.url();
    // A ledger timeout no load on this machine reaches: exactness is
    // judged on what the ledger decided, not on what timed out.
    let mut setup = Setup::new(&upstream.url()).redis(&url);
    setup.ledger_timeout = "10s";
    setup.upstream_timeout = "30s";
    let first = Arc::new(TestGateway::start_config(two_workers(&setup)).await);
    let second = Arc::new(TestGateway::start_config(two_workers(&setup)).await);
    let key = first.account_with_key("busy", "small").await;

    // 320 concurrent POSTs of cost 7 against 1000 credits, each on a
    // connection of its own so they spread over both workers of both
    // instances.
    let mut tasks = Vec::with_capacity(320);
    for i in 0..320 {
        let gateway = if i % 2 == 0 { &first } else { &second }.clone();
        let auth = format!("Bearer {key}");
        tasks.push(tokio::spawn(async move {
            TestClient::new()
                .post(&gateway.url("/v1/paid"), &[("authorization", &auth)], "x")
                .await
                .status
        }));
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for task in tasks {
        *statuses
            .entry(task.await.expect("request task"))
            .or_default() += 1;
    }
    let admitted = statuses.get(&200).copied().unwrap_or(0);
    let used = first.used("busy").await;
    let what_happened = format!(
        "statuses {statuses:?}, ledger used {used}, vendor saw {}",
        upstream.count()
    );
    assert_eq!(admitted, 142, "{what_happened}");
    assert_eq!(statuses.len(), 2, "only 200 and 429: {what_happened}");
    assert_eq!(upstream.count(), 142, "{what_happened}");
    assert_eq!(used, 994, "{what_happened}");
    assert_eq!(second.used("busy").await, 994);
    let mut ids: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.header("x-request-id").unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 142, "every admitted request has its own debit");

    // Every worker's counters are in the instance's one /metrics.
    let first_metrics = first.client.get(&first.admin_url("/metrics"), &[]).await;
    let second_metrics = second.client.get(&second.admin_url("/metrics"), &[]).await;
    let forwarded = |text: &str| -> u64 {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(
                    "creditgate_requests_total{route=\"paid\",outcome=\"forwarded\",status=\"200\"} ",
                )
            })
            .map_or(0, |value| value.trim().parse().expect("count"))
    };
    assert_eq!(
        forwarded(&first_metrics.text()) + forwarded(&second_metrics.text()),
        142
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_worker_at_once() {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start_config(two_workers(&Setup::new(&upstream.url()))).await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    gateway.admin_put_account("site-1", "pro").await;
    let created = gateway
        .client
        .post(
            &gateway.admin_url("/admin/v1/accounts/site-1/keys"),
            &[("authorization", &admin)],
            "",
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let key = created["key"].as_str().expect("key").to_owned();
    let key_id = created["key_id"].as_str().expect("key id").to_owned();
    // Every worker has the key cached.
    for response in get_on_fresh_connections(&gateway, "/v1/free", &key).await {
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let revoked = gateway
        .client
        .delete(
            &gateway.admin_url(&format!("/admin/v1/accounts/site-1/keys/{key_id}")),
            &[("authorization", &admin)],
        )
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text());
    // No cache lifetime to wait out: the instance that revoked forgets at once.
    for response in get_on_fresh_connections(&gateway, "/v1/free", &key).await {
        assert_problem(&response, 401, "unauthenticated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_every_worker_before_it_returns() {
    let upstream = RecordingUpstream::start().await;
    let setup = Setup::new(&upstream.url());
    let gateway = TestGateway::start_config(two_workers(&setup)).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    for response in get_on_fresh_connections(&gateway, "/v1/fresh", &key).await {
        assert_problem(&response, 404, "route_not_found");
    }
    let mut with_route = setup;
    with_route.extra = r#"
[[routes]]
name = "fresh"
method = "GET"
path = "/v1/fresh"
upstream = "vendor"
cost = 0
"#;
    let mut config = parse(&config_toml(&with_route));
    config.server.workers = 2;
    creditgate::reload::apply(&gateway.running().gateway, config).expect("reload");
    for response in get_on_fresh_connections(&gateway, "/v1/fresh", &key).await {
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(upstream.count(), FRESH_CONNECTIONS);
}
