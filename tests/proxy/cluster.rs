//! Redis Cluster: the same exactness with a fleet of gateways, accounts
//! spread over every primary, and a slot moving under load.

use std::sync::Arc;
use std::time::Duration;

use crate::support::cluster::RedisCluster;
use crate::support::gateway::{config_toml, Setup, TestGateway};
use crate::support::upstream::RecordingUpstream;

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
    let mut tasks = Vec::new();
    for i in 0..2000 {
        let gateway = gateways[i % 3].clone();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            gateway.post_as(&key, "/v1/paid", "x").await.status
        }));
        // At most ~128 in flight.
        if tasks.len() >= 128 {
            let batch: Vec<_> = tasks.drain(..64).collect();
            for task in batch {
                let status = task.await.unwrap();
                assert!(status == 200 || status == 429, "{status}");
            }
        }
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(upstream.count(), 142);
    assert_eq!(gateways[1].used("busy").await, 994);
    let history = gateways[2]
        .admin_get("/admin/v1/accounts/busy/history?limit=500")
        .await
        .json();
    assert_eq!(history["items"].as_array().unwrap().len(), 142);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_a_busy_accounts_slot_under_load_never_overspends() {
    let cluster = Arc::new(RedisCluster::start());
    let upstream = RecordingUpstream::start().await;
    let gateway = Arc::new(TestGateway::start_toml(&cluster_toml(&cluster, &upstream)).await);
    let key = gateway.account_with_key("busy", "small").await;
    let slot = cluster.keyslot("cg:{busy}:w");
    let from = cluster.owner_of(slot);
    let to = (from + 1) % 3;

    let load = {
        let gateway = gateway.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..40 {
                let mut batch = Vec::new();
                for _ in 0..8 {
                    let gateway = gateway.clone();
                    let key = key.to_owned();
                    batch.push(tokio::spawn(async move {
                        let response = gateway.post_as(&key, "/v1/paid", "x").await;
                        (response.status, response.header("retry-after").is_some())
                    }));
                }
                for task in batch {
                    statuses.push(task.await.unwrap());
                }
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mover = cluster.clone();
    tokio::task::spawn_blocking(move || mover.move_slot(slot, from, to))
        .await
        .unwrap();
    let statuses = load.await.unwrap();
    assert_eq!(cluster.owner_of(slot), to, "the slot moved");
    for (status, has_retry_after) in &statuses {
        match status {
            200 | 429 => {}
            503 => assert!(has_retry_after, "503 without Retry-After"),
            other => panic!("unexpected {other} during resharding"),
        }
    }
    let admitted = statuses.iter().filter(|(s, _)| *s == 200).count() as u64;
    assert!(admitted <= 142, "overspend: {admitted}");
    assert_eq!(upstream.count() as u64, admitted);
    assert_eq!(
        gateway.used("busy").await,
        admitted * 7,
        "ledger == forwarded × cost"
    );
    eprintln!(
        "resharding: {} requests, {admitted} admitted, {} answered 503",
        statuses.len(),
        statuses.iter().filter(|(s, _)| *s == 503).count()
    );
}
