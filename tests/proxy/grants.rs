//! Extra windows and prepaid grants end to end: three gateways on one Redis
//! spending across the allowance/grant boundary and against a short window,
//! and the HTTP surfaces (429 `limit`, `RateLimit` entries, `/v1/credits`,
//! the admin grant endpoints).

use std::sync::Arc;

use serde_json::json;

use super::assert_problem;
use crate::support::gateway::{Setup, TestGateway, ADMIN_TOKEN};
use crate::support::http::Response;
use crate::support::money::{assert_ledger_with_grants_matches_vendors, by_path, Tally};
use crate::support::redis::RedisServer;
use crate::support::upstream::RecordingUpstream;

const BURST_PLAN: &str = r#"
[plans.burst]
monthly_allowance = 1000
limits = [{ window = "1h", credits = 100 }, { window = "1d", credits = 150 }]

[plans.topup]
monthly_allowance = 10
limits = [{ window = "1h", credits = 100 }]
"#;

fn admin() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

async fn post_grant(gateway: &TestGateway, account: &str, body: serde_json::Value) -> Response {
    gateway
        .client
        .post(
            &gateway.admin_url(&format!("/admin/v1/accounts/{account}/grants")),
            &[
                ("authorization", admin().as_str()),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await
}

/// `total` concurrent POSTs of cost 7 spread over `gateways`; every response.
async fn flood(gateways: &[Arc<TestGateway>], key: &str, total: usize) -> Vec<Response> {
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let gateway = gateways[i % gateways.len()].clone();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            gateway.post_as(&key, "/v1/paid", "x").await
        }));
    }
    let mut responses = Vec::with_capacity(total);
    for task in tasks {
        responses.push(task.await.expect("request task"));
    }
    responses
}

async fn three_gateways(
    redis: &RedisServer,
    upstream: &RecordingUpstream,
) -> Vec<Arc<TestGateway>> {
    let url = redis.url();
    let mut setup = Setup::new(&upstream.url()).redis(&url);
    setup.extra = BURST_PLAN;
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(Arc::new(TestGateway::start(&setup).await));
    }
    gateways
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_gateways_spend_across_the_allowance_grant_boundary_exactly() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let gateways = three_gateways(&redis, &upstream).await;
    let key = gateways[0].account_with_key("busy", "small").await;
    let in_ten_days = chrono::Utc::now() + chrono::Duration::days(10);
    for body in [
        json!({"credits": 200, "note": "never expires"}),
        json!({"credits": 300, "expires_at": in_ten_days.to_rfc3339()}),
    ] {
        let created = post_grant(&gateways[1], "busy", body).await;
        assert_eq!(created.status, 201, "{}", created.text());
    }

    // 1000 allowance + 500 in grants at 7 each: exactly 214 admitted.
    let responses = flood(&gateways, &key, 320).await;
    let tally: Tally = responses.iter().map(|r| r.status).collect();
    let view = gateways[2].ledger_view(&["busy"]).await;
    let report = format!("statuses {tally}; vendor {}", upstream.summary());
    assert_eq!(tally.count(200), 214, "{report}");
    assert_eq!(tally.others(&[200, 429]), 0, "{report}");
    assert_eq!(upstream.reached(), 214, "{report}");
    // The allowance is spent whole; grants paid the rest, the soonest
    // expiry first: 2 credits are left in the never-expiring one.
    assert_eq!(view.used, 1000, "{report}");
    assert_eq!(view.grant_spend(), 498, "{report}");
    let left: Vec<(u64, u64)> = view
        .grants
        .iter()
        .map(|g| (g.credits, g.remaining))
        .collect();
    assert_eq!(left, vec![(300, 0), (200, 2)], "{report}");
    assert_ledger_with_grants_matches_vendors(&view, &[&upstream], by_path(&[("/v1/paid", 7)]));
    // The debit across the boundary took from both.
    assert_eq!(
        view.debits
            .iter()
            .filter(|d| d.from_grants > 0 && d.from_grants < 7)
            .count(),
        1,
        "one debit split between the allowance and a grant"
    );

    // Refunds give each part back where it came from.
    let refunded: Vec<_> = view
        .debits
        .iter()
        .filter(|d| d.from_grants > 0)
        .take(5)
        .cloned()
        .collect();
    for debit in &refunded {
        let answer = gateways[0]
            .client
            .post(
                &gateways[0].admin_url("/admin/v1/accounts/busy/refunds"),
                &[
                    ("authorization", admin().as_str()),
                    ("content-type", "application/json"),
                ],
                json!({"request_id": debit.request_id}).to_string(),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let after = gateways[1].ledger_view(&["busy"]).await;
    let back: u64 = refunded.iter().map(|d| d.from_grants).sum();
    let back_to_allowance: u64 = refunded.iter().map(|d| d.cost - d.from_grants).sum();
    assert_eq!(after.grant_spend(), 498 - back);
    assert_eq!(after.used, 1000 - back_to_allowance);
    let standing: u64 = after.standing().map(|d| d.cost).sum();
    assert_eq!(after.used + after.grant_spend(), standing);
    assert_eq!(standing, 214 * 7 - refunded.len() as u64 * 7);
    for grant in &after.grants {
        assert!(grant.remaining <= grant.credits);
    }
    // What came back can be spent again, by any gateway.
    let credits = gateways[2].credits(&key).await;
    assert_eq!(credits["available"], 2 + back + back_to_allowance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_window_caps_a_burst_across_three_gateways() {
    let redis = RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    let gateways = three_gateways(&redis, &upstream).await;
    let key = gateways[0].account_with_key("leaky", "burst").await;
    let created = post_grant(&gateways[0], "leaky", json!({"credits": 1000})).await;
    assert_eq!(created.status, 201, "{}", created.text());

    // The 30-day allowance and the grant hold 2000; the hour holds 100.
    let responses = flood(&gateways, &key, 60).await;
    let tally: Tally = responses.iter().map(|r| r.status).collect();
    let report = format!("statuses {tally}; vendor {}", upstream.summary());
    assert_eq!(tally.count(200), 14, "{report}");
    assert_eq!(tally.count(429), 46, "{report}");
    assert_eq!(upstream.reached(), 14, "{report}");
    for refused in responses.iter().filter(|r| r.status == 429) {
        assert_problem(refused, 429, "credits_exhausted");
        let body = refused.json();
        assert_eq!(body["limit"], "1h", "{body}");
        let retry = body["retry_after"].as_u64().expect("retry_after");
        assert!((3_500..=3_600).contains(&retry), "{body}");
        assert_eq!(
            refused.header("retry-after"),
            Some(retry.to_string().as_str())
        );
        assert_eq!(refused.header("x-credits-remaining"), Some("2"));
    }
    let view = gateways[1].ledger_view(&["leaky"]).await;
    assert_eq!(view.used, 98);
    assert_eq!(
        view.grant_spend(),
        0,
        "the allowance had room: no grant spent"
    );
    assert_ledger_with_grants_matches_vendors(&view, &[&upstream], by_path(&[("/v1/paid", 7)]));
    let credits = gateways[2].credits(&key).await;
    assert_eq!(
        credits["limits"],
        json!([
            {"window": "1h", "window_seconds": 3600, "credits": 100, "used": 98, "available": 2},
            {"window": "1d", "window_seconds": 86400, "credits": 150, "used": 98, "available": 52}
        ])
    );
    assert_eq!(credits["available"], 2);
}

#[tokio::test]
async fn credits_headers_history_and_the_grant_endpoints() {
    let upstream = RecordingUpstream::start().await;
    let mut setup = Setup::new(&upstream.url());
    setup.extra = BURST_PLAN;
    let gateway = TestGateway::start(&setup).await;
    let key = gateway.account_with_key("site", "topup").await;

    // Refusals: nothing is created.
    let in_a_year = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    for (body, status) in [
        (json!({"credits": 0}), 400),
        (json!({"credits": 5, "colour": "red"}), 400),
        (
            json!({"credits": 5, "expires_at": "2020-01-01T00:00:00Z"}),
            400,
        ),
        (json!({"credits": 5, "expires_at": "next week"}), 400),
        (json!({"credits": "5"}), 400),
        (json!({"credits": 5, "note": "x".repeat(201)}), 400),
    ] {
        let refused = post_grant(&gateway, "site", body.clone()).await;
        assert_eq!(refused.status, status, "{body}: {}", refused.text());
    }
    assert_eq!(
        post_grant(&gateway, "nobody", json!({"credits": 5}))
            .await
            .status,
        404
    );
    let listed = gateway.admin_get("/admin/v1/accounts/site/grants").await;
    assert_eq!(listed.json()["items"], json!([]));

    let created = post_grant(
        &gateway,
        "site",
        json!({"credits": 500, "expires_at": in_a_year, "note": "top-up #123"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let grant = created.json();
    assert_eq!(
        (
            &grant["credits"],
            &grant["remaining"],
            &grant["note"],
            &grant["status"]
        ),
        (
            &json!(500),
            &json!(500),
            &json!("top-up #123"),
            &json!("active")
        )
    );
    let grant_id = grant["grant_id"].as_str().unwrap().to_owned();
    assert!(grant["created_at"].is_string() && grant["expires_at"].is_string());

    // 10 allowance + 500 in the grant, but the hour holds 100.
    let credits = gateway.credits(&key).await;
    assert_eq!(credits["available"], 100);
    assert_eq!(credits["grants"][0]["grant_id"], grant_id.as_str());
    assert_eq!(credits["grants"][0]["remaining"], 500);

    let first = gateway.post_as(&key, "/v1/paid", "x").await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"credits\";q=10;w=2592000, \"credits-1h\";q=100;w=3600")
    );
    assert_eq!(first.header("x-credits-remaining"), Some("93"));
    // 3 from the allowance, 4 from the grant.
    let second = gateway.post_as(&key, "/v1/paid", "x").await;
    assert_eq!(second.status, 200);
    let ratelimit = second.header("ratelimit").unwrap();
    assert!(ratelimit.starts_with("\"credits\";r=496;"), "{ratelimit}");
    assert!(
        ratelimit.contains(", \"credits-1h\";r=86;t=36"),
        "{ratelimit}"
    );
    assert_eq!(second.header("x-credits-remaining"), Some("86"));
    let history = gateway
        .admin_get("/admin/v1/accounts/site/history")
        .await
        .json();
    let items = history["items"].as_array().unwrap();
    // Found by request id: two debits in the same millisecond have no order.
    let split = |response: &crate::support::http::Response| {
        let id = response.header("x-request-id").expect("request id");
        let item = items
            .iter()
            .find(|i| i["request_id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {history}"));
        (
            item["from_allowance"].as_u64().unwrap(),
            item["from_grants"].as_u64().unwrap(),
        )
    };
    assert_eq!(items.len(), 2, "{history}");
    assert_eq!((split(&first), split(&second)), ((7, 0), (3, 4)));

    // Void: what remains is gone, once.
    let url = gateway.admin_url(&format!("/admin/v1/accounts/site/grants/{grant_id}"));
    let auth = admin();
    let headers = [("authorization", auth.as_str())];
    let voided = gateway.client.delete(&url, &headers).await;
    assert_eq!(voided.status, 200, "{}", voided.text());
    assert_eq!(voided.json()["voided_credits"], 496);
    let again = gateway.client.delete(&url, &headers).await;
    assert_eq!(again.json()["voided_credits"], 0);
    let unknown = gateway
        .client
        .delete(
            &gateway.admin_url("/admin/v1/accounts/site/grants/g99"),
            &headers,
        )
        .await;
    assert_eq!(unknown.status, 404);
    let bad = gateway
        .client
        .delete(
            &gateway.admin_url("/admin/v1/accounts/site/grants/oops"),
            &headers,
        )
        .await;
    assert_eq!(bad.status, 400);
    let listed = gateway
        .admin_get("/admin/v1/accounts/site/grants")
        .await
        .json();
    assert_eq!(listed["items"][0]["status"], "voided");
    assert_eq!(listed["items"][0]["remaining"], 0);
    assert_eq!(listed["items"][0]["voided_credits"], 496);
    let credits = gateway.credits(&key).await;
    assert_eq!(
        (&credits["available"], &credits["grants"]),
        (&json!(0), &json!([]))
    );
    let refused = gateway.post_as(&key, "/v1/paid", "x").await;
    assert_problem(&refused, 429, "credits_exhausted");
    assert!(
        refused.json().get("limit").is_none(),
        "the 30-day window refused"
    );
    assert_eq!(upstream.reached(), 2);
}
