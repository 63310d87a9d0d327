//! Exact admission under concurrency: no interleaving spends past the allowance.

use std::sync::Arc;

use crate::support::gateway::{Setup, TestGateway};
use crate::support::redis::RedisServer;
use crate::support::upstream::RecordingUpstream;

/// Fires `total` concurrent POSTs of cost 7 spread over `gateways` and
/// returns how many were admitted.
async fn flood(gateways: &[Arc<TestGateway>], key: &str, total: usize) -> usize {
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let gateway = gateways[i % gateways.len()].clone();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            gateway.post_as(&key, "/v1/paid", "x").await.status
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        match task.await.expect("request task") {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    admitted
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

    let admitted = flood(&[first.clone(), second.clone()], &key, 320).await;
    assert_eq!(admitted, 142);
    assert_eq!(upstream.count(), 142);
    assert_eq!(first.used("busy").await, 994);
    assert_eq!(second.used("busy").await, 994);
    let mut ids: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.header("x-request-id").unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 142, "every admitted request has its own debit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_ledger_admits_exactly_floor_allowance_over_cost() {
    let upstream = RecordingUpstream::start().await;
    let gateway = Arc::new(TestGateway::start(&Setup::new(&upstream.url())).await);
    let key = gateway.account_with_key("busy", "small").await;
    let admitted = flood(std::slice::from_ref(&gateway), &key, 320).await;
    assert_eq!(admitted, 142);
    assert_eq!(upstream.count(), 142);
    assert_eq!(gateway.used("busy").await, 994);
}
