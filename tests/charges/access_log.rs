//! One access line per request under concurrency — event streams included,
//! written once their settlement is final — and the usage API counted as
//! the gateway's own answer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use super::{one_line_each, Backend, Fixture, Options};
use crate::support::http::TestClient;
use crate::support::upstream::{Behavior, RecordingUpstream};

const SSE_ROUTE: &str = r#"
[[routes]]
name = "agent-sse"
method = "POST"
path = "/v1/agents/sse"
upstream = "vendor"
cost = 1
units = { json = "/max_tokens", default = 1000, max = 32000, per = 1000 }
settle = { json = "/usage/total_tokens", per = 1000 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_and_streams_have_one_line_each_with_their_final_cost() {
    let upstream = RecordingUpstream::start().await;
    upstream.set_behavior_for(
        "/v1/agents/sse",
        Behavior::Chunks {
            status: 200,
            content_type: "text/event-stream".into(),
            chunks: vec![
                (Duration::ZERO, b"data: {\"delta\":\"a\"}\n\n".to_vec()),
                (
                    Duration::from_millis(30),
                    b"data: {\"usage\":{\"total_tokens\":1500}}\n\n".to_vec(),
                ),
                (Duration::from_millis(30), b"data: [DONE]\n\n".to_vec()),
            ],
        },
    );
    let mut options = Options::new(Backend::Memory, upstream.url());
    options.extra = SSE_ROUTE.to_owned();
    let fixture = Fixture::start(options).await;

    let data_client = TestClient::new();
    let mut requests = Vec::new();
    for i in 0..60 {
        let (path, body): (&str, &'static [u8]) = if i % 2 == 0 {
            ("/v1/paid", b"x")
        } else {
            ("/v1/agents/sse", br#"{"max_tokens":4000}"#)
        };
        let request = http::Request::post(fixture.gateway.url(path))
            .header("authorization", fixture.auth())
            .header("x-request-id", format!("log-{i}"))
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
        let client = data_client.clone();
        requests.push(tokio::spawn(async move { client.send(request).await }));
    }
    for request in requests {
        let response = request.await.unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let usage = data_client
        .get(
            &fixture.gateway.url("/v1/credits"),
            &[
                ("authorization", &fixture.auth()),
                ("x-request-id", "usage-1"),
            ],
        )
        .await;
    assert_eq!(usage.status, 200, "{}", usage.text());
    drop(data_client);

    fixture.wait_settled().await;
    let mut ids: Vec<String> = (0..60).map(|i| format!("log-{i}")).collect();
    ids.push("usage-1".into());
    let lines = one_line_each(&fixture, &ids).await;
    for i in 0..60 {
        let line = &lines[&format!("log-{i}")];
        assert_eq!(line["outcome"], "forwarded", "{line}");
        if i % 2 == 0 {
            assert_eq!(line["cost"], 7, "{line}");
        } else {
            // Reserved 4, settled at 1500 tokens → 2, in one line.
            assert_eq!(line["debited"], 4, "{line}");
            assert_eq!(line["cost"], 2, "{line}");
            assert!(line["body_bytes"].as_u64().unwrap() > 0, "{line}");
        }
    }
    assert_eq!(lines["usage-1"]["outcome"], "usage_api");
    assert_eq!(lines["usage-1"]["route"], "");
    assert_eq!(fixture.used().await, 30 * 7 + 30 * 2);

    let metrics = fixture.metrics().await;
    for expected in [
        "creditgate_requests_total{route=\"paid\",outcome=\"forwarded\",status=\"200\"} 30",
        "creditgate_requests_total{route=\"agent-sse\",outcome=\"forwarded\",status=\"200\"} 30",
        "creditgate_requests_total{route=\"\",outcome=\"usage_api\",status=\"200\"} 1",
        "creditgate_credits_debited_total{route=\"agent-sse\"} 120",
        "creditgate_credits_charged_total{route=\"agent-sse\"} 60",
        "creditgate_credits_charged_total{route=\"paid\"} 210",
        "creditgate_ledger_duration_seconds_count{op=\"settle\"} 30",
    ] {
        assert!(metrics.contains(expected), "missing {expected}:\n{metrics}");
    }
    assert!(!metrics.contains("reason=\"usage_api\""), "{metrics}");
}
