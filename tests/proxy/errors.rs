//! Every row of the error table in docs/http-api.md: status, `code`, and what the upstream saw.

use std::time::Duration;

use super::assert_problem;
use crate::support::gateway::{Setup, TestGateway};
use crate::support::money::{assert_ledger_matches_vendors, by_path};
use crate::support::upstream::{unused_addr, Behavior, RecordedRequest, RecordingUpstream};

/// The ledger of `accounts` equals what the vendor received, priced by
/// `price` (0 for what the route's rules refund).
async fn assert_money(
    gateway: &TestGateway,
    upstream: &RecordingUpstream,
    accounts: &[&str],
    price: impl Fn(&RecordedRequest) -> u64,
) {
    let view = gateway.ledger_view(accounts).await;
    assert_ledger_matches_vendors(&view, &[upstream], price);
}

/// Nothing reached the vendor (not even part of a request) and nothing
/// stands in the ledger.
async fn assert_nothing_forwarded_or_charged(gateway: &TestGateway, upstream: &RecordingUpstream) {
    assert_eq!(upstream.reached(), 0, "{}", upstream.summary());
    let view = gateway.ledger_view(&["site-1"]).await;
    assert_eq!(view.used, 0, "{view:?}");
    assert_eq!(view.standing().count(), 0, "{view:?}");
}

async fn setup() -> (RecordingUpstream, TestGateway, String) {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start(&Setup::new(&upstream.url())).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    (upstream, gateway, key)
}

#[tokio::test]
async fn missing_or_unknown_key_is_401_and_nothing_is_forwarded() {
    let (upstream, gateway, _key) = setup().await;
    let none = gateway
        .client
        .post(&gateway.url("/v1/paid"), &[], "x")
        .await;
    assert_problem(&none, 401, "unauthenticated");
    let unknown = gateway
        .client
        .post(
            &gateway.url("/v1/paid"),
            &[("authorization", "Bearer cg_nope")],
            "x",
        )
        .await;
    assert_problem(&unknown, 401, "unauthenticated");
    let unknown_x = gateway
        .client
        .post(&gateway.url("/v1/paid"), &[("x-api-key", "cg_nope")], "x")
        .await;
    assert_problem(&unknown_x, 401, "unauthenticated");
    assert_eq!(upstream.reached(), 0, "{}", upstream.summary());
}

#[tokio::test]
async fn x_api_key_authenticates_like_bearer() {
    let (upstream, gateway, key) = setup().await;
    let ok = gateway
        .client
        .post(&gateway.url("/v1/paid"), &[("x-api-key", &key)], "x")
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(upstream.count(), 1);
    assert_money(
        &gateway,
        &upstream,
        &["site-1"],
        by_path(&[("/v1/paid", 7)]),
    )
    .await;
}

#[tokio::test]
async fn suspended_account_is_403_and_nothing_is_debited() {
    let (upstream, gateway, key) = setup().await;
    let put = gateway
        .client
        .put_json(
            &gateway.admin_url("/admin/v1/accounts/site-1"),
            &[("authorization", "Bearer test-admin-token")],
            serde_json::json!({"suspended": true}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text());
    for response in [
        gateway.post_as(&key, "/v1/paid", "x").await,
        gateway.get_as(&key, "/v1/free").await,
    ] {
        assert_problem(&response, 403, "account_suspended");
    }
    assert_nothing_forwarded_or_charged(&gateway, &upstream).await;
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405_with_allow() {
    let (upstream, gateway, key) = setup().await;
    let missing = gateway.get_as(&key, "/v1/nothing").await;
    assert_problem(&missing, 404, "route_not_found");
    let wrong = gateway.get_as(&key, "/v1/paid").await;
    assert_problem(&wrong, 405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("POST"));
    assert_nothing_forwarded_or_charged(&gateway, &upstream).await;
}

#[tokio::test]
async fn unsafe_paths_are_400_and_never_forwarded() {
    let (upstream, gateway, key) = setup().await;
    for path in [
        "/v1/agents/%2e%2e/admin",
        "/v1/agents/a%2fb",
        "/v1/agents/a%5cb",
        "/v1/agents/..;/x",
        "/v1/agents/%00",
        "/v1/../../etc/passwd",
        "/v1/agents/%252e%252e/x",
    ] {
        let response = gateway.get_as(&key, path).await;
        assert_problem(&response, 400, "bad_request");
    }
    assert_nothing_forwarded_or_charged(&gateway, &upstream).await;
}

#[tokio::test]
async fn body_over_the_limit_is_413_with_or_without_content_length() {
    let (upstream, gateway, key) = setup().await;
    let auth = format!("Bearer {key}");
    let big = vec![b'x'; 2048];
    let with_length = gateway.post_as(&key, "/v1/paid", big.clone()).await;
    assert_problem(&with_length, 413, "payload_too_large");

    let head = format!(
        "POST /v1/paid HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut raw = head.into_bytes();
    for _ in 0..4 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'y'; 512]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = crate::support::http::raw_exchange(
        gateway.running().data_addr,
        &raw,
        Duration::from_secs(5),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    // A chunked body under the limit is buffered and forwarded whole.
    let small = format!(
        "POST /v1/paid HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    let answer = crate::support::http::raw_exchange(
        gateway.running().data_addr,
        small.as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(gateway.used("site-1").await, 7);
    assert_eq!(upstream.reached(), 1, "the 413s never reached the vendor");
    assert_money(
        &gateway,
        &upstream,
        &["site-1"],
        by_path(&[("/v1/paid", 7)]),
    )
    .await;
}

#[tokio::test]
async fn not_enough_credits_is_429_with_cost_available_and_retry_after() {
    let (upstream, gateway, _) = setup().await;
    let key = gateway.account_with_key("tiny", "free").await;
    for _ in 0..10 {
        let ok = gateway.post_as(&key, "/v1/images/generate", "x").await;
        assert_eq!(ok.status, 200);
    }
    let rejected = gateway.post_as(&key, "/v1/images/generate", "x").await;
    assert_problem(&rejected, 429, "credits_exhausted");
    let body = rejected.json();
    assert_eq!(body["cost"], 10);
    assert_eq!(body["available"], 0);
    let retry = body["retry_after"].as_u64().expect("retry_after");
    assert!(retry > 29 * 86_400 && retry <= 30 * 86_400, "{retry}");
    assert_eq!(
        rejected.header("retry-after"),
        Some(retry.to_string().as_str())
    );
    assert_eq!(rejected.header("x-credits-remaining"), Some("0"));
    assert_eq!(upstream.reached(), 10, "{}", upstream.summary());
    assert_eq!(gateway.used("tiny").await, 100);
    assert_money(
        &gateway,
        &upstream,
        &["tiny"],
        by_path(&[("/v1/images/generate", 10)]),
    )
    .await;
}

#[tokio::test]
async fn cost_above_the_whole_allowance_has_no_retry_after() {
    let upstream = RecordingUpstream::start().await;
    let extra = r#"
[[routes]]
name = "huge"
method = "POST"
path = "/v1/huge"
upstream = "vendor"
cost = 1000
"#;
    let mut setup = Setup::new(&upstream.url());
    setup.extra = extra;
    let gateway = TestGateway::start(&setup).await;
    let key = gateway.account_with_key("tiny", "free").await;
    let rejected = gateway.post_as(&key, "/v1/huge", "x").await;
    assert_problem(&rejected, 429, "credits_exhausted");
    assert!(rejected.json().get("retry_after").is_none());
    assert_eq!(rejected.header("retry-after"), None);
    assert_eq!(upstream.reached(), 0, "{}", upstream.summary());
    assert_eq!(gateway.ledger_view(&["tiny"]).await.debits.len(), 0);
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_refunded() {
    let dead = format!("http://{}", unused_addr().await);
    let gateway = TestGateway::start(&Setup::new(&dead)).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let response = gateway.post_as(&key, "/v1/paid", "x").await;
    assert_problem(&response, 502, "upstream_unavailable");
    assert_eq!(gateway.used("site-1").await, 0);
    assert_eq!(response.header("x-credits-cost"), Some("0"));
    let history = gateway
        .admin_get("/admin/v1/accounts/site-1/history")
        .await
        .json();
    assert_eq!(history["items"][0]["refunded"], true);
    assert_eq!(gateway.ledger_view(&["site-1"]).await.standing().count(), 0);
}

#[tokio::test]
async fn norefund_route_keeps_the_debit_on_failure() {
    let dead = format!("http://{}", unused_addr().await);
    let gateway = TestGateway::start(&Setup::new(&dead)).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let response = gateway.post_as(&key, "/v1/norefund", "x").await;
    assert_problem(&response, 502, "upstream_unavailable");
    // The one charge no vendor received: the route opts out of refunds.
    let view = gateway.ledger_view(&["site-1"]).await;
    assert_eq!(view.used, 5, "{view:?}");
    assert_eq!(view.standing().count(), 1, "{view:?}");
}

#[tokio::test]
async fn upstream_timeout_is_504_and_refunded() {
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior(Behavior::Delay(Duration::from_secs(3)));
    let mut setup = Setup::new(&upstream.url());
    setup.upstream_timeout = "300ms";
    let gateway = TestGateway::start(&setup).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let response = gateway.post_as(&key, "/v1/paid", "x").await;
    assert_problem(&response, 504, "upstream_timeout");
    assert_eq!(gateway.used("site-1").await, 0);
    // The vendor got the request whole; its answer came too late, so the
    // route's rules refund it.
    assert_eq!(upstream.count(), 1);
    assert_money(&gateway, &upstream, &["site-1"], |_| 0).await;
}

#[tokio::test]
async fn upstream_5xx_passes_through_and_is_refunded_4xx_is_charged() {
    let (upstream, gateway, key) = setup().await;
    upstream.set_behavior(Behavior::Body {
        status: 503,
        content_type: "text/plain".into(),
        body: b"vendor overloaded".to_vec(),
    });
    let failed = gateway.post_as(&key, "/v1/paid", "x").await;
    assert_eq!(failed.status, 503);
    assert_eq!(failed.text(), "vendor overloaded");
    assert_eq!(gateway.used("site-1").await, 0);

    upstream.set_behavior(Behavior::Status(422));
    let client_error = gateway.post_as(&key, "/v1/paid", "x").await;
    assert_eq!(client_error.status, 422);
    assert_eq!(gateway.used("site-1").await, 7);
    assert_eq!(upstream.count(), 2);
    assert_money(&gateway, &upstream, &["site-1"], |request| {
        match request.status {
            Some(status) if status >= 500 => 0,
            _ => 7,
        }
    })
    .await;
}

#[tokio::test]
async fn malformed_upstream_response_is_502() {
    let (upstream, gateway, key) = setup().await;
    upstream.set_behavior(Behavior::CloseWithoutResponse);
    let response = gateway.post_as(&key, "/v1/paid", "x").await;
    assert_problem(&response, 502, "upstream_unavailable");
    assert_eq!(gateway.used("site-1").await, 0);
    assert_money(&gateway, &upstream, &["site-1"], |_| 0).await;
}
