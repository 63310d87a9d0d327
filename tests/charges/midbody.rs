//! Upstreams that die mid-body (docs/http-api.md, "A response that breaks
//! off"):
//!
//! * an event stream settles at the last usage figure it carried; without
//!   one it follows `refund_on_failure`;
//! * a JSON body read for settlement is a 502 `upstream_unavailable` and
//!   follows `refund_on_failure`;
//! * any other body follows `refund_on_failure`, like a 5xx.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use super::{Backend, Fixture, Options};
use crate::support::breaking_upstream::BreakingUpstream;
use crate::support::http::TestClient;

const FIGURE: &str = "data: {\"usage\":{\"total_tokens\":2500}}\n\n";
const NO_FIGURE: &str = "data: {\"choices\":[\"he\"]}\n\n";
const PARTIAL_EVENT: &str = "data: {\"usage\":{\"total_tok";

fn route(name: &str, path: &str, upstream: &str, refund_on_failure: bool) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
method = "POST"
path = "{path}"
upstream = "{upstream}"
cost = 1
units = {{ json = "/max_tokens", default = 1000, max = 32000, per = 1000 }}
settle = {{ json = "/usage/total_tokens", per = 1000 }}
refund_on_failure = {refund_on_failure}
"#
    )
}

/// Sends a request with `max_tokens = 8000` (a reservation of 8) and
/// returns the status, if the response head came, and whether its body
/// arrived whole.
async fn send(fixture: &Fixture, path: &str, id: &str) -> (Option<u16>, bool) {
    let request = http::Request::post(fixture.gateway.url(path))
        .header("authorization", fixture.auth())
        .header("x-request-id", id)
        .body(Full::new(Bytes::from_static(br#"{"max_tokens":8000}"#)))
        .unwrap();
    match TestClient::new().try_send(request).await {
        Ok(response) => (Some(response.status), true),
        Err(error) if error.starts_with("reading the body") => (Some(200), false),
        Err(_) => (None, false),
    }
}

fn debit<'a>(history: &'a [Value], id: &str) -> &'a Value {
    history
        .iter()
        .find(|item| item["request_id"] == id)
        .unwrap_or_else(|| panic!("no debit for {id}: {history:?}"))
}

fn line(fixture: &Fixture, id: &str) -> Value {
    let lines: Vec<Value> = fixture
        .access_lines()
        .into_iter()
        .filter(|line| line["request_id"] == id)
        .collect();
    assert_eq!(lines.len(), 1, "one access line for {id}: {lines:?}");
    lines.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_break_off_settle_at_the_last_figure_or_follow_refund_on_failure() {
    let sse_figure =
        BreakingUpstream::start("text/event-stream", vec![FIGURE, PARTIAL_EVENT]).await;
    let sse_none = BreakingUpstream::start("text/event-stream", vec![NO_FIGURE]).await;
    let json = BreakingUpstream::start("application/json", vec!["{\"usage\":{\"total_to"]).await;
    let plain = BreakingUpstream::start("application/octet-stream", vec!["partial bytes"]).await;
    let extra = format!(
        "[upstreams.sse_figure]\nurl = \"{}\"\n[upstreams.sse_none]\nurl = \"{}\"\n[upstreams.json]\nurl = \"{}\"\n{}{}{}{}{}",
        sse_figure.url(),
        sse_none.url(),
        json.url(),
        route("sse-figure", "/v1/sse/figure", "sse_figure", true),
        route("sse-none", "/v1/sse/none", "sse_none", true),
        route("sse-none-kept", "/v1/sse/kept", "sse_none", false),
        route("json", "/v1/json", "json", true),
        route("json-kept", "/v1/json/kept", "json", false),
    );
    let mut options = Options::new(Backend::Memory, plain.url());
    options.extra = extra;
    let fixture = Fixture::start(options).await;

    // Event stream, a figure before the break: settled at it (2500 tokens → 3).
    assert_eq!(
        send(&fixture, "/v1/sse/figure", "sse-figure").await,
        (Some(200), false)
    );
    // Event stream without a figure: refunded, or the reservation stands.
    assert_eq!(
        send(&fixture, "/v1/sse/none", "sse-none").await,
        (Some(200), false)
    );
    assert_eq!(
        send(&fixture, "/v1/sse/kept", "sse-kept").await,
        (Some(200), false)
    );
    // JSON read for settlement: a 502, refunded or kept.
    assert_eq!(send(&fixture, "/v1/json", "json").await, (Some(502), true));
    assert_eq!(
        send(&fixture, "/v1/json/kept", "json-kept").await,
        (Some(502), true)
    );
    // Any other body: refund_on_failure (true by default) refunds.
    let request = http::Request::post(fixture.gateway.url("/v1/paid"))
        .header("authorization", fixture.auth())
        .header("x-request-id", "plain")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let plain_outcome = TestClient::new().try_send(request).await;
    assert!(
        plain_outcome
            .as_ref()
            .is_err_and(|e| e.starts_with("reading the body")),
        "{plain_outcome:?}"
    );

    fixture.wait_settled().await;
    let history = fixture.history().await;
    let expect = |id: &str, cost: u64, refunded: bool| {
        let item = debit(&history, id);
        assert_eq!(item["refunded"], refunded, "{id}: {item}");
        if !refunded {
            assert_eq!(item["cost"], cost, "{id}: {item}");
        }
        let line = line(&fixture, id);
        assert_eq!(
            line["cost"],
            if refunded { 0 } else { cost },
            "{id}: {line}"
        );
        assert_eq!(line["refunded"], refunded, "{id}: {line}");
        line
    };
    let line = expect("sse-figure", 3, false);
    assert_eq!(line["outcome"], "upstream_aborted", "{line}");
    assert_eq!(line["debited"], 8, "{line}");
    assert_eq!(expect("sse-none", 0, true)["outcome"], "upstream_aborted");
    expect("sse-kept", 8, false);
    assert_eq!(expect("json", 0, true)["outcome"], "upstream_unavailable");
    assert_eq!(expect("json-kept", 8, false)["status"], 502);
    assert_eq!(expect("plain", 0, true)["outcome"], "upstream_aborted");
    assert_eq!(fixture.used().await, 3 + 8 + 8);
    // Every upstream had each request whole: these are failures after delivery.
    assert_eq!(sse_figure.received(), 1);
    assert_eq!(sse_none.received(), 2);
    assert_eq!(json.received(), 2);
    assert_eq!(plain.received(), 1);
}
