//! Prices that follow the work: per image, per video second, per AI token.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use super::assert_problem;
use crate::support::gateway::{Setup, TestGateway};
use crate::support::http::{RawConnection, Response, GENEROUS};
use crate::support::money::{assert_ledger_matches_vendors, by_request_id, Tally};
use crate::support::upstream::{Behavior, Gate, RecordingUpstream, Step};
use crate::support::wait::wait_until;

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

/// The money invariant for one account: every request the vendor received
/// whole stands in the ledger at the final cost the test expects for its
/// request id (`charged`), nothing else is charged, and `used` is their sum.
async fn assert_charged(
    gateway: &TestGateway,
    upstream: &RecordingUpstream,
    account: &str,
    charged: &HashMap<String, u64>,
) {
    let view = gateway.ledger_view(&[account]).await;
    assert_ledger_matches_vendors(&view, &[upstream], by_request_id(charged));
}

/// The request id a response carries (the one its debit is filed under).
fn request_id(response: &Response) -> String {
    response
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned()
}

/// Waits for `used` to reach `expected` (settlements after a stream ends
/// land asynchronously).
async fn eventually_used(gateway: &TestGateway, account: &str, expected: u64) {
    wait_until(
        &format!("used to settle at {expected}"),
        async || match gateway.used(account).await {
            used if used == expected => Ok(()),
            used => Err(format!("used {used}")),
        },
    )
    .await;
}

#[tokio::test]
async fn per_image_pricing_reads_n_with_default_and_max() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start(&upstream, None).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let url = gateway.url("/v2/images");
    let mut expected_used = 0;
    let mut charged = HashMap::new();
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
        charged.insert(request_id(&response), cost);
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
        upstream.reached(),
        3,
        "invalid pricing input is never forwarded: {}",
        upstream.summary()
    );
    assert_eq!(gateway.used("site-1").await, expected_used);
    assert_charged(&gateway, &upstream, "site-1", &charged).await;
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
    let charged = HashMap::from([(request_id(&ok), 39)]);
    let missing = gateway.client.post_as(&key, &url, "{}").await;
    assert_problem(&missing, 400, "invalid_units");
    let too_long = gateway
        .client
        .post_as(&key, &url, r#"{"duration_seconds": 121}"#)
        .await;
    assert_problem(&too_long, 400, "invalid_units");
    assert_eq!(gateway.used("site-1").await, 39);
    assert_eq!(upstream.reached(), 1, "{}", upstream.summary());
    assert_charged(&gateway, &upstream, "site-1", &charged).await;
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
    let mut charged = HashMap::from([(request_id(&response), 3)]);
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
    charged.insert(request_id(&response), 1);
    assert_eq!(gateway.used("site-1").await, 4);
    assert_charged(&gateway, &upstream, "site-1", &charged).await;
}

#[tokio::test]
async fn tokens_settle_from_a_header_capped_at_max() {
    let upstream = RecordingUpstream::start().await;
    let gateway = start(&upstream, None).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let mut charged = HashMap::new();
    for (tokens, expected) in [("1200", 2), ("99000", 40)] {
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
            Some(expected.to_string().as_str()),
            "{tokens} tokens"
        );
        charged.insert(request_id(&response), expected);
    }
    assert_eq!(gateway.used("site-1").await, 42);
    assert_charged(&gateway, &upstream, "site-1", &charged).await;
}

const HEL: &[u8] = b"data: {\"delta\":\"Hel\"}\n\n";
const LO_AND_USAGE: &[u8] = b"data: {\"delta\":\"lo\"}\n\ndata: {\"usage\":{\"total_";
const USAGE_END: &[u8] = b"tokens\":4100}}\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

/// An agent's event stream reporting 4100 tokens (5 credits at 1 per 1000),
/// the figure split across two chunks.
fn sse_chunks(pause: Duration) -> Behavior {
    Behavior::Chunks {
        status: 200,
        content_type: "text/event-stream".into(),
        chunks: vec![
            (Duration::ZERO, HEL.to_vec()),
            (pause, LO_AND_USAGE.to_vec()),
            (pause, USAGE_END.to_vec()),
            (Duration::ZERO, DONE.to_vec()),
        ],
    }
}

/// The same stream, holding after the first event until `rest` opens.
fn sse_held_after_first_event(rest: &Gate) -> Behavior {
    Behavior::Stream {
        status: 200,
        content_type: "text/event-stream".into(),
        steps: vec![
            Step::Data(HEL.to_vec()),
            Step::Wait(rest.clone()),
            Step::Data(LO_AND_USAGE.to_vec()),
            Step::Data(USAGE_END.to_vec()),
            Step::Data(DONE.to_vec()),
        ],
    }
}

const SSE_REQUEST: &str = "POST /v2/agents/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\nContent-Length: 21\r\n\r\n{\"max_tokens\": 16000}";

/// The `x-request-id` in a raw HTTP/1 response head.
fn raw_request_id(raw: &str) -> String {
    raw.lines()
        .find_map(|line| line.strip_prefix("x-request-id: "))
        .expect("x-request-id")
        .trim()
        .to_owned()
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
    assert_charged(
        &gateway,
        &upstream,
        "site-1",
        &HashMap::from([(request_id(&response), 5)]),
    )
    .await;
    // The metrics count the settled cost, once.
    settled_cost_is_counted_once(&gateway, 5.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_stream_is_charged_what_the_upstream_reports() {
    let upstream = RecordingUpstream::start().await;
    let rest = Gate::new();
    upstream.set_behavior(sse_held_after_first_event(&rest));
    let gateway = start(&upstream, None).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    // Reads the head and the first event, then hangs up; only then does
    // the vendor send the rest, with the usage figure.
    let mut connection = RawConnection::open(
        gateway.running().data_addr,
        SSE_REQUEST.replace("KEY", &key).as_bytes(),
    )
    .await;
    let first = connection.read_until("Hel").await;
    drop(connection);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    rest.open();
    eventually_used(&gateway, "site-1", 5).await;
    assert_charged(
        &gateway,
        &upstream,
        "site-1",
        &HashMap::from([(raw_request_id(&first), 5)]),
    )
    .await;
    settled_cost_is_counted_once(&gateway, 5.0).await;
}

/// `creditgate_credits_charged_total` holds the final (settled) cost, once;
/// the request's record is written when its last owner lets go, which may
/// be a moment after the ledger settled.
async fn settled_cost_is_counted_once(gateway: &TestGateway, expected: f64) {
    let metric = "creditgate_credits_charged_total{route=\"agent-sse\"}";
    wait_until(&format!("{metric} == {expected}"), async || {
        let seen = gateway.metrics().await.counter(metric);
        if seen == expected {
            Ok(())
        } else {
            Err(format!("{seen}"))
        }
    })
    .await;
    // And stays there: nothing counts it a second time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        gateway.metrics().await.counter(metric),
        expected,
        "{metric}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_exceed_the_allowance_at_admission() {
    let upstream = RecordingUpstream::start().await;
    // The vendor holds every answer (2500 tokens: 3 credits) until the test
    // has seen all admissions: reservations are what admission counts.
    let answers = Gate::new();
    upstream.set_behavior(Behavior::Gated(
        answers.clone(),
        Box::new(Behavior::Body {
            status: 200,
            content_type: "application/json".into(),
            body: json!({"usage": {"total_tokens": 2500}})
                .to_string()
                .into_bytes(),
        }),
    ));
    let gateway = std::sync::Arc::new(start(&upstream, None).await);
    let key = gateway.account_with_key("site-1", "small").await;
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let (gateway, key, refused) = (gateway.clone(), key.to_owned(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let response = gateway
                .post_as(&key, "/v2/agents/json", r#"{"max_tokens": 32000}"#)
                .await;
            if response.status != 200 {
                refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            response
        }));
    }
    wait_until(
        "all 60 requests to be held at the vendor or refused",
        async || {
            let refused = refused.load(std::sync::atomic::Ordering::SeqCst);
            match upstream.reached() + refused {
                60 => Ok(()),
                n => Err(format!(
                    "{n}: {refused} refused, vendor {}",
                    upstream.summary()
                )),
            }
        },
    )
    .await;
    // floor(1000 / 32) reservations fit, whatever will be settled later.
    let reserved = gateway.used("site-1").await;
    assert_eq!(
        (upstream.reached(), reserved),
        (31, 31 * 32),
        "admitted at 32 credits each before any settlement"
    );
    answers.open();
    let mut tally = Tally::default();
    let mut charged = HashMap::new();
    for task in tasks {
        let response = task.await.unwrap();
        tally.add(response.status);
        if response.status == 200 {
            assert_eq!(response.header("x-credits-cost"), Some("3"));
            charged.insert(request_id(&response), 3);
        } else {
            assert_problem(&response, 429, "credits_exhausted");
        }
    }
    assert_eq!(tally.count(200), 31, "statuses {tally}");
    // Each settled at 3: the reservations came back.
    assert_eq!(gateway.used("site-1").await, 31 * 3);
    assert_charged(&gateway, &upstream, "site-1", &charged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_survives_a_killed_gateway_at_its_reserved_amount() {
    use crate::support::process::{GatewayProcess, TempDir};
    let redis = crate::support::redis::RedisServer::start();
    let upstream = RecordingUpstream::start().await;
    // The rest of the stream (and its usage figure) never comes.
    upstream.set_behavior(sse_held_after_first_event(&Gate::new()));
    let dir = TempDir::new("killed");
    let toml = format!(
        "[server]\nlisten = \"{{DATA}}\"\n[admin]\nlisten = \"{{ADMIN}}\"\ntoken = \"t\"\n\
         [ledger]\nredis_url = \"{}\"\ntimeout = \"5s\"\n[plans.pro]\nmonthly_allowance = 10000\n\
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
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", process.data_port).parse().unwrap();
    let mut connection =
        RawConnection::open(addr, SSE_REQUEST.replace("KEY", &key).as_bytes()).await;
    // Mid-stream: the client has the first event, the vendor holds the rest.
    let partial = connection.read_until("Hel").await;
    process.signal("KILL");
    process.wait_exit(GENEROUS);
    let partial = partial + &connection.read_to_close().await;
    assert!(!partial.contains("DONE"), "{partial}");

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
    assert_charged(
        &gateway,
        &upstream,
        "site-1",
        &HashMap::from([(raw_request_id(&partial), 16)]),
    )
    .await;
}
