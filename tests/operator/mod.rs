//! The binary as operators run it: `check`, `serve` with signals and reload,
//! the `account` CLI, and what its logs contain.

mod cli;
mod config_refusals;
mod deploy;
mod dev_mode;
mod ledger_repair;
mod metrics_docs;
mod reload_race;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::gateway::VENDOR_KEY;
use crate::support::http::{TestClient, GENEROUS};
use crate::support::money::{assert_ledger_matches_vendors, by_path, by_request_id};
use crate::support::process::{run, GatewayProcess, TempDir};
use crate::support::upstream::{unused_addr, Behavior, RecordingUpstream};
use crate::support::wait::wait_until;

const TOKEN: &str = "operator-token";

fn config(upstream: &str, cost: u64, dead_upstream: &str) -> String {
    format!(
        r#"
[server]
listen = "{{DATA}}"
header_read_timeout = "2s"
drain_timeout = "5s"
[admin]
listen = "{{ADMIN}}"
token = "${{TEST_ADMIN_TOKEN}}"
[plans.pro]
monthly_allowance = 1000
[upstreams.vendor]
url = "{upstream}"
timeout = "500ms"
headers = {{ Authorization = "Bearer ${{TEST_VENDOR_KEY}}" }}
[upstreams.dead]
url = "{dead_upstream}"
[[routes]]
name = "paid"
path = "/v1/paid"
upstream = "vendor"
cost = {cost}
[[routes]]
name = "dead"
path = "/v1/dead"
upstream = "dead"
cost = 3
"#
    )
}

/// Starts a gateway process with its secrets in the environment.
fn start(dir: &TempDir, toml: &str) -> GatewayProcess {
    GatewayProcess::start(
        dir,
        toml,
        &[("TEST_ADMIN_TOKEN", TOKEN), ("TEST_VENDOR_KEY", VENDOR_KEY)],
    )
}

fn cli(gateway: &GatewayProcess, args: &[&str]) -> std::process::Output {
    let admin_url = gateway.admin_url("");
    let mut all = vec!["account", "--admin-url", &admin_url, "--token", TOKEN];
    all.extend_from_slice(args);
    run(&all, &[])
}

fn stdout_json(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[test]
fn check_lists_every_error_with_its_key_path() {
    let dir = TempDir::new("check");
    let good = config("http://127.0.0.1:1", 7, "http://127.0.0.1:2")
        .replace("{DATA}", "127.0.0.1:8080")
        .replace("{ADMIN}", "127.0.0.1:9090");
    let good = dir.write("good.toml", &good);
    let ok = run(
        &["check", "--config", good.to_str().unwrap()],
        &[("TEST_ADMIN_TOKEN", "t"), ("TEST_VENDOR_KEY", "k")],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = dir.write(
        "bad.toml",
        "[server]\nlisten = \"nowhere\"\nbogus = 1\n[ledger]\nwindow = \"soon\"\n[[routes]]\nname = \"x\"\npath = \"/x\"\nupstream = \"missing\"\n",
    );
    let failed = run(&["check", "--config", bad.to_str().unwrap()], &[]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    for expected in [
        "bad.toml: server.listen:",
        "bad.toml: server.bogus: unknown key",
        "bad.toml: ledger.window:",
        "bad.toml: routes[0].upstream: unknown upstream `missing`",
        "bad.toml: routes[0].cost: missing required key",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_cli_manages_accounts_keys_history_and_refunds() {
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("cli");
    let dead = format!("http://{}", unused_addr().await);
    let gateway = start(&dir, &config(&upstream.url(), 7, &dead));
    let put = stdout_json(&cli(&gateway, &["put", "site-42", "--plan", "pro"]));
    assert_eq!(put["monthly_allowance"], 1000);
    let key = stdout_json(&cli(&gateway, &["key-add", "site-42"]));
    let secret = key["key"].as_str().unwrap().to_owned();
    let key_id = key["key_id"].as_str().unwrap().to_owned();

    let client = gateway.client();
    let paid = client
        .send_as(
            &secret,
            http::Method::POST,
            &gateway.url("/v1/paid"),
            &[("x-request-id", "cli-req-1")],
            "x",
        )
        .await;
    assert_eq!(paid.status, 200);
    let show = stdout_json(&cli(&gateway, &["show", "site-42"]));
    assert_eq!(show["used"], 7);
    let history = stdout_json(&cli(&gateway, &["history", "site-42", "--limit", "5"]));
    assert_eq!(history["items"][0]["request_id"], "cli-req-1");
    let refund = stdout_json(&cli(&gateway, &["refund", "site-42", "cli-req-1"]));
    assert_eq!(refund["refunded"], true);
    assert_eq!(stdout_json(&cli(&gateway, &["show", "site-42"]))["used"], 0);
    let unknown = cli(&gateway, &["refund", "site-42", "nope"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("404"));
    let suspended = stdout_json(&cli(&gateway, &["put", "site-42", "--suspended", "true"]));
    assert_eq!(suspended["suspended"], true);
    assert_eq!(suspended["plan"], "pro");
    let revoke = cli(&gateway, &["key-revoke", "site-42", &key_id]);
    assert!(revoke.status.success());
    let after = client.post_as(&secret, &gateway.url("/v1/paid"), "x").await;
    assert_eq!(after.status, 401);
    // The vendor did the work; the operator refunded it.
    assert_eq!(upstream.count(), 1);
    let view = gateway.ledger_view(TOKEN, &["site-42"]).await;
    assert_ledger_matches_vendors(&view, &[&upstream], |_| 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_sighup_and_endpoint_and_an_invalid_file_changes_nothing() {
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("reload");
    let dead = format!("http://{}", unused_addr().await);
    let gateway = start(&dir, &config(&upstream.url(), 7, &dead));
    let client = gateway.client();
    let admin = format!("Bearer {TOKEN}");
    stdout_json(&cli(&gateway, &["put", "site-1", "--plan", "pro"]));
    let key = stdout_json(&cli(&gateway, &["key-add", "site-1"]))["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // Every response's cost, by request id, for the ledger check at the end.
    let charged = std::sync::Mutex::new(HashMap::new());
    let cost_now = || async {
        let r = client.post_as(&key, &gateway.url("/v1/paid"), "x").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let cost = r.header("x-credits-cost").unwrap().to_owned();
        let id = r.header("x-request-id").unwrap().to_owned();
        charged
            .lock()
            .unwrap()
            .insert(id, cost.parse::<u64>().unwrap());
        cost
    };
    assert_eq!(cost_now().await, "7");

    // SIGHUP with a new cost.
    let config_text = std::fs::read_to_string(&gateway.config_path).unwrap();
    std::fs::write(
        &gateway.config_path,
        config_text.replace("cost = 7", "cost = 11"),
    )
    .unwrap();
    gateway.signal("HUP");
    wait_until("the SIGHUP reload to apply", async || {
        match cost_now().await {
            cost if cost == "11" => Ok(()),
            cost => Err(format!("cost {cost}")),
        }
    })
    .await;

    // The endpoint, with an invalid file: 400 with every error, old config serving.
    let good = std::fs::read_to_string(&gateway.config_path).unwrap();
    std::fs::write(
        &gateway.config_path,
        good.replace("cost = 11", "cost = -1\nbogus = true"),
    )
    .unwrap();
    let rejected = client
        .post(
            &gateway.admin_url("/admin/v1/reload"),
            &[("authorization", &admin)],
            "",
        )
        .await;
    assert_eq!(rejected.status, 400, "{}", rejected.text());
    let body = rejected.json();
    assert_eq!(body["code"], "invalid_config");
    let errors = body["errors"].to_string();
    assert!(
        errors.contains("routes[0].cost") && errors.contains("routes[0].bogus"),
        "{errors}"
    );
    assert_eq!(cost_now().await, "11");

    // And a valid file through the endpoint.
    std::fs::write(&gateway.config_path, good.replace("cost = 11", "cost = 2")).unwrap();
    let accepted = client
        .post(
            &gateway.admin_url("/admin/v1/reload"),
            &[("authorization", &admin)],
            "",
        )
        .await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(cost_now().await, "2");
    let metrics = client.get(&gateway.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.contains("creditgate_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("creditgate_config_reloads_total{result=\"success\"} 2"),
        "{metrics}"
    );
    let view = gateway.ledger_view(TOKEN, &["site-1"]).await;
    let charged = charged.into_inner().unwrap();
    assert_ledger_matches_vendors(&view, &[&upstream], by_request_id(&charged));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_have_one_line_per_request_and_never_a_key() {
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("logs");
    let dead = format!("http://{}", unused_addr().await);
    let gateway = start(&dir, &config(&upstream.url(), 7, &dead));
    stdout_json(&cli(&gateway, &["put", "site-1", "--plan", "pro"]));
    let key = stdout_json(&cli(&gateway, &["key-add", "site-1"]))["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = gateway.client();
    let auth = format!("Bearer {key}");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-request-id", "log-req"),
    ];
    let mut seen_ids = Vec::new();
    let mut body_lengths = Vec::new();
    // Success, upstream 5xx (refund), upstream timeout (refund), unreachable (refund), 401, 404.
    for behavior in [
        Behavior::Ok,
        Behavior::Status(500),
        Behavior::Delay(Duration::from_secs(2)),
    ] {
        upstream.set_behavior(behavior);
        let response = client
            .post(&gateway.url("/v1/paid"), &headers, "body-canary")
            .await;
        seen_ids.push(response.header("x-request-id").unwrap().to_owned());
        body_lengths.push(response.body.len());
        assert!(!response.text().contains(VENDOR_KEY) && !response.text().contains(&key));
    }
    let dead_route = client.post(&gateway.url("/v1/dead"), &headers, "x").await;
    assert_eq!(dead_route.status, 502);
    let wrong_key = client
        .post(
            &gateway.url("/v1/paid"),
            &[("authorization", "Bearer cg_wrong-key-canary")],
            "x",
        )
        .await;
    assert_eq!(wrong_key.status, 401);
    let missing = client
        .get(&gateway.url("/v1/missing"), &[("x-api-key", &key)])
        .await;
    assert_eq!(missing.status, 404);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = gateway.logs();
    assert!(!logs.contains(&key), "the client key is in the logs");
    assert!(!logs.contains(VENDOR_KEY), "the vendor key is in the logs");
    assert!(
        !logs.contains("cg_wrong-key-canary"),
        "a presented key is in the logs"
    );
    assert!(!logs.contains("body-canary"), "a body is in the logs");
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "creditgate::access")
        .collect();
    assert_eq!(access.len(), 6, "one line per request:\n{logs}");
    // A line is written when its response body is done, which can race the
    // client's next request: find each line by its status, not its position.
    let line_with_status = |status: u16| {
        let found: Vec<&serde_json::Value> = access
            .iter()
            .filter(|line| line["status"] == status)
            .collect();
        assert_eq!(found.len(), 1, "one line with status {status}:\n{logs}");
        found[0]
    };
    let first = line_with_status(200);
    assert_eq!(first["route"], "paid");
    assert_eq!(first["account"], "site-1");
    assert_eq!(first["cost"], 7);
    assert_eq!(first["request_id"], "log-req");
    assert!(first["total_ms"].is_number());
    // The line counts the body bytes that went out: it was written after the body.
    assert_eq!(first["body_bytes"], body_lengths[0], "{logs}");
    assert_eq!(first["outcome"], "forwarded");
    assert_eq!(line_with_status(500)["refunded"], true);
    let timed_out = line_with_status(504);
    assert_eq!(timed_out["outcome"], "upstream_timeout", "{logs}");
    assert_eq!(timed_out["refunded"], true);
    for status in [502, 401, 404] {
        line_with_status(status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_in_flight_requests_exits_zero_and_keeps_the_ledger_exact() {
    let redis = crate::support::redis::RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior(Behavior::Delay(Duration::from_millis(400)));
    let dir = TempDir::new("sigterm");
    let dead = format!("http://{}", unused_addr().await);
    let toml = config(&upstream.url(), 7, &dead)
        .replace("timeout = \"500ms\"", "timeout = \"5s\"")
        .replace(
            "[plans.pro]",
            &format!(
                "[ledger]\nredis_url = \"{}\"\ntimeout = \"5s\"\n[plans.pro]",
                redis.url()
            ),
        );
    let mut gateway = start(&dir, &toml);
    stdout_json(&cli(&gateway, &["put", "site-1", "--plan", "pro"]));
    let key = stdout_json(&cli(&gateway, &["key-add", "site-1"]))["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = gateway.url("/v1/paid");
    // Load: 4 clients sending back to back until the gateway goes away.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        let auth = format!("Bearer {key}");
        clients.push(tokio::spawn(async move {
            let client = TestClient::new();
            let (mut ok, mut refused) = (0u64, 0u64);
            for _ in 0..50 {
                let request = http::Request::post(&url)
                    .header("authorization", &auth)
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
                    .unwrap();
                match client.try_send(request).await {
                    Ok(response) => {
                        assert_eq!(response.status, 200, "{}", response.text());
                        ok += 1;
                    }
                    Err(_) => {
                        refused += 1;
                        break;
                    }
                }
            }
            (ok, refused)
        }));
    }
    upstream.wait_for(4, GENEROUS).await;
    gateway.signal("TERM");
    let terminated = Instant::now();
    let mut completed = 0;
    for client in clients {
        completed += client.await.unwrap().0;
    }
    // Exits (not hung) with 0; how long the drain may take is the drain
    // timeout's business, not a wall-clock bound here.
    assert_eq!(gateway.wait_exit(GENEROUS), Some(0));
    eprintln!(
        "SIGTERM: exited {:?} after the signal",
        terminated.elapsed()
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", gateway.data_port)).is_err(),
        "no new connections after shutdown"
    );
    // Every request that got its 200 reached the vendor and was debited once.
    assert_eq!(
        upstream.reached() as u64,
        completed,
        "{}",
        upstream.summary()
    );
    let url = redis.url();
    let check = crate::support::gateway::TestGateway::start(
        &crate::support::gateway::Setup::new(&upstream.url()).redis(&url),
    )
    .await;
    assert_eq!(
        check.used("site-1").await,
        completed * 7,
        "ledger == Σ cost of forwarded requests"
    );
    let view = check.ledger_view(&["site-1"]).await;
    assert_ledger_matches_vendors(&view, &[&upstream], by_path(&[("/v1/paid", 7)]));
}
