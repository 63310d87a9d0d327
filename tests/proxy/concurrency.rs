//! Exact admission under concurrency: no interleaving spends past the allowance.

use std::sync::Arc;

use crate::support::gateway::{Setup, TestGateway};
use crate::support::money::{assert_ledger_matches_vendors, by_path, Tally};
use crate::support::redis::RedisServer;
use crate::support::upstream::RecordingUpstream;

/// Fires `total` concurrent POSTs of cost 7 spread over `gateways`.
async fn flood(gateways: &[Arc<TestGateway>], key: &str, total: usize) -> Tally {
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let gateway = gateways[i % gateways.len()].clone();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            gateway.post_as(&key, "/v1/paid", "x").await.status
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.add(task.await.expect("request task"));
    }
    tally
}

/// 1000 credits at 7 each: exactly 142 admitted, every other request a 429,
/// the ledger at 994 and equal to what the vendor received.
async fn assert_exact(tally: &Tally, gateway: &TestGateway, upstream: &RecordingUpstream) {
    let view = gateway.ledger_view(&["busy"]).await;
    let report = format!(
        "statuses {tally}; ledger used {}; vendor {}",
        view.used,
        upstream.summary()
    );
    assert_eq!(tally.count(200), 142, "admitted: {report}");
    assert_eq!(tally.others(&[200, 429]), 0, "only 200 and 429: {report}");
    assert_eq!(view.used, 994, "{report}");
    assert_eq!(upstream.reached(), 142, "{report}");
    assert_ledger_matches_vendors(&view, &[upstream], by_path(&[("/v1/paid", 7)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_redis_admit_exactly_floor_allowance_over_cost() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let url = redis.url();
    let setup = Setup::new(&upstream.url()).redis(&url);
    let first = Arc::new(TestGateway::start(&setup).await);
    let second = Arc::new(TestGateway::start(&setup).await);
    let key = first.account_with_key("busy", "small").await;

    let tally = flood(&[first.clone(), second.clone()], &key, 320).await;
    assert_exact(&tally, &first, &upstream).await;
    assert_eq!(second.used("busy").await, 994);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_ledger_admits_exactly_floor_allowance_over_cost() {
    let upstream = RecordingUpstream::start().await;
    let gateway = Arc::new(TestGateway::start(&Setup::new(&upstream.url())).await);
    let key = gateway.account_with_key("busy", "small").await;
    let tally = flood(std::slice::from_ref(&gateway), &key, 320).await;
    assert_exact(&tally, &gateway, &upstream).await;
}
