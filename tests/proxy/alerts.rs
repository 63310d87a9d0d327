//! Threshold alerts end to end (docs/alerts.md): real gateways, a real
//! recording receiver that fails on demand, real redis-server (one, and a
//! Cluster). Every delivery accepted is checked as a receiver would: the
//! signature (with `openssl`), the body's fields, one event id per crossing.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::support::cluster::RedisCluster;
use crate::support::gateway::{config_toml, Setup, TestGateway, ADMIN_TOKEN};
use crate::support::receiver::{verify, AlertReceiver};
use crate::support::redis::RedisServer;
use crate::support::upstream::RecordingUpstream;
use crate::support::wait::wait_until;

const SECRET: &str = "whsec-test-4b1d";

/// `[alerts]` at 0.5, 0.8 and 1.0: on plan `free` (100) with the `image`
/// route (10 credits), the 5th, 8th and 10th requests cross.
fn alerts_toml(receiver: &AlertReceiver, extra: &str) -> String {
    format!(
        "[alerts]\nurl = \"{}\"\nsecret = \"{SECRET}\"\nthresholds = [0.5, 0.8, 1.0]\nretry_base = \"100ms\"\ntimeout = \"1s\"\n{extra}\n",
        receiver.url()
    )
}

async fn gateway(upstream: &RecordingUpstream, redis: Option<&str>, alerts: &str) -> TestGateway {
    let mut setup = Setup::new(&upstream.url());
    setup.extra = alerts;
    if let Some(url) = redis {
        setup = setup.redis(url);
    }
    TestGateway::start(&setup).await
}

async fn spend(gateway: &TestGateway, key: &str, requests: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..requests {
        statuses.push(
            gateway
                .post_as(key, "/v1/images/generate", "x")
                .await
                .status,
        );
    }
    statuses
}

async fn listed(gateway: &TestGateway, state: &str) -> Vec<Value> {
    let response = gateway
        .admin_get(&format!("/admin/v1/alerts?state={state}"))
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["state"], state);
    body["items"].as_array().expect("items").clone()
}

/// (threshold, used, allowance, available) of verified deliveries.
fn facts(bodies: &[Value]) -> Vec<(f64, u64, u64, u64)> {
    let mut out: Vec<_> = bodies
        .iter()
        .map(|b| {
            (
                b["threshold"].as_f64().unwrap(),
                b["used"].as_u64().unwrap(),
                b["monthly_allowance"].as_u64().unwrap(),
                b["available"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

async fn crossing_delivers_one_signed_alert_per_threshold(redis: Option<&str>) {
    let upstream = RecordingUpstream::start().await;
    let receiver = AlertReceiver::start().await;
    let toml = alerts_toml(&receiver, "");
    let gateway = gateway(&upstream, redis, &toml).await;
    let key = gateway.account_with_key("site-1", "free").await;
    let quiet = gateway.account_with_key("site-2", "free").await;
    assert_eq!(spend(&gateway, &quiet, 4).await, [200; 4]); // 40: below 0.5
    let statuses = spend(&gateway, &key, 11).await;
    assert_eq!(statuses[..10], [200; 10]);
    assert_eq!(statuses[10], 429, "the 11th does not fit");
    let accepted = receiver.wait_accepted(3).await;
    let bodies: Vec<Value> = accepted.iter().map(|d| verify(SECRET, d)).collect();
    assert_eq!(
        facts(&bodies),
        [(0.5, 50, 100, 50), (0.8, 80, 100, 20), (1.0, 100, 100, 0)]
    );
    for body in &bodies {
        assert_eq!(body["account"], "site-1");
        assert!(body["at"].as_str().unwrap().ends_with('Z'), "{body}");
        let fields: BTreeSet<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from([
                "event_id",
                "account",
                "threshold",
                "used",
                "monthly_allowance",
                "available",
                "at"
            ])
        );
    }
    let ids: BTreeSet<String> = accepted.iter().map(|d| d.event_id()).collect();
    assert_eq!(ids.len(), 3);
    // Delivered alerts leave the queue; nothing else was sent.
    wait_until("the queue to empty", async || {
        let pending = listed(&gateway, "pending").await;
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("{pending:?}"))
        }
    })
    .await;
    assert_eq!(
        receiver.deliveries().len(),
        3,
        "{:?}",
        receiver.deliveries()
    );
    assert!(listed(&gateway, "failed").await.is_empty());
    let metrics = gateway.metrics().await;
    assert_eq!(metrics.get("creditgate_alerts_queued_total"), 3.0);
    assert_eq!(metrics.get("creditgate_alerts_delivered_total"), 3.0);
    assert_eq!(metrics.get("creditgate_alerts_failed_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_crossing_delivers_one_signed_alert_per_threshold() {
    crossing_delivers_one_signed_alert_per_threshold(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crossing_delivers_one_signed_alert_per_threshold() {
    let redis = RedisServer::start();
    crossing_delivers_one_signed_alert_per_threshold(Some(&redis.url())).await;
    // The queue and the index are empty again.
    assert_eq!(redis.cli(&["EXISTS", "cg:{site-1}:q"]), "0");
    assert_eq!(redis.cli(&["ZCARD", "cg:alerts"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_crossing_delivers_one_signed_alert_per_threshold() {
    let cluster = RedisCluster::start();
    let upstream = RecordingUpstream::start().await;
    let receiver = AlertReceiver::start().await;
    let toml = config_toml(&Setup::new(&upstream.url())).replace(
        "backend = \"memory\"",
        &format!("cluster = {}", cluster.toml_urls()),
    ) + &alerts_toml(&receiver, "");
    let gateway = TestGateway::start_toml(&toml).await;
    let mut keys = Vec::new();
    for id in ["site-1", "site-2", "site-3"] {
        keys.push(gateway.account_with_key(id, "free").await);
    }
    for key in &keys {
        assert_eq!(spend(&gateway, key, 5).await, [200; 5]); // each crosses 0.5
    }
    let accepted = receiver.wait_accepted(3).await;
    let accounts: BTreeSet<String> = accepted
        .iter()
        .map(|d| verify(SECRET, d)["account"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(accounts.len(), 3, "one alert per account: {accepted:?}");
    wait_until("the queues to empty", async || {
        let pending = listed(&gateway, "pending").await;
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("{pending:?}"))
        }
    })
    .await;
    assert_eq!(receiver.deliveries().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_rearms_a_threshold_and_the_next_crossing_is_a_new_event() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let receiver = AlertReceiver::start().await;
    let toml = alerts_toml(&receiver, "");
    let gateway = gateway(&upstream, Some(&redis.url()), &toml).await;
    let key = gateway.account_with_key("site-1", "free").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let response = gateway.post_as(&key, "/v1/images/generate", "x").await;
        assert_eq!(response.status, 200);
        ids.push(response.header("x-request-id").unwrap().to_owned());
    }
    let first = receiver.wait_accepted(1).await;
    assert_eq!(verify(SECRET, &first[0])["used"], 50);
    // 60 → refund one: 40, below 0.5 again.
    assert_eq!(spend(&gateway, &key, 1).await, [200]);
    for id in &ids[..2] {
        let refund = gateway
            .client
            .post(
                &gateway.admin_url("/admin/v1/accounts/site-1/refunds"),
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                json!({ "request_id": id }).to_string(),
            )
            .await;
        assert_eq!(refund.status, 200, "{}", refund.text());
    }
    assert_eq!(gateway.used("site-1").await, 40);
    assert_eq!(spend(&gateway, &key, 1).await, [200]); // 50: crosses again
    let accepted = receiver.wait_accepted(2).await;
    let second = verify(SECRET, &accepted[1]);
    assert_eq!(
        (second["threshold"].as_f64(), second["used"].as_u64()),
        (Some(0.5), Some(50))
    );
    assert_ne!(accepted[0].event_id(), accepted[1].event_id());
    assert_eq!(receiver.deliveries().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_until_it_recovers() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let receiver = AlertReceiver::start().await;
    receiver.set_failing(true);
    let toml = alerts_toml(&receiver, "");
    let gateway = gateway(&upstream, Some(&redis.url()), &toml).await;
    let key = gateway.account_with_key("site-1", "free").await;
    assert_eq!(spend(&gateway, &key, 5).await, [200; 5]);
    // Retried while failing; the queue shows the attempts and the error.
    let item = wait_until("a few failed attempts", async || {
        let pending = listed(&gateway, "pending").await;
        match pending.first() {
            // An attempt is counted when claimed, before its POST arrives.
            Some(item)
                if item["attempts"].as_u64() >= Some(3) && receiver.deliveries().len() >= 3 =>
            {
                Ok(item.clone())
            }
            _ => Err(format!(
                "{pending:?} / {} deliveries",
                receiver.deliveries().len()
            )),
        }
    })
    .await;
    assert!(
        item["last_error"].as_str().unwrap().contains("500"),
        "{item}"
    );
    assert!(item["next_attempt_at"].is_string(), "{item}");
    assert!(receiver.accepted().is_empty());
    receiver.set_failing(false);
    let accepted = receiver.wait_accepted(1).await;
    let delivered = verify(SECRET, &accepted[0]);
    // Every attempt carried the same event, each signed anew.
    let attempts = receiver.deliveries();
    assert!(attempts.len() >= 4, "{attempts:?}");
    for attempt in &attempts {
        assert_eq!(verify(SECRET, attempt), delivered);
    }
    wait_until("the queue to empty", async || {
        let pending = listed(&gateway, "pending").await;
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("{pending:?}"))
        }
    })
    .await;
    let metrics = gateway.metrics().await;
    assert_eq!(metrics.get("creditgate_alerts_delivered_total"), 1.0);
    assert!(metrics.get("creditgate_alert_attempts_failed_total") >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_marked_failed_after_retry_for() {
    let upstream = RecordingUpstream::start().await;
    let receiver = AlertReceiver::start().await;
    receiver.set_failing(true);
    let toml = alerts_toml(&receiver, "retry_for = \"1s\"");
    let gateway = gateway(&upstream, None, &toml).await;
    let key = gateway.account_with_key("site-1", "free").await;
    assert_eq!(spend(&gateway, &key, 5).await, [200; 5]);
    let failed = wait_until("the alert to be given up on", async || {
        let failed = listed(&gateway, "failed").await;
        if failed.len() == 1 {
            Ok(failed)
        } else {
            Err(format!("{failed:?}"))
        }
    })
    .await;
    assert_eq!(failed[0]["state"], "failed");
    assert_eq!(failed[0]["account"], "site-1");
    assert!(failed[0]["drop_at"].is_string());
    assert!(listed(&gateway, "pending").await.is_empty());
    assert_eq!(
        gateway
            .metrics()
            .await
            .get("creditgate_alerts_failed_total"),
        1.0
    );
    // The command line shows the same list.
    let admin_url = gateway.admin_url("");
    let cli = tokio::task::spawn_blocking(move || {
        crate::support::process::run(
            &[
                "alerts",
                "--state",
                "failed",
                "--admin-url",
                &admin_url,
                "--token",
                ADMIN_TOKEN,
            ],
            &[],
        )
    })
    .await
    .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let printed: Value = serde_json::from_slice(&cli.stdout).expect("CLI prints JSON");
    assert_eq!(printed["items"][0]["event_id"], failed[0]["event_id"]);
    // Given up on: not sent again, even to a healthy receiver.
    receiver.set_failing(false);
    let attempts = receiver.deliveries().len();
    assert_eq!(spend(&gateway, &key, 3).await, [200; 3]); // 80: crosses 0.8
    let accepted = receiver.wait_accepted(1).await;
    assert_eq!(verify(SECRET, &accepted[0])["threshold"], 0.8);
    assert_eq!(receiver.deliveries().len(), attempts + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_alert_is_delivered_by_the_next_process_after_a_restart() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let receiver = AlertReceiver::start().await;
    receiver.set_failing(true);
    let toml = alerts_toml(&receiver, "");
    let first = gateway(&upstream, Some(&redis.url()), &toml).await;
    let key = first.account_with_key("site-1", "free").await;
    assert_eq!(spend(&first, &key, 5).await, [200; 5]);
    wait_until("a failed attempt", async || {
        let pending = listed(&first, "pending").await;
        match pending.first() {
            Some(item) if item["attempts"].as_u64() >= Some(1) => Ok(()),
            _ => Err(format!("{pending:?}")),
        }
    })
    .await;
    first.shutdown().await;
    let before = receiver.deliveries().len();
    receiver.set_failing(false);
    let second = gateway(&upstream, Some(&redis.url()), &toml).await;
    let accepted = receiver.wait_accepted(1).await;
    let body = verify(SECRET, &accepted[0]);
    assert_eq!(
        (body["account"].as_str(), body["used"].as_u64()),
        (Some("site-1"), Some(50))
    );
    assert!(receiver.deliveries().len() > before);
    // The new process delivered it and counted it; the old one is gone.
    wait_until("the new process to count the delivery", async || {
        let delivered = second
            .metrics()
            .await
            .get("creditgate_alerts_delivered_total");
        if delivered == 1.0 {
            Ok(())
        } else {
            Err(format!("{delivered}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_one_redis_deliver_each_alert_once() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let receiver = AlertReceiver::start().await;
    let toml = alerts_toml(&receiver, "");
    let a = gateway(&upstream, Some(&redis.url()), &toml).await;
    let b = gateway(&upstream, Some(&redis.url()), &toml).await;
    let accounts = ["site-1", "site-2", "site-3", "site-4"];
    let mut keys = Vec::new();
    for id in accounts {
        keys.push(a.account_with_key(id, "free").await);
    }
    // Each account's ten requests alternate between the gateways, all at once.
    let runs = keys.iter().map(|key| {
        let (a, b) = (&a, &b);
        async move {
            let mut statuses = Vec::new();
            for n in 0..10 {
                let gateway = if n % 2 == 0 { a } else { b };
                statuses.push(
                    gateway
                        .post_as(key, "/v1/images/generate", "x")
                        .await
                        .status,
                );
            }
            statuses
        }
    });
    for statuses in futures_util::future::join_all(runs).await {
        assert_eq!(statuses, [200; 10]);
    }
    let accepted = receiver.wait_accepted(12).await;
    wait_until("both queues to empty", async || {
        let pending = listed(&a, "pending").await;
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("{pending:?}"))
        }
    })
    .await;
    let ids: BTreeSet<String> = accepted.iter().map(|d| d.event_id()).collect();
    assert_eq!(ids.len(), 12, "12 crossings, 12 events");
    assert_eq!(
        receiver.deliveries().len(),
        12,
        "a healthy receiver gets each alert once: {:?}",
        receiver.deliveries()
    );
    for delivery in &accepted {
        verify(SECRET, delivery);
    }
    let delivered = a.metrics().await.get("creditgate_alerts_delivered_total")
        + b.metrics().await.get("creditgate_alerts_delivered_total");
    assert_eq!(delivered, 12.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_never_holds_up_requests() {
    let upstream = RecordingUpstream::start().await;
    let receiver = AlertReceiver::start().await;
    receiver.set_hanging(true);
    let toml = alerts_toml(&receiver, "");
    let gateway = gateway(&upstream, None, &toml).await;
    let key = gateway.account_with_key("site-1", "free").await;
    assert_eq!(spend(&gateway, &key, 5).await, [200; 5]); // crosses 0.5
    wait_until("an attempt to hang at the receiver", async || {
        let n = receiver.deliveries().len();
        if n >= 1 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    // While the receiver holds the alert, requests are answered as ever.
    let statuses = spend(&gateway, &key, 6).await;
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    assert_eq!(upstream.count(), 10);
    assert_eq!(gateway.used("site-1").await, 100);
    assert!(receiver.accepted().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_above_the_reservation_sends_the_alert_it_crosses() {
    use crate::support::upstream::Behavior;
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let receiver = AlertReceiver::start().await;
    let toml = format!(
        r#"
[[routes]]
name = "agent"
method = "POST"
path = "/v2/agent"
upstream = "vendor"
cost = 1
units = {{ json = "/max_tokens", default = 1000, max = 32000, per = 1000 }}
settle = {{ header = "x-usage-tokens", per = 1000, max = 100 }}

{}"#,
        alerts_toml(&receiver, "")
    );
    let gateway = gateway(&upstream, Some(&redis.url()), &toml).await;
    let key = gateway.account_with_key("site-1", "free").await;
    upstream.set_behavior(Behavior::BodyWithHeaders {
        status: 200,
        headers: vec![("x-usage-tokens".into(), "60000".into())],
        body: b"{}".to_vec(),
    });
    // Reserved at 1 credit (below 0.5), settled at 60 (above it).
    let response = gateway
        .post_as(&key, "/v2/agent", r#"{"max_tokens": 1000}"#)
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-credits-cost"), Some("60"));
    let accepted = receiver.wait_accepted(1).await;
    let body = verify(SECRET, &accepted[0]);
    assert_eq!(
        (
            body["threshold"].as_f64(),
            body["used"].as_u64(),
            body["available"].as_u64()
        ),
        (Some(0.5), Some(60), Some(40))
    );
    assert_eq!(gateway.used("site-1").await, 60);
    assert_eq!(receiver.deliveries().len(), 1);
}

/// The real binary: the secret from the environment, and a reload (SIGHUP)
/// that changes the thresholds and the receiver applies to the next debit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_alert_settings_and_reads_the_secret_from_the_environment() {
    use crate::support::process::{GatewayProcess, TempDir};
    let upstream = RecordingUpstream::start().await;
    let old = AlertReceiver::start().await;
    let new = AlertReceiver::start().await;
    let config = |receiver: &AlertReceiver, thresholds: &str| {
        config_toml(&Setup::new(&upstream.url()))
            .replacen("listen = \"127.0.0.1:0\"", "listen = \"{DATA}\"", 1)
            .replacen("listen = \"127.0.0.1:0\"", "listen = \"{ADMIN}\"", 1)
            + &format!(
                "[alerts]\nurl = \"{}\"\nsecret = \"${{ALERT_SECRET}}\"\nthresholds = {thresholds}\nretry_base = \"100ms\"\n",
                receiver.url()
            )
    };
    let dir = TempDir::new("alerts-reload");
    let process = GatewayProcess::start(&dir, &config(&old, "[0.9]"), &[("ALERT_SECRET", SECRET)]);
    let client = crate::support::http::TestClient::new();
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let put = client
        .put_json(
            &process.admin_url("/admin/v1/accounts/site-1"),
            &[("authorization", &auth)],
            json!({"plan": "free"}),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let key = client
        .post(
            &process.admin_url("/admin/v1/accounts/site-1/keys"),
            &[("authorization", &auth)],
            "",
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let image = async || {
        client
            .post_as(&key, &process.url("/v1/images/generate"), "x")
            .await
            .status
    };
    for _ in 0..5 {
        assert_eq!(image().await, 200); // 50: below 0.9
    }
    assert_eq!(
        process
            .metrics()
            .await
            .get("creditgate_alerts_queued_total"),
        0.0
    );

    std::fs::write(
        &process.config_path,
        config(&new, "[0.6, 0.9]")
            .replace("{DATA}", &format!("127.0.0.1:{}", process.data_port))
            .replace("{ADMIN}", &format!("127.0.0.1:{}", process.admin_port)),
    )
    .unwrap();
    process.signal("HUP");
    wait_until("the reload", async || {
        let metrics = process.metrics().await;
        let reloaded = metrics.counter("creditgate_config_reloads_total{result=\"success\"}");
        if reloaded >= 1.0 {
            Ok(())
        } else {
            Err(process.logs())
        }
    })
    .await;
    assert_eq!(image().await, 200); // 60: crosses 0.6
    let accepted = new.wait_accepted(1).await;
    let body = verify(SECRET, &accepted[0]);
    assert_eq!(
        (body["threshold"].as_f64(), body["used"].as_u64()),
        (Some(0.6), Some(60))
    );
    assert!(old.deliveries().is_empty(), "{:?}", old.deliveries());
    assert_eq!(
        process
            .metrics()
            .await
            .get("creditgate_alerts_queued_total"),
        1.0
    );
}

/// A gateway shut down while an attempt hangs hands the alert back: the
/// next process sends it at once instead of waiting out the lease
/// (2 × 30 s + 5 s here, longer than this test waits for anything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_hands_back_the_alert_it_was_sending() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let receiver = AlertReceiver::start().await;
    receiver.set_hanging(true);
    let toml = alerts_toml(&receiver, "").replace("timeout = \"1s\"", "timeout = \"30s\"");
    let first = gateway(&upstream, Some(&redis.url()), &toml).await;
    let key = first.account_with_key("site-1", "free").await;
    assert_eq!(spend(&first, &key, 5).await, [200; 5]);
    wait_until("an attempt to hang at the receiver", async || {
        let n = receiver.deliveries().len();
        if n >= 1 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    first.shutdown().await;
    let pending = redis.cli(&["HVALS", "cg:{site-1}:q"]);
    assert!(pending.contains("shut down"), "handed back: {pending}");
    receiver.set_hanging(false);
    let _second = gateway(&upstream, Some(&redis.url()), &toml).await;
    let accepted = receiver.wait_accepted(1).await;
    assert_eq!(verify(SECRET, &accepted[0])["used"], 50);
}
