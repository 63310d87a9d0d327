//! No overspend, ever: many gateway instances on one Redis admit exactly
//! `floor(allowance / cost)`, each request id debited at most once, and the
//! ledger equals what reached the vendor.

use std::sync::Arc;

use crate::support::gateway::{Setup, TestGateway};
use crate::support::http::TestClient;
use crate::support::money::{assert_ledger_matches_vendors, by_path, Tally};
use crate::support::process::{GatewayProcess, TempDir};
use crate::support::redis::RedisServer;
use crate::support::upstream::RecordingUpstream;

fn process_config(redis_url: &str, upstream_url: &str) -> String {
    format!(
        r#"
[server]
listen = "{{DATA}}"
[admin]
listen = "{{ADMIN}}"
token = "t"
[ledger]
redis_url = "{redis_url}"
timeout = "5s"
[plans.small]
monthly_allowance = 1000
[upstreams.vendor]
url = "{upstream_url}"
[[routes]]
name = "paid"
path = "/v1/paid"
upstream = "vendor"
cost = 7
"#
    )
}

/// Sends `total` requests, `in_flight` at a time, round-robin over `urls`;
/// returns the statuses.
async fn flood(urls: Vec<String>, key: String, total: usize, in_flight: usize) -> Tally {
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let client = TestClient::new();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        let url = urls[i % urls.len()].clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let status = client.post_as(&key, &url, "x").await.status;
            drop(permit);
            status
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.add(task.await.unwrap());
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_gateway_processes_admit_exactly_142_of_2000() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let config = process_config(&redis.url(), &upstream.url());
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("fleet{i}"))).collect();
    let fleet: Vec<GatewayProcess> = dirs
        .iter()
        .map(|dir| GatewayProcess::start(dir, &config, &[]))
        .collect();
    let client = TestClient::new();
    let admin = [("authorization", "Bearer t")];
    let put = client
        .put_json(
            &fleet[0].admin_url("/admin/v1/accounts/busy"),
            &admin,
            serde_json::json!({"plan": "small"}),
        )
        .await;
    assert_eq!(put.status, 201);
    let key = client
        .post(
            &fleet[1].admin_url("/admin/v1/accounts/busy/keys"),
            &admin,
            "",
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let urls = fleet.iter().map(|g| g.url("/v1/paid")).collect();
    let tally = flood(urls, key, 2000, 64).await;
    let view = fleet[2].ledger_view("t", &["busy"]).await;
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
    assert_ledger_matches_vendors(&view, &[&upstream], by_path(&[("/v1/paid", 7)]));
    let history = client
        .get(
            &fleet[0].admin_url("/admin/v1/accounts/busy/history?limit=500"),
            &admin,
        )
        .await
        .json();
    let mut ids: Vec<String> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["request_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 142, "each request id debited once");
    let mut seen: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.header("x-request-id").unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(
        seen, ids,
        "the debits are exactly the requests the vendor saw"
    );
}

/// A small deterministic generator, so a failure names its seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_allowances_costs_and_instance_counts_admit_exactly_floor() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let url = redis.url();
    let mut rng = SplitMix(0x5eed_c4ed_17a7_e000);
    for round in 0..6 {
        let allowance = rng.range(50, 2000);
        let cost = rng.range(1, 60);
        let instances = rng.range(1, 3) as usize;
        let mut setup = Setup::new(&upstream.url()).redis(&url);
        let extra = format!(
            "[plans.round{round}]\nmonthly_allowance = {allowance}\n[[routes]]\nname = \"r{round}\"\nmethod = \"POST\"\npath = \"/v1/round/{round}\"\nupstream = \"vendor\"\ncost = {cost}\n"
        );
        setup.extra = &extra;
        let mut gateways = Vec::new();
        for _ in 0..instances {
            gateways.push(TestGateway::start(&setup).await);
        }
        let account = format!("acct-{round}");
        let key = gateways[0]
            .account_with_key(&account, &format!("round{round}"))
            .await;
        let fits = (allowance / cost) as usize;
        let urls = gateways
            .iter()
            .map(|g| g.url(&format!("/v1/round/{round}")))
            .collect();
        let before = upstream.reached();
        let tally = flood(urls, key, fits + 25, 32).await;
        let view = gateways[0].ledger_view(&[&account]).await;
        let report = format!(
            "round {round}: allowance {allowance}, cost {cost}, {instances} instances: \
             statuses {tally}; ledger used {}; vendor {}",
            view.used,
            upstream.summary()
        );
        assert_eq!(tally.count(200), fits, "{report}");
        assert_eq!(tally.others(&[200, 429]), 0, "{report}");
        assert_eq!(view.used, fits as u64 * cost, "{report}");
        assert_eq!(upstream.reached() - before, fits, "{report}");
        let path = format!("/v1/round/{round}");
        assert_ledger_matches_vendors(&view, &[&upstream], by_path(&[(&path, cost)]));
    }
}
