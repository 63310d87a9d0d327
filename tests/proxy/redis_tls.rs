//! The ledger over TLS (`rediss://`, `ledger.tls_ca`): a real redis-server
//! that speaks only TLS, with certificates made here — one Redis and a
//! Redis Cluster — debits, refunds and balances through the gateway; a
//! certificate the gateway must not trust, and a wrong password, are a 503
//! `ledger_unavailable`, never a 500.

use serde_json::json;

use super::assert_problem;
use crate::support::gateway::{config_toml, parse, Setup, TestGateway, ADMIN_TOKEN};
use crate::support::process::{GatewayProcess, TempDir};
use crate::support::tls::{TestPki, TlsCluster, TlsRedis};
use crate::support::upstream::{Behavior, RecordingUpstream};

/// The test config with `redis_url` (and `tls_ca`, when given).
fn tls_toml(upstream: &RecordingUpstream, url: &str, ca: Option<&std::path::Path>) -> String {
    let toml = config_toml(&Setup::new(&upstream.url()).redis(url))
        // Calls over TLS on a loaded machine: a timeout load cannot reach.
        .replace("timeout = \"250ms\"", "timeout = \"2s\"");
    match ca {
        Some(ca) => toml.replace(
            "on_unavailable =",
            &format!("tls_ca = \"{}\"\non_unavailable =", ca.display()),
        ),
        None => toml,
    }
}

async fn post(gateway: &TestGateway, path: &str, key: &str) -> crate::support::http::Response {
    gateway
        .client
        .post(
            &gateway.url(path),
            &[("authorization", &format!("Bearer {key}"))],
            "x",
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debits_refunds_and_balances_over_tls_with_a_private_ca() {
    let pki = TestPki::new();
    let redis = TlsRedis::start(&pki, &[]);
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior_for("/v1/images", Behavior::Status(500));
    let gateway = TestGateway::start_toml(&tls_toml(&upstream, &redis.url(), Some(&pki.ca))).await;
    let key = gateway.account_with_key("site-tls", "pro").await;

    let paid = post(&gateway, "/v1/paid", &key).await;
    assert_eq!(paid.status, 200, "{}", paid.text());
    assert_eq!(paid.header("x-credits-remaining"), Some("9993"));
    // The vendor's 5xx refunds its 10 credits.
    let failed = post(&gateway, "/v1/images/generate", &key).await;
    assert_eq!(failed.status, 500, "{}", failed.text());
    let second = post(&gateway, "/v1/paid", &key).await;
    assert_eq!(second.status, 200, "{}", second.text());
    let balance = gateway.credits(&key).await;
    assert_eq!(balance["used"], 14, "{balance}");
    assert_eq!(balance["available"], 9986, "{balance}");

    let request_id = paid.header("x-request-id").expect("request id").to_owned();
    let refund = gateway
        .client
        .post(
            &gateway.admin_url("/admin/v1/accounts/site-tls/refunds"),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            json!({ "request_id": request_id }).to_string(),
        )
        .await;
    assert_eq!(refund.status, 200, "{}", refund.text());
    assert_eq!(gateway.used("site-tls").await, 7);
    let history = gateway
        .admin_get("/admin/v1/accounts/site-tls/history")
        .await
        .json();
    let items = history["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{history}");
    assert_eq!(
        items.iter().filter(|item| item["refunded"] == true).count(),
        2,
        "{history}"
    );
    assert_eq!(
        upstream.count(),
        3,
        "every admitted request reached the vendor"
    );
    // The ledger is in the TLS Redis, not somewhere else.
    let keys: u64 = redis.cli(&["DBSIZE"]).parse().expect("DBSIZE");
    assert!(keys > 0, "nothing written to the TLS Redis");
    let ready = gateway.client.get(&gateway.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_gateway_does_not_trust_is_a_503() {
    let pki = TestPki::new();
    let other_ca = TestPki::new();
    let redis = TlsRedis::start(&pki, &[]);
    let upstream = RecordingUpstream::start().await;
    // Another CA, and the built-in web PKI roots (which never signed a
    // test certificate).
    for ca in [Some(other_ca.ca.as_path()), None] {
        let gateway = TestGateway::start_toml(&tls_toml(&upstream, &redis.url(), ca)).await;
        for _ in 0..3 {
            let refused = post(&gateway, "/v1/paid", "any-key").await;
            assert_problem(&refused, 503, "ledger_unavailable");
            assert!(refused.header("retry-after").is_some());
        }
        let ready = gateway.client.get(&gateway.admin_url("/readyz"), &[]).await;
        assert_eq!(ready.status, 503, "{}", ready.text());
        let put = gateway.admin_put_account("site-1", "pro").await;
        assert_problem(&put, 503, "ledger_unavailable");
        gateway.shutdown().await;
    }
    assert_eq!(upstream.count(), 0);
    assert_eq!(redis.cli(&["DBSIZE"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password_come_from_the_url() {
    let pki = TestPki::new();
    let redis = TlsRedis::start(&pki, &[]);
    // A password that needs percent-encoding in a URL.
    redis.cli(&[
        "ACL",
        "SETUSER",
        "creditgate",
        "on",
        ">p@ss:w/rd",
        // What docs/operations.md advises: every command, the ledger's keys.
        "~cg:*",
        "+@all",
    ]);
    let used_before = redis.cli(&["DBSIZE"]);
    assert_eq!(used_before, "0");
    let upstream = RecordingUpstream::start().await;
    let url = |password: &str| format!("rediss://creditgate:{password}@localhost:{}/0", redis.port);

    let wrong = TestGateway::start_toml(&tls_toml(&upstream, &url("wrong"), Some(&pki.ca))).await;
    let refused = post(&wrong, "/v1/paid", "any-key").await;
    assert_problem(&refused, 503, "ledger_unavailable");
    let put = wrong.admin_put_account("site-acl", "pro").await;
    assert_problem(&put, 503, "ledger_unavailable");
    wrong.shutdown().await;

    // Nobody may write without the user's password from here on.
    redis.cli(&["ACL", "SETUSER", "default", "off"]);
    let gateway =
        TestGateway::start_toml(&tls_toml(&upstream, &url("p%40ss%3Aw%2Frd"), Some(&pki.ca))).await;
    let key = gateway.account_with_key("site-acl", "pro").await;
    let paid = post(&gateway, "/v1/paid", &key).await;
    assert_eq!(paid.status, 200, "{}", paid.text());
    assert_eq!(gateway.used("site-acl").await, 7);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_keeps_accounts_on_every_primary() {
    let pki = TestPki::new();
    let cluster = TlsCluster::start(&pki);
    let upstream = RecordingUpstream::start().await;
    let toml = config_toml(&Setup::new(&upstream.url()))
        .replace(
            "backend = \"memory\"",
            &format!(
                "cluster = {}\ntls_ca = \"{}\"",
                cluster.toml_urls(),
                pki.ca.display()
            ),
        )
        .replace("timeout = \"250ms\"", "timeout = \"2s\"");
    let gateway = TestGateway::start_toml(&toml).await;
    for i in 0..12 {
        let id = format!("site-{i}");
        let key = gateway.account_with_key(&id, "pro").await;
        let paid = post(&gateway, "/v1/paid", &key).await;
        assert_eq!(paid.status, 200, "{id}: {}", paid.text());
        let again = post(&gateway, "/v1/paid", &key).await;
        assert_eq!(again.status, 200, "{id}: {}", again.text());
        let request_id = again.header("x-request-id").expect("request id").to_owned();
        let refund = gateway
            .client
            .post(
                &gateway.admin_url(&format!("/admin/v1/accounts/{id}/refunds")),
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                json!({ "request_id": request_id }).to_string(),
            )
            .await;
        assert_eq!(refund.status, 200, "{id}: {}", refund.text());
        assert_eq!(gateway.credits(&key).await["used"], 7, "{id}");
    }
    assert_eq!(upstream.count(), 24);
    let holding: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|node| node.cli(&["DBSIZE"]).parse().expect("DBSIZE"))
        .collect();
    assert!(
        holding.iter().all(|keys| *keys > 0),
        "12 accounts spread over every primary: {holding:?}"
    );
}

#[tokio::test]
async fn an_unusable_ca_file_stops_the_start() {
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("redis-ca");
    let empty = dir.write("empty.pem", "no certificate here\n");
    for (ca, says) in [
        (dir.path().join("missing.pem"), "cannot read"),
        (empty, "no PEM certificate"),
    ] {
        let toml = tls_toml(&upstream, "rediss://localhost:1/0", Some(&ca));
        let Err(error) = creditgate::start(parse(&toml)).await else {
            panic!("started with tls_ca = {}", ca.display());
        };
        let error = error.to_string();
        assert!(error.contains("tls_ca") && error.contains(says), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reports_an_untrusted_certificate_and_keeps_answering() {
    let pki = TestPki::new();
    let other_ca = TestPki::new();
    let redis = TlsRedis::start(&pki, &[]);
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("tls-binary");
    let toml = tls_toml(&upstream, &redis.url(), Some(&other_ca.ca))
        .replace(
            "listen = \"127.0.0.1:0\"\nmax_body_bytes",
            "listen = \"{DATA}\"\nmax_body_bytes",
        )
        .replace(
            "listen = \"127.0.0.1:0\"\ntoken",
            "listen = \"{ADMIN}\"\ntoken",
        );
    let process = GatewayProcess::start(&dir, &toml, &[]);
    let client = crate::support::http::TestClient::new();
    for _ in 0..3 {
        let refused = client
            .post(
                &process.url("/v1/paid"),
                &[("authorization", "Bearer any-key")],
                "x",
            )
            .await;
        assert_problem(&refused, 503, "ledger_unavailable");
    }
    let ready = client.get(&process.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 503);
    let logs = process.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(
        logs.contains("invalid peer certificate"),
        "the log says why: {logs}"
    );
}
