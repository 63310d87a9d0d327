//! What the vendor sees, and the headers the client gets back.

use crate::support::gateway::{Setup, TestGateway, VENDOR_KEY};
use crate::support::money::{assert_ledger_matches_vendors, by_path};
use crate::support::upstream::{RecordedRequest, RecordingUpstream};

/// The account's ledger equals what the vendor received, priced by `price`.
async fn assert_money(
    gateway: &TestGateway,
    upstream: &RecordingUpstream,
    account: &str,
    price: impl Fn(&RecordedRequest) -> u64,
) {
    let view = gateway.ledger_view(&[account]).await;
    assert_ledger_matches_vendors(&view, &[upstream], price);
}

#[tokio::test]
async fn upstream_sees_its_own_host_key_and_forwarding_headers_never_the_clients() {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start(&Setup::new(&upstream.url())).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let response = gateway
        .client
        .post(
            &gateway.url("/v1//agents/./chat/../run?stream=false&x=%20y"),
            &[
                ("authorization", &format!("Bearer {key}")),
                ("x-api-key", &key),
                ("host", "attacker.example"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "https"),
                ("connection", "x-secret-hop"),
                ("x-secret-hop", "drop me"),
                ("proxy-authorization", "Basic abc"),
                ("x-vendor-tenant", "client-chosen"),
                ("x-request-id", "client-req-1"),
                ("content-type", "application/json"),
            ],
            r#"{"prompt":"hi"}"#,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-request-id"), Some("client-req-1"));
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.uri, "/v1/agents/run?stream=false&x=%20y");
    assert_eq!(request.method, "POST");
    assert_eq!(request.body, br#"{"prompt":"hi"}"#);
    assert_eq!(
        request.header("host"),
        Some(upstream.addr().to_string().as_str())
    );
    assert_eq!(
        request.header_all("authorization"),
        vec![format!("Bearer {VENDOR_KEY}").as_str()]
    );
    assert_eq!(request.header_all("x-vendor-tenant"), vec!["creditgate"]);
    assert_eq!(request.header("x-api-key"), None);
    assert_eq!(request.header("x-secret-hop"), None);
    assert_eq!(request.header("proxy-authorization"), None);
    assert_eq!(request.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(request.header("x-forwarded-proto"), Some("http"));
    assert_eq!(request.header("x-request-id"), Some("client-req-1"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    for (_, value) in &request.headers {
        assert!(!value.contains(&key), "the client key reached the vendor");
    }
    assert!(!response.text().contains(VENDOR_KEY));
    assert_money(
        &gateway,
        &upstream,
        "site-1",
        by_path(&[("/v1/agents/run", 1)]),
    )
    .await;
}

#[tokio::test]
async fn priced_responses_carry_credit_headers_free_ones_do_not() {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start(&Setup::new(&upstream.url())).await;
    let key = gateway.account_with_key("site-1", "small").await;
    let paid = gateway.post_as(&key, "/v1/paid", "x").await;
    assert_eq!(paid.status, 200);
    assert_eq!(paid.header("x-credits-limit"), Some("1000"));
    assert_eq!(paid.header("x-credits-remaining"), Some("993"));
    assert_eq!(paid.header("x-credits-cost"), Some("7"));
    assert_eq!(
        paid.header("ratelimit-policy"),
        Some("\"credits\";q=1000;w=2592000")
    );
    assert_eq!(
        paid.header("ratelimit"),
        Some("\"credits\";r=993;t=2592000")
    );
    let request_id = paid
        .header("x-request-id")
        .expect("generated request id")
        .to_owned();
    assert_eq!(request_id.len(), 16);
    assert_eq!(
        upstream.requests()[0].header("x-request-id"),
        Some(request_id.as_str())
    );

    let free = gateway.get_as(&key, "/v1/free").await;
    assert_eq!(free.status, 200);
    assert_eq!(free.header("x-credits-cost"), None);
    assert_eq!(gateway.used("site-1").await, 7);
    let history = gateway
        .admin_get("/admin/v1/accounts/site-1/history")
        .await
        .json();
    assert_eq!(history["items"].as_array().unwrap().len(), 1);
    assert_eq!(history["items"][0]["request_id"], request_id.as_str());
    assert_eq!(history["items"][0]["route"], "paid");
    assert_eq!(history["items"][0]["cost"], 7);
    assert_money(&gateway, &upstream, "site-1", by_path(&[("/v1/paid", 7)])).await;
}

#[tokio::test]
async fn a_reused_request_id_gets_a_fresh_one_and_both_are_charged() {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start(&Setup::new(&upstream.url())).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let same_id = [("x-request-id", "same-id")];
    let first = gateway
        .send_as(&key, http::Method::POST, "/v1/paid", &same_id, "x")
        .await;
    let second = gateway
        .send_as(&key, http::Method::POST, "/v1/paid", &same_id, "x")
        .await;
    assert_eq!(first.header("x-request-id"), Some("same-id"));
    let second_id = second.header("x-request-id").unwrap();
    assert_ne!(second_id, "same-id");
    assert_eq!(
        upstream.requests()[1].header("x-request-id"),
        Some(second_id)
    );
    assert_eq!(gateway.used("site-1").await, 14);
    assert_money(&gateway, &upstream, "site-1", by_path(&[("/v1/paid", 7)])).await;
}

#[tokio::test]
async fn usage_api_reports_balance_and_next_release() {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start(&Setup::new(&upstream.url())).await;
    let key = gateway.account_with_key("site-42", "pro").await;
    let empty = gateway.credits(&key).await;
    assert_eq!(empty["account"], "site-42");
    assert_eq!(empty["plan"], "pro");
    assert_eq!(empty["monthly_allowance"], 10000);
    assert_eq!(empty["used"], 0);
    assert_eq!(empty["available"], 10000);
    assert_eq!(empty["window_seconds"], 2_592_000);
    assert!(empty["next_release"].is_null());
    assert!(empty["as_of"].as_str().unwrap().ends_with('Z'));

    gateway.post_as(&key, "/v1/images/generate", "x").await;
    let after = gateway.credits(&key).await;
    assert_eq!(after["used"], 10);
    assert_eq!(after["available"], 9990);
    assert_eq!(after["next_release"]["credits"], 10);
    let at = chrono::DateTime::parse_from_rfc3339(after["next_release"]["at"].as_str().unwrap())
        .unwrap();
    let as_of = chrono::DateTime::parse_from_rfc3339(after["as_of"].as_str().unwrap()).unwrap();
    let until = (at - as_of).num_seconds();
    assert!((2_591_990..=2_592_000).contains(&until), "{until}");

    let history = gateway.get_as(&key, "/v1/credits/history?limit=10").await;
    assert_eq!(history.status, 200);
    assert_eq!(history.json()["items"][0]["cost"], 10);
    assert!(history.json()["next"].is_null());
    let unauthenticated = gateway.client.get(&gateway.url("/v1/credits"), &[]).await;
    super::assert_problem(&unauthenticated, 401, "unauthenticated");
    assert_eq!(upstream.count(), 1);
    assert_money(
        &gateway,
        &upstream,
        "site-42",
        by_path(&[("/v1/images/generate", 10)]),
    )
    .await;
}

#[tokio::test]
async fn history_api_pages_with_opaque_cursors_and_validates_limit() {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start(&Setup::new(&upstream.url())).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    for i in 0..7 {
        let id = format!("page-{i}");
        let r = gateway
            .send_as(
                &key,
                http::Method::POST,
                "/v1/paid",
                &[("x-request-id", &id)],
                "x",
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let mut seen = Vec::new();
    let mut url = gateway.url("/v1/credits/history?limit=3");
    loop {
        let page = gateway.client.get_as(&key, &url).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let body = page.json();
        for item in body["items"].as_array().unwrap() {
            seen.push(item["request_id"].as_str().unwrap().to_owned());
            assert_eq!(item["cost"], 7);
            assert_eq!(item["route"], "paid");
        }
        match body["next"].as_str() {
            Some(cursor) => {
                url = gateway.url(&format!("/v1/credits/history?limit=3&before={cursor}"))
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("page-{i}")).collect();
    assert_eq!(seen, expected, "newest first, no duplicates, no gaps");
    for bad in ["limit=0", "limit=501", "limit=ten", "before=zz"] {
        let response = gateway
            .get_as(&key, &format!("/v1/credits/history?{bad}"))
            .await;
        super::assert_problem(&response, 400, "bad_request");
    }
    assert_money(&gateway, &upstream, "site-1", by_path(&[("/v1/paid", 7)])).await;
}
