//! In-process gateways for tests, started from real TOML through the real
//! config parser, listening on free loopback ports.

use std::time::Duration;

use creditgate::config::Config;
use creditgate::RunningGateway;
use serde_json::json;

use super::http::{Response, TestClient};
use super::metrics::Samples;
use super::money::LedgerView;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const VENDOR_KEY: &str = "vendor-secret-canary-7f3a";

/// Options for [`config_toml`].
pub struct Setup<'a> {
    pub upstream_url: String,
    /// `None` = memory ledger.
    pub redis_url: Option<&'a str>,
    pub window: &'a str,
    pub ledger_timeout: &'a str,
    pub upstream_timeout: &'a str,
    pub max_body_bytes: u64,
    pub on_unavailable: &'a str,
    /// Extra TOML appended verbatim (more routes, TLS, …).
    pub extra: &'a str,
}

impl<'a> Setup<'a> {
    pub fn new(upstream_url: &str) -> Setup<'a> {
        Setup {
            upstream_url: upstream_url.to_owned(),
            redis_url: None,
            window: "30d",
            // Far beyond any Redis latency a loaded test machine shows: an
            // exactness test must never see a 503 it did not cause. Tests of
            // a failing ledger set a short timeout themselves.
            ledger_timeout: "5s",
            upstream_timeout: "10s",
            max_body_bytes: 1024,
            on_unavailable: "reject",
            extra: "",
        }
    }

    pub fn redis(mut self, url: &'a str) -> Self {
        self.redis_url = Some(url);
        self
    }

    /// A short ledger timeout, for tests where the ledger fails on purpose.
    pub fn failing_fast(mut self) -> Self {
        self.ledger_timeout = "250ms";
        self
    }
}

/// A config with plans free (100), pro (10000), small (1000) and routes:
/// `paid` POST /v1/paid cost 7, `image` POST /v1/images/generate cost 10,
/// `agents` any /v1/agents/* cost 1, `free` GET /v1/free cost 0,
/// `noreund` POST /v1/norefund cost 5 with refund_on_failure = false.
pub fn config_toml(setup: &Setup<'_>) -> String {
    let ledger = match setup.redis_url {
        Some(url) => format!("backend = \"redis\"\nredis_url = \"{url}\""),
        None => "backend = \"memory\"".to_owned(),
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = {max_body}
header_read_timeout = "2s"
drain_timeout = "5s"

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[ledger]
{ledger}
window = "{window}"
timeout = "{ledger_timeout}"
on_unavailable = "{on_unavailable}"

[plans.free]
monthly_allowance = 100
[plans.pro]
monthly_allowance = 10000
[plans.small]
monthly_allowance = 1000

[upstreams.vendor]
url = "{upstream}"
timeout = "{upstream_timeout}"
headers = {{ Authorization = "Bearer {VENDOR_KEY}", X-Vendor-Tenant = "creditgate" }}

[[routes]]
name = "paid"
method = "POST"
path = "/v1/paid"
upstream = "vendor"
cost = 7

[[routes]]
name = "image"
method = "POST"
path = "/v1/images/generate"
upstream = "vendor"
cost = 10

[[routes]]
name = "agents"
path = "/v1/agents/*"
upstream = "vendor"
cost = 1

[[routes]]
name = "free"
method = "GET"
path = "/v1/free"
upstream = "vendor"
cost = 0

[[routes]]
name = "norefund"
method = "POST"
path = "/v1/norefund"
upstream = "vendor"
cost = 5
refund_on_failure = false

{extra}
"#,
        max_body = setup.max_body_bytes,
        window = setup.window,
        ledger_timeout = setup.ledger_timeout,
        on_unavailable = setup.on_unavailable,
        upstream = &setup.upstream_url,
        upstream_timeout = setup.upstream_timeout,
        extra = setup.extra,
    )
}

pub fn parse(toml: &str) -> Config {
    Config::parse(toml, "test.toml", std::path::Path::new("."), &|name| {
        std::env::var(name).ok()
    })
    .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"))
}

pub struct TestGateway {
    running: Option<RunningGateway>,
    pub client: TestClient,
}

impl TestGateway {
    pub async fn start(setup: &Setup<'_>) -> TestGateway {
        Self::start_toml(&config_toml(setup)).await
    }

    pub async fn start_toml(toml: &str) -> TestGateway {
        Self::start_config(parse(toml)).await
    }

    pub async fn start_config(config: Config) -> TestGateway {
        let running = creditgate::start(config)
            .await
            .unwrap_or_else(|e| panic!("gateway failed to start: {e}"));
        let client = TestClient::checking(running.data_addr, running.admin_addr);
        TestGateway {
            running: Some(running),
            client,
        }
    }

    pub fn running(&self) -> &RunningGateway {
        self.running.as_ref().expect("gateway is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().data_addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().admin_addr)
    }

    /// `POST path` with `body`, authenticated with `key`.
    pub async fn post_as(&self, key: &str, path: &str, body: impl Into<bytes::Bytes>) -> Response {
        self.client.post_as(key, &self.url(path), body).await
    }

    /// `GET path`, authenticated with `key`.
    pub async fn get_as(&self, key: &str, path: &str) -> Response {
        self.client.get_as(key, &self.url(path)).await
    }

    /// Any method, extra headers, authenticated with `key`.
    pub async fn send_as(
        &self,
        key: &str,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<bytes::Bytes>,
    ) -> Response {
        self.client
            .send_as(key, method, &self.url(path), headers, body)
            .await
    }

    pub async fn metrics(&self) -> Samples {
        let response = self.client.get(&self.admin_url("/metrics"), &[]).await;
        assert_eq!(response.status, 200, "{}", response.text());
        Samples::parse(&response.text())
    }

    /// `used` and the history of these accounts, for the money oracle.
    pub async fn ledger_view(&self, accounts: &[&str]) -> LedgerView {
        LedgerView::fetch(&self.client, &self.admin_url(""), ADMIN_TOKEN, accounts).await
    }

    pub async fn admin_put_account(&self, id: &str, plan: &str) -> Response {
        self.client
            .put_json(
                &self.admin_url(&format!("/admin/v1/accounts/{id}")),
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                json!({"plan": plan}),
            )
            .await
    }

    /// Creates (or updates) the account and returns a fresh API key for it.
    pub async fn account_with_key(&self, id: &str, plan: &str) -> String {
        let put = self.admin_put_account(id, plan).await;
        assert!(
            put.status == 200 || put.status == 201,
            "PUT account: {} {}",
            put.status,
            put.text()
        );
        self.new_key(id).await
    }

    pub async fn new_key(&self, id: &str) -> String {
        let created = self
            .client
            .post(
                &self.admin_url(&format!("/admin/v1/accounts/{id}/keys")),
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                "",
            )
            .await;
        assert_eq!(created.status, 201, "POST key: {}", created.text());
        created.json()["key"].as_str().expect("key").to_owned()
    }

    pub async fn admin_get(&self, path: &str) -> Response {
        self.client
            .get(
                &self.admin_url(path),
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            )
            .await
    }

    /// `used` of the account as the admin API reports it.
    pub async fn used(&self, id: &str) -> u64 {
        let account = self.admin_get(&format!("/admin/v1/accounts/{id}")).await;
        assert_eq!(account.status, 200, "{}", account.text());
        account.json()["used"].as_u64().expect("used")
    }

    pub async fn credits(&self, key: &str) -> serde_json::Value {
        let response = self
            .client
            .get(
                &self.url("/v1/credits"),
                &[("authorization", &format!("Bearer {key}"))],
            )
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    }

    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            // Stops accepting at once; the drain finishes in the background
            // (or with the test's runtime).
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(tokio::time::timeout(
                    Duration::from_secs(5),
                    running.shutdown(),
                ));
            }
        }
    }
}
