//! Prices that follow the work: per image, per video second, per AI token.

use std::time::{Duration, Instant};

use serde_json::json;

use super::assert_problem;
use crate::support::gateway::{Setup, TestGateway};
use crate::support::upstream::{Behavior, RecordingUpstream};

const PRICED_ROUTES: &str = r#"
[[routes]]
name = "image-per-image"
method = "POST"
path = "/v2/images"
upstream = "vendor"
cost = 4
units = { json = "/n", default = 1, max = 10 }

[[routes]]
name = "video-per-second"
method = "POST"
path = "/v2/videos"
upstream = "vendor"
cost = 3
units = { json = "/duration_seconds", max = 120 }

[[routes]]
name = "agent-json"
method = "POST"
path = "/v2/agents/json"
upstream = "vendor"
cost = 1
units = { json = "/max_tokens", default = 1000, max = 32000, per = 1000 }
settle = { json = "/usage/total_tokens", per = 1000 }

[[routes]]
name = "agent-header"
method = "POST"
path = "/v2/agents/header"
upstream = "vendor"
cost = 1
units = { json = "/max_tokens", default = 1000, max = 32000, per = 1000 }
settle = { header = "x-usage-tokens", per = 1000, max = 40 }

[[routes]]
name = "agent-sse"
method = "POST"
path = "/v2/agents/sse"
upstream = "vendor"
cost = 1
units = { json = "/max_tokens", default = 1000, max = 32000, per = 1000 }
settle = { json = "/usage/total_tokens", per = 1000 }
"#;

async fn start(upstream: &RecordingUpstream, redis_url: Option<&str>) -> TestGateway {
    let mut setup = Setup::new(&upstream.url());
    setup.extra = PRICED_ROUTES;
    setup.redis_url = redis_url;
    TestGateway::start(&setup).await
}

/// The ledger invariant: `used` equals the sum of the unrefunded debits in
/// the history (every test here stays inside one window).
async fn assert_ledger_invariant(gateway: &TestGateway, account: &str) {
    let history = gateway
        .admin_get(&format!("/admin/v1/accounts/{account}/history?limit=500"))
        .await
        .json();
    let sum: u64 = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["refunded"] == false)
        .map(|item| item["cost"].as_u64().unwrap())
        .sum();
    assert_eq!(
        gateway.used(account).await,
        sum,
        "ledger == Σ history costs"
    );
}

/// Waits for `used` to reach `expected` (settlements after a stream ends
/// land asynchronously).
async fn eventually_used(gateway: &TestGateway, account: &str, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let used = gateway.used(account).await;
        if used == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "used is {used}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn per_image_pricing_reads_n_with_default_and_max() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start(&upstream, None).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let url = gateway.url("/v2/images");
    let mut expected_used = 0;
    for (body, cost) in [
        (r#"{"prompt":"cat"}"#, 4),
        (r#"{"n":1}"#, 4),
        (r#"{"n": 4, "size":"1024"}"#, 16),
    ] {
        let response = gateway.client.post_as(&key, &url, body).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            response.header("x-credits-cost"),
            Some(cost.to_string().as_str())
        );
        expected_used += cost;
        // Forwarded byte for byte.
        assert_eq!(upstream.requests().last().unwrap().body, body.as_bytes());
    }
    for (body, needle) in [
        (r#"{"n":11}"#, "maximum"),
        (r#"{"n":-1}"#, "non-negative"),
        (r#"{"n":"four"}"#, "non-negative"),
        ("n=4", "JSON"),
    ] {
        let response = gateway.client.post_as(&key, &url, body).await;
        assert_problem(&response, 400, "invalid_units");
        let detail = response.json()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains("/n") && detail.contains(needle), "{detail}");
    }
    assert_eq!(
        upstream.count(),
        3,
        "invalid pricing input is never forwarded"
    );
    assert_eq!(gateway.used("site-1").await, expected_used);
    assert_ledger_invariant(&gateway, "site-1").await;
}

#[tokio::test]
async fn per_second_video_pricing_rounds_up() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start(&upstream, None).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let url = gateway.url("/v2/videos");
    let ok = gateway
        .client
        .post_as(&key, &url, r#"{"duration_seconds": 12.5}"#)
        .await;
    assert_eq!(ok.header("x-credits-cost"), Some("39"));
    let missing = gateway.client.post_as(&key, &url, "{}").await;
    assert_problem(&missing, 400, "invalid_units");
    let too_long = gateway
        .client
        .post_as(&key, &url, r#"{"duration_seconds": 121}"#)
        .await;
    assert_problem(&too_long, 400, "invalid_units");
    assert_eq!(gateway.used("site-1").await, 39);
}

#[tokio::test]
async fn tokens_settle_from_the_json_response_and_the_history_shows_the_final_cost() {
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior(Behavior::Body {
        status: 200,
        content_type: "application/json".into(),
        body: json!({"id": "x", "usage": {"total_tokens": 2500}})
            .to_string()
            .into_bytes(),
    });
    let gateway = start(&upstream, None).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let response = gateway
        .post_as(&key, "/v2/agents/json", r#"{"max_tokens": 8000}"#)
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["usage"]["total_tokens"], 2500);
    assert_eq!(
        response.header("x-credits-cost"),
        Some("3"),
        "reserved 8, settled 3"
    );
    assert_eq!(response.header("x-credits-remaining"), Some("9997"));
    assert_eq!(gateway.used("site-1").await, 3);
    let history = gateway
        .admin_get("/admin/v1/accounts/site-1/history")
        .await
        .json();
    assert_eq!(history["items"][0]["cost"], 3);

    // No usable figure: the reservation stands.
    upstream.set_behavior(Behavior::Body {
        status: 200,
        content_type: "application/json".into(),
        body: br#"{"usage":{}}"#.to_vec(),
    });
    let response = gateway.post_as(&key, "/v2/agents/json", "{}").await;
    assert_eq!(response.header("x-credits-cost"), Some("1"));
    assert_eq!(gateway.used("site-1").await, 4);
    assert_ledger_invariant(&gateway, "site-1").await;
}

#[tokio::test]
async fn tokens_settle_from_a_header_capped_at_max() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start(&upstream, None).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    for (tokens, expected) in [("1200", "2"), ("99000", "40")] {
        upstream.set_behavior(Behavior::BodyWithHeaders {
            status: 200,
            headers: vec![("x-usage-tokens".into(), tokens.into())],
            body: b"{}".to_vec(),
        });
        let response = gateway
            .post_as(&key, "/v2/agents/header", r#"{"max_tokens": 32000}"#)
            .await;
        assert_eq!(
            response.header("x-credits-cost"),
            Some(expected),
            "{tokens} tokens"
        );
    }
    assert_eq!(gateway.used("site-1").await, 42);
    assert_ledger_invariant(&gateway, "site-1").await;
}

fn sse_chunks(pause: Duration) -> Behavior {
    Behavior::Chunks {
        status: 200,
        content_type: "text/event-stream".into(),
        chunks: vec![
            (Duration::ZERO, b"data: {\"delta\":\"Hel\"}\n\n".to_vec()),
            (
                pause,
                b"data: {\"delta\":\"lo\"}\n\ndata: {\"usage\":{\"total_".to_vec(),
            ),
            (pause, b"tokens\":4100}}\n\n".to_vec()),
            (Duration::ZERO, b"data: [DONE]\n\n".to_vec()),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_through_and_settle_when_they_end() {
    let redis = crate::support::redis::RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior(sse_chunks(Duration::from_millis(100)));
    let url = redis.url();
    let gateway = start(&upstream, Some(&url)).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let response = gateway
        .post_as(&key, "/v2/agents/sse", r#"{"max_tokens": 16000}"#)
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert!(
        response.text().ends_with("data: [DONE]\n\n"),
        "{}",
        response.text()
    );
    // Headers left before the stream ended: they show the reservation.
    assert_eq!(response.header("x-credits-cost"), Some("16"));
    eventually_used(&gateway, "site-1", 5).await;
    let history = gateway
        .admin_get("/admin/v1/accounts/site-1/history")
        .await
        .json();
    assert_eq!(history["items"][0]["cost"], 5);
    assert_ledger_invariant(&gateway, "site-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_is_charged_what_the_upstream_reports() {
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior(sse_chunks(Duration::from_millis(400)));
    let gateway = start(&upstream, None).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let request = format!(
        "POST /v2/agents/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 21\r\n\r\n{{\"max_tokens\": 16000}}"
    );
    // Reads the head and the first event, then hangs up.
    let first = crate::support::http::raw_exchange(
        gateway.running().data_addr,
        request.as_bytes(),
        Duration::from_millis(250),
    )
    .await;
    let first = String::from_utf8_lossy(&first);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("Hel"), "{first}");
    assert!(
        !first.contains("DONE"),
        "the client left before the end: {first}"
    );
    eventually_used(&gateway, "site-1", 5).await;
    assert_ledger_invariant(&gateway, "site-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_exceed_the_allowance_at_admission() {
    let upstream = RecordingUpstream::start().await;
    // Slow answers: every admission happens before any settlement.
    upstream.set_behavior(Behavior::Delay(Duration::from_millis(700)));
    let gateway = std::sync::Arc::new(start(&upstream, None).await);
    let key = gateway.account_with_key("site-1", "small").await;
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let gateway = gateway.clone();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            gateway
                .post_as(&key, "/v2/agents/json", r#"{"max_tokens": 32000}"#)
                .await
                .status
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        if task.await.unwrap() == 200 {
            admitted += 1;
        }
    }
    // floor(1000 / 32) reservations fit; the Delay answer has no usage
    // figure, so every reservation stands.
    assert_eq!(admitted, 31);
    assert_eq!(gateway.used("site-1").await, 31 * 32);
    assert_ledger_invariant(&gateway, "site-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_survives_a_killed_gateway_at_its_reserved_amount() {
    use crate::support::process::{GatewayProcess, TempDir};
    let redis = crate::support::redis::RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior(sse_chunks(Duration::from_secs(3)));
    let dir = TempDir::new("killed");
    let toml = format!(
        "[server]\nlisten = \"{{DATA}}\"\n[admin]\nlisten = \"{{ADMIN}}\"\ntoken = \"t\"\n\
         [ledger]\nredis_url = \"{}\"\n[plans.pro]\nmonthly_allowance = 10000\n\
         [upstreams.vendor]\nurl = \"{}\"\n{PRICED_ROUTES}",
        redis.url(),
        upstream.url()
    );
    let mut process = GatewayProcess::start(&dir, &toml, &[]);
    let client = crate::support::http::TestClient::new();
    let admin = [("authorization", "Bearer t")];
    let put = client
        .put_json(
            &process.admin_url("/admin/v1/accounts/site-1"),
            &admin,
            json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(put.status, 201);
    let key = client
        .post(
            &process.admin_url("/admin/v1/accounts/site-1/keys"),
            &admin,
            "",
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let request = format!(
        "POST /v2/agents/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 21\r\n\r\n{{\"max_tokens\": 16000}}"
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", process.data_port).parse().unwrap();
    let stream = tokio::spawn(async move {
        crate::support::http::raw_exchange(addr, request.as_bytes(), Duration::from_secs(10)).await
    });
    upstream.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    process.signal("KILL");
    process.wait_exit(Duration::from_secs(5));
    let partial = String::from_utf8_lossy(&stream.await.unwrap()).into_owned();
    assert!(
        partial.contains("Hel") && !partial.contains("DONE"),
        "{partial}"
    );

    // Another instance on the same Redis sees the reservation, charged in full.
    let url = redis.url();
    let gateway = start(&upstream, Some(&url)).await;
    assert_eq!(gateway.used("site-1").await, 16);
    let history = gateway
        .admin_get("/admin/v1/accounts/site-1/history")
        .await
        .json();
    assert_eq!(history["items"][0]["cost"], 16);
    assert_eq!(history["items"][0]["refunded"], false);
    assert_ledger_invariant(&gateway, "site-1").await;
}
