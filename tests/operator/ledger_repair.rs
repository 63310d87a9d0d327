//! An account whose stored total an older build damaged (Redis
//! `used = 2^63`): the gateway says so on every path that needs the total,
//! never forwards its requests unmetered, and the admin recount repairs it
//! (docs/ledger.md, "Bounds and repair"). The real binary, a real Redis.

use std::time::Duration;

use creditgate::ledger::keys::AccountKeys;

use crate::support::process::{GatewayProcess, TempDir};
use crate::support::redis::RedisServer;
use crate::support::upstream::RecordingUpstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_total_answers_ledger_inconsistent_until_the_admin_recount_repairs_it() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("repair");
    let toml = format!(
        r#"
[server]
listen = "{{DATA}}"
[admin]
listen = "{{ADMIN}}"
token = "t"
[ledger]
redis_url = "{redis}"
timeout = "5s"
# Even when an outage would be let through, a damaged account is not.
on_unavailable = "allow"
[plans.pro]
monthly_allowance = 1000
[upstreams.vendor]
url = "{upstream}"
[[routes]]
name = "paid"
path = "/v1/paid"
upstream = "vendor"
cost = 7
"#,
        redis = redis.url(),
        upstream = upstream.url(),
    );
    let gateway = GatewayProcess::start(&dir, &toml, &[]);
    let client = gateway.client();
    let admin = [("authorization", "Bearer t")];
    let put = client
        .put_json(
            &gateway.admin_url("/admin/v1/accounts/site-9"),
            &admin,
            serde_json::json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let key = client
        .post(
            &gateway.admin_url("/admin/v1/accounts/site-9/keys"),
            &admin,
            "",
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = [("authorization", format!("Bearer {key}"))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let paid = client.post(&gateway.url("/v1/paid"), &auth, "x").await;
    assert_eq!(paid.status, 200, "{}", paid.text());
    upstream.wait_for(1, Duration::from_secs(10)).await;

    redis.cli(&[
        "HSET",
        &AccountKeys::new("site-9").account,
        "used",
        "9223372036854775808",
    ]);

    // Reads and debits name the problem; nothing reaches the vendor.
    let balance = client.get(&gateway.url("/v1/credits"), &auth).await;
    assert_eq!(balance.status, 500, "{}", balance.text());
    assert_eq!(balance.json()["code"], "ledger_inconsistent");
    let refused = client.post(&gateway.url("/v1/paid"), &auth, "x").await;
    assert_eq!(refused.status, 500, "{}", refused.text());
    assert_eq!(refused.json()["code"], "ledger_inconsistent");
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    let shown = client
        .get(&gateway.admin_url("/admin/v1/accounts/site-9"), &admin)
        .await;
    assert_eq!(
        shown.json()["code"],
        "ledger_inconsistent",
        "{}",
        shown.text()
    );
    assert_eq!(upstream.count(), 1, "a damaged account is never forwarded");

    // The repair, then everything answers again.
    let repaired = client
        .post(
            &gateway.admin_url("/admin/v1/accounts/site-9/recount"),
            &admin,
            "",
        )
        .await;
    assert_eq!(repaired.status, 200, "{}", repaired.text());
    let body = repaired.json();
    assert_eq!(body["recount"]["previous_used"], "9223372036854775808");
    assert_eq!(body["recount"]["used"], 7);
    assert_eq!(body["recount"]["debits_counted"], 1);
    assert_eq!(body["recount"]["changed"], true);
    assert_eq!(body["used"], 7);
    assert_eq!(body["available"], 993);
    let balance = client.get(&gateway.url("/v1/credits"), &auth).await;
    assert_eq!(balance.status, 200, "{}", balance.text());
    assert_eq!(balance.json()["used"], 7);
    let paid = client.post(&gateway.url("/v1/paid"), &auth, "x").await;
    assert_eq!(paid.status, 200, "{}", paid.text());
    assert_eq!(paid.header("x-credits-remaining"), Some("986"));
    // A second recount finds nothing to change; an unknown account is a 404.
    let again = client
        .post(
            &gateway.admin_url("/admin/v1/accounts/site-9/recount"),
            &admin,
            "",
        )
        .await;
    assert_eq!(
        again.json()["recount"]["changed"],
        false,
        "{}",
        again.text()
    );
    let unknown = client
        .post(
            &gateway.admin_url("/admin/v1/accounts/nobody/recount"),
            &admin,
            "",
        )
        .await;
    assert_eq!(unknown.status, 404);
    let unauthenticated = client
        .post(
            &gateway.admin_url("/admin/v1/accounts/site-9/recount"),
            &[],
            "",
        )
        .await;
    assert_eq!(unauthenticated.status, 401);
}
