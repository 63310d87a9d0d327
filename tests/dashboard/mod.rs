//! What dashboards read, end to end: the usage report, the price list, the
//! account list (on memory, Redis and Redis Cluster), the CLI's account list,
//! and the operator console in a real headless Chromium.

mod api;
mod browser;
mod cli;

use std::sync::Arc;

use creditgate::clock::{ManualClock, SharedClock};
use creditgate::RunningGateway;
use serde_json::{json, Value};

use crate::support::gateway::{parse, ADMIN_TOKEN};
use crate::support::http::{Response, TestClient};
use crate::support::upstream::{Behavior, RecordingUpstream};

/// Routes with the dashboard's vocabulary: per-unit image prices, a flat
/// upscale and video price, a settled agent route and a free status route.
pub fn demo_toml(upstream: &str, ledger: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
header_read_timeout = "5s"
drain_timeout = "2s"

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[ledger]
{ledger}
timeout = "2s"

[plans.starter]
monthly_allowance = 2000
[plans.pro]
monthly_allowance = 5000
[plans.agency]
monthly_allowance = 50000

[upstreams.images]
url = "{upstream}"
headers = {{ Authorization = "Bearer images-vendor-secret" }}
[upstreams.video]
url = "{upstream}"
[upstreams.agents]
url = "{upstream}"

[[routes]]
name = "image-generate"
method = "POST"
path = "/v1/images/generate"
upstream = "images"
cost = 4
units = {{ json = "/n", default = 1, max = 10 }}

[[routes]]
name = "image-upscale"
method = "POST"
path = "/v1/images/upscale"
upstream = "images"
cost = 2

[[routes]]
name = "video-generate"
method = "POST"
path = "/v1/videos/generate"
upstream = "video"
cost = 25

[[routes]]
name = "agent-chat"
path = "/v1/agents/*"
upstream = "agents"
cost = 1
units = {{ json = "/max_tokens", default = 1000, max = 32000, per = 1000 }}
settle = {{ json = "/usage/total_tokens", per = 1000, max = 8 }}

[[routes]]
name = "status"
method = "GET"
path = "/v1/status"
upstream = "images"
cost = 0
"#
    )
}

/// A gateway with the demo routes in front of a recording upstream whose
/// agent replies report 2400 tokens (3 credits once settled).
pub struct Demo {
    pub running: Option<RunningGateway>,
    pub upstream: RecordingUpstream,
    pub client: TestClient,
}

impl Demo {
    /// `ledger` is the `[ledger]` section's body; `clock` drives a memory ledger.
    pub async fn start(ledger: &str, clock: Option<Arc<ManualClock>>) -> Demo {
        let upstream = RecordingUpstream::start().await;
        upstream.set_behavior_for(
            "/v1/agents",
            Behavior::Body {
                status: 200,
                content_type: "application/json".into(),
                body: br#"{"reply":"done","usage":{"total_tokens":2400}}"#.to_vec(),
            },
        );
        let config = parse(&demo_toml(&upstream.url(), ledger));
        let running = match clock {
            Some(clock) => {
                let shared: SharedClock = clock;
                creditgate::start_with_clock(config, shared).await
            }
            None => creditgate::start(config).await,
        }
        .unwrap_or_else(|e| panic!("gateway failed to start: {e}"));
        let client = TestClient::checking(running.data_addr, running.admin_addr);
        Demo {
            running: Some(running),
            upstream,
            client,
        }
    }

    fn running(&self) -> &RunningGateway {
        self.running.as_ref().expect("running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().data_addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().admin_addr)
    }

    pub async fn admin_get(&self, path: &str) -> Response {
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        self.client
            .get(&self.admin_url(path), &[("authorization", &bearer)])
            .await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Response {
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        self.client
            .post(
                &self.admin_url(path),
                &[
                    ("authorization", &bearer),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await
    }

    pub async fn put_account(&self, id: &str, body: Value) {
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        let response = self
            .client
            .put_json(
                &self.admin_url(&format!("/admin/v1/accounts/{id}")),
                &[("authorization", &bearer)],
                body,
            )
            .await;
        assert!(
            response.status == 200 || response.status == 201,
            "PUT {id}: {} {}",
            response.status,
            response.text()
        );
    }

    /// Creates the account and a key for it.
    pub async fn account_with_key(&self, id: &str, plan: &str) -> String {
        self.put_account(id, json!({ "plan": plan })).await;
        let created = self
            .admin_post(&format!("/admin/v1/accounts/{id}/keys"), json!({}))
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        created.json()["key"].as_str().expect("key").to_owned()
    }

    /// One priced request; returns its request id.
    pub async fn spend(&self, key: &str, path: &str, body: Value) -> String {
        let bearer = format!("Bearer {key}");
        let response = self
            .client
            .post(
                &self.url(path),
                &[
                    ("authorization", &bearer),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await;
        assert_eq!(response.status, 200, "POST {path}: {}", response.text());
        response
            .header("x-request-id")
            .expect("x-request-id")
            .to_owned()
    }

    pub async fn get_with_key(&self, key: &str, path: &str) -> Response {
        let bearer = format!("Bearer {key}");
        self.client
            .get(&self.url(path), &[("authorization", &bearer)])
            .await
    }

    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    running.shutdown(),
                ));
            }
        }
    }
}

/// Σ of `credits` over a report list.
pub fn total(list: &Value) -> u64 {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|item| item["credits"].as_u64().expect("credits"))
        .sum()
}
