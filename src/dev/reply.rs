//! What the demo vendor answers: an echo of the request, and on the agents
//! path the token usage an AI vendor would report — as one JSON body, or as
//! an event stream when the request asks for `"stream": true` (or accepts
//! `text/event-stream`).
//!
//! The usage figure is a pure function of the request, so a settled cost can
//! be predicted: `prompt_tokens` = body bytes / 4 (rounded up),
//! `completion_tokens` = half of `max_tokens` (default 1000).

use http::HeaderMap;
use serde_json::{json, Map, Value};

/// The agents route of the dev config forwards everything under this prefix.
const AGENTS_PREFIX: &str = "/v1/agents";
/// `max_tokens` assumed when the request names none (the dev route's default).
const DEFAULT_MAX_TOKENS: u64 = 1000;
/// At most this many words of the prompt come back as stream deltas.
const MAX_DELTAS: usize = 24;
/// Said back when the request carries no prompt.
const NO_PROMPT: &str = "hello from the creditgate demo vendor";

/// One answer of the demo vendor.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `200 application/json`.
    Json(Value),
    /// `200 text/event-stream`: one `data:` line per entry, in order.
    Events(Vec<String>),
}

/// The request as the demo vendor saw it.
pub struct Seen<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

pub fn reply(seen: &Seen<'_>) -> Reply {
    let body = parse_body(seen.body);
    let echo = json!({
        "method": seen.method,
        "path": seen.path,
        "query": seen.query,
        "headers": headers_json(seen.headers),
        "body": body,
    });
    if !is_agents_path(seen.path) {
        return Reply::Json(json!({ "demo_vendor": true, "echo": echo }));
    }
    let usage = usage(&body, seen.body.len());
    let text = prompt(&body);
    if wants_stream(&body, seen.headers) {
        let mut events: Vec<String> = text
            .split_whitespace()
            .take(MAX_DELTAS)
            .map(|word| json!({ "delta": format!("{word} ") }).to_string())
            .collect();
        events.push(json!({ "usage": usage }).to_string());
        events.push("[DONE]".to_owned());
        Reply::Events(events)
    } else {
        Reply::Json(json!({ "reply": text, "usage": usage, "echo": echo }))
    }
}

fn is_agents_path(path: &str) -> bool {
    path == AGENTS_PREFIX
        || path
            .strip_prefix(AGENTS_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// JSON when the body is JSON, else its text (lossy), `null` when empty.
fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match map.get_mut(name.as_str()) {
            // A repeated header is shown once, its values joined as HTTP would.
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    Value::Object(map)
}

fn usage(body: &Value, body_bytes: usize) -> Value {
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let prompt_tokens = body_bytes.div_ceil(4) as u64;
    let completion_tokens = max_tokens / 2;
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// `prompt`, else the last message's `content`, else a greeting.
fn prompt(body: &Value) -> String {
    body.get("prompt")
        .and_then(Value::as_str)
        .or_else(|| {
            body.get("messages")
                .and_then(Value::as_array)
                .and_then(|messages| messages.last())
                .and_then(|message| message.get("content"))
                .and_then(Value::as_str)
        })
        .filter(|text| !text.trim().is_empty())
        .unwrap_or(NO_PROMPT)
        .to_owned()
}

fn wants_stream(body: &Value, headers: &HeaderMap) -> bool {
    body.get("stream").and_then(Value::as_bool) == Some(true)
        || headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.contains("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(path: &'a str, headers: &'a HeaderMap, body: &'a [u8]) -> Seen<'a> {
        Seen {
            method: "POST",
            path,
            query: Some("a=1"),
            headers,
            body,
        }
    }

    #[test]
    fn other_paths_are_echoed_with_headers_and_a_json_body() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer demo-vendor-key".parse().unwrap());
        headers.append("x-dup", "one".parse().unwrap());
        headers.append("x-dup", "two".parse().unwrap());
        let Reply::Json(answer) = reply(&seen("/v1/images/generate", &headers, br#"{"n":2}"#))
        else {
            panic!("expected JSON");
        };
        assert_eq!(answer["demo_vendor"], true);
        let echo = &answer["echo"];
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], "/v1/images/generate");
        assert_eq!(echo["query"], "a=1");
        assert_eq!(echo["body"], json!({"n": 2}));
        assert_eq!(echo["headers"]["authorization"], "Bearer demo-vendor-key");
        assert_eq!(echo["headers"]["x-dup"], "one, two");
        assert!(answer.get("usage").is_none());
    }

    #[test]
    fn a_body_that_is_not_json_is_echoed_as_text_and_an_empty_one_as_null() {
        let headers = HeaderMap::new();
        let Reply::Json(text) = reply(&seen("/x", &headers, b"plain words")) else {
            panic!("expected JSON");
        };
        assert_eq!(text["echo"]["body"], "plain words");
        let Reply::Json(empty) = reply(&seen("/x", &headers, b"")) else {
            panic!("expected JSON");
        };
        assert_eq!(empty["echo"]["body"], Value::Null);
    }

    #[test]
    fn agents_report_usage_from_the_body_size_and_max_tokens() {
        let headers = HeaderMap::new();
        let body = br#"{"max_tokens":4000,"prompt":"say hi"}"#;
        let Reply::Json(answer) = reply(&seen("/v1/agents/chat", &headers, body)) else {
            panic!("expected JSON");
        };
        let prompt_tokens = body.len().div_ceil(4) as u64;
        assert_eq!(answer["usage"]["prompt_tokens"], prompt_tokens);
        assert_eq!(answer["usage"]["completion_tokens"], 2000);
        assert_eq!(answer["usage"]["total_tokens"], prompt_tokens + 2000);
        assert_eq!(answer["reply"], "say hi");
        // Without max_tokens the route's default of 1000 is assumed.
        let Reply::Json(default) = reply(&seen("/v1/agents", &headers, b"{}")) else {
            panic!("expected JSON");
        };
        assert_eq!(default["usage"]["completion_tokens"], 500);
        assert_eq!(default["reply"], NO_PROMPT);
    }

    #[test]
    fn agents_stream_deltas_then_usage_then_done_when_asked() {
        let headers = HeaderMap::new();
        let body = br#"{"stream":true,"max_tokens":2000,"messages":[{"role":"user","content":"one two three"}]}"#;
        let Reply::Events(events) = reply(&seen("/v1/agents/chat", &headers, body)) else {
            panic!("expected an event stream");
        };
        assert_eq!(events.len(), 5, "{events:?}");
        assert_eq!(events[0], r#"{"delta":"one "}"#);
        assert_eq!(events[2], r#"{"delta":"three "}"#);
        let usage: Value = serde_json::from_str(&events[3]).unwrap();
        assert_eq!(
            usage["usage"]["total_tokens"],
            body.len().div_ceil(4) as u64 + 1000
        );
        assert_eq!(events[4], "[DONE]");
    }

    #[test]
    fn an_event_stream_accept_header_also_streams_and_other_prefixes_do_not_count() {
        let mut headers = HeaderMap::new();
        headers.insert("accept", "text/event-stream".parse().unwrap());
        assert!(matches!(
            reply(&seen("/v1/agents/run", &headers, b"")),
            Reply::Events(_)
        ));
        // `/v1/agentsX` is not under the agents prefix.
        assert!(matches!(
            reply(&seen("/v1/agentsX", &headers, b"")),
            Reply::Json(ref body) if body.get("usage").is_none()
        ));
    }

    #[test]
    fn long_prompts_stream_a_bounded_number_of_deltas() {
        let headers = HeaderMap::new();
        let words = vec!["w"; 100].join(" ");
        let body = json!({"stream": true, "prompt": words}).to_string();
        let Reply::Events(events) = reply(&seen("/v1/agents/x", &headers, body.as_bytes())) else {
            panic!("expected an event stream");
        };
        assert_eq!(events.len(), MAX_DELTAS + 2);
    }
}
