//! A charge follows delivery: the real binary, real upstreams and a real
//! ledger (memory, Redis, Redis Cluster), with clients that leave, bodies
//! that stall, upstreams that die mid-body and a drain timeout.
//!
//! Every test ends the same way: once the gateway has no connection and no
//! money-holding work left (`creditgate_charge_work_in_flight` 0), the
//! ledger is compared with what the upstream received whole, and the access
//! log with the ledger's history.

mod aborts;
mod access_log;
mod midbody;
mod refunds;
mod shutdown;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::access_log::{access_lines, by_request_id};
use crate::support::cluster::RedisCluster;
use crate::support::http::TestClient;
use crate::support::process::{GatewayProcess, TempDir};
use crate::support::redis::RedisServer;
use crate::support::upstream::RecordingUpstream;

pub const TOKEN: &str = "charges-admin-token";
pub const ACCOUNT: &str = "site-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
    Cluster,
}

/// What the gateway needs besides the upstream.
pub struct Options {
    pub backend: Backend,
    pub upstream_url: String,
    pub upstream_timeout: &'static str,
    pub body_read_timeout: &'static str,
    pub drain_timeout: &'static str,
    pub ledger_timeout: &'static str,
    /// Appended verbatim (more upstreams and routes).
    pub extra: String,
}

impl Options {
    pub fn new(backend: Backend, upstream_url: String) -> Options {
        Options {
            backend,
            upstream_url,
            upstream_timeout: "10s",
            body_read_timeout: "30s",
            drain_timeout: "5s",
            // Exactness: no ledger call may time out because the machine is loaded.
            ledger_timeout: "5s",
            extra: String::new(),
        }
    }
}

/// A gateway process with its ledger, one account and its key.
pub struct Fixture {
    pub gateway: GatewayProcess,
    pub key: String,
    /// For the admin listener. Data-plane requests use a client of their
    /// own, dropped before [`Fixture::wait_settled`]: a pooled connection
    /// the client opened but never used would keep the gateway from settling.
    pub client: TestClient,
    // Dropped after the gateway (fields drop in order).
    _dir: TempDir,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

impl Fixture {
    pub async fn start(options: Options) -> Fixture {
        let (redis, cluster, ledger) = match options.backend {
            Backend::Memory => (None, None, "backend = \"memory\"".to_owned()),
            Backend::Redis => {
                let redis = RedisServer::start();
                let ledger = format!("redis_url = \"{}\"", redis.url());
                (Some(redis), None, ledger)
            }
            Backend::Cluster => {
                let cluster = RedisCluster::start();
                let ledger = format!("cluster = {}", cluster.toml_urls());
                (None, Some(cluster), ledger)
            }
        };
        let toml = format!(
            r#"
[server]
listen = "{{DATA}}"
# Two data-plane workers whatever the machine: a charge must hold on each.
workers = 2
header_read_timeout = "5s"
body_read_timeout = "{body_read_timeout}"
drain_timeout = "{drain_timeout}"
max_body_bytes = 65536

[admin]
listen = "{{ADMIN}}"
token = "{TOKEN}"

[ledger]
{ledger}
timeout = "{ledger_timeout}"

[plans.pro]
monthly_allowance = 100000000

[upstreams.vendor]
url = "{upstream}"
timeout = "{upstream_timeout}"

[[routes]]
name = "paid"
method = "POST"
path = "/v1/paid"
upstream = "vendor"
cost = 7

{extra}
"#,
            body_read_timeout = options.body_read_timeout,
            drain_timeout = options.drain_timeout,
            ledger_timeout = options.ledger_timeout,
            upstream = options.upstream_url,
            upstream_timeout = options.upstream_timeout,
            extra = &options.extra,
        );
        let dir = TempDir::new("charges");
        let gateway = GatewayProcess::start(&dir, &toml, &[]);
        let client = TestClient::new();
        let admin = format!("Bearer {TOKEN}");
        let put = client
            .put_json(
                &gateway.admin_url(&format!("/admin/v1/accounts/{ACCOUNT}")),
                &[("authorization", &admin)],
                serde_json::json!({"plan": "pro"}),
            )
            .await;
        assert!(put.status == 200 || put.status == 201, "{}", put.text());
        let created = client
            .post(
                &gateway.admin_url(&format!("/admin/v1/accounts/{ACCOUNT}/keys")),
                &[("authorization", &admin)],
                "",
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let key = created.json()["key"].as_str().expect("key").to_owned();
        Fixture {
            gateway,
            key,
            client,
            _dir: dir,
            _redis: redis,
            _cluster: cluster,
        }
    }

    /// The Redis the ledger lives in (for a look after the gateway is gone).
    pub fn redis_url(&self) -> Option<String> {
        self._redis.as_ref().map(RedisServer::url)
    }

    /// The Redis the ledger lives in (to stop and continue it).
    pub fn redis(&self) -> Option<&RedisServer> {
        self._redis.as_ref()
    }

    pub fn auth(&self) -> String {
        format!("Bearer {}", self.key)
    }

    async fn admin_get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(
                &self.gateway.admin_url(path),
                &[("authorization", &format!("Bearer {TOKEN}"))],
            )
            .await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        response.json()
    }

    pub async fn used(&self) -> u64 {
        self.admin_get(&format!("/admin/v1/accounts/{ACCOUNT}"))
            .await["used"]
            .as_u64()
            .expect("used")
    }

    /// Every debit of the account, newest first.
    pub async fn history(&self) -> Vec<Value> {
        let mut items = Vec::new();
        let mut path = format!("/admin/v1/accounts/{ACCOUNT}/history?limit=500");
        loop {
            let page = self.admin_get(&path).await;
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next"].as_str() {
                Some(next) => {
                    path = format!("/admin/v1/accounts/{ACCOUNT}/history?limit=500&before={next}")
                }
                None => return items,
            }
        }
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(&self.gateway.admin_url("/metrics"), &[])
            .await
            .text()
    }

    /// Waits until the gateway holds no client connection and no
    /// money-holding work: every charge is final, every record written.
    /// (Twice in a row: an HTTP/2 stream's task can outlive its connection
    /// by a moment.)
    pub async fn wait_settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet_polls = 0;
        loop {
            let metrics = self.metrics().await;
            let quiet = metrics.contains("creditgate_charge_work_in_flight 0\n")
                && metrics.contains("creditgate_open_connections{listener=\"data\"} 0\n");
            quiet_polls = if quiet { quiet_polls + 1 } else { 0 };
            if quiet_polls == 2 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway never settled:\n{}",
                metrics
                    .lines()
                    .filter(|l| l.contains("in_flight") || l.contains("open_connections"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The access lines written so far.
    pub fn access_lines(&self) -> Vec<Value> {
        access_lines(&self.gateway.logs())
    }
}

/// What the ledger says about a run, checked against the vendor and the log.
pub struct Audit {
    /// Distinct request ids the vendor received whole.
    pub received: BTreeSet<String>,
    pub debits: usize,
    pub refunded: usize,
}

/// The money invariant of a settled gateway: `used` is the cost times the
/// number of distinct requests the vendor received whole, the debits that
/// stand are exactly those requests, and every debit has exactly one access
/// line showing its final cost.
pub async fn audit(fixture: &Fixture, cost: u64, upstream: &RecordingUpstream) -> Audit {
    fixture.wait_settled().await;
    let received = &request_ids(&upstream.requests());
    let history = fixture.history().await;
    let used = fixture.used().await;
    let charged_ids: BTreeSet<String> = history
        .iter()
        .filter(|item| item["refunded"] == false)
        .map(|item| item["request_id"].as_str().unwrap().to_owned())
        .collect();
    let refunded = history
        .iter()
        .filter(|item| item["refunded"] == true)
        .count();
    let report = || {
        format!(
            "debits {}, refunded {refunded}, used {used}, vendor received {} whole\n\
             charged but never received: {:?}\nreceived but not charged: {:?}",
            history.len(),
            received.len(),
            charged_ids.difference(received).collect::<Vec<_>>(),
            received.difference(&charged_ids).collect::<Vec<_>>(),
        )
    };
    assert_eq!(used, cost * received.len() as u64, "{}", report());
    assert_eq!(&charged_ids, received, "{}", report());

    let ids: Vec<String> = history
        .iter()
        .map(|item| item["request_id"].as_str().unwrap().to_owned())
        .collect();
    let lines = one_line_each(fixture, &ids).await;
    for item in &history {
        let line = &lines[item["request_id"].as_str().unwrap()];
        let refunded = item["refunded"] == true;
        assert_eq!(line["refunded"], refunded, "{line}");
        assert_eq!(line["cost"], if refunded { 0 } else { cost }, "{line}");
        assert_eq!(line["debited"], cost, "{line}");
    }
    Audit {
        received: received.clone(),
        debits: history.len(),
        refunded,
    }
}

/// Waits until each of `ids` has an access line (the last records may
/// still be on their way to the log file), then checks that no request has
/// more than one; returns each id's line.
pub async fn one_line_each(fixture: &Fixture, ids: &[String]) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = by_request_id(&fixture.access_lines());
        let missing: Vec<&String> = ids.iter().filter(|id| !lines.contains_key(*id)).collect();
        if missing.is_empty() {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} requests have no access line: {missing:?}",
            missing.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    lines
        .into_iter()
        .map(|(id, found)| {
            assert_eq!(
                found.len(),
                1,
                "request {id} has {} access lines: {found:?}",
                found.len()
            );
            (id, found.into_iter().next().unwrap())
        })
        .collect()
}

/// Distinct `x-request-id`s among the requests an upstream recorded.
pub fn request_ids(requests: &[crate::support::upstream::RecordedRequest]) -> BTreeSet<String> {
    requests
        .iter()
        .filter_map(|r| r.header("x-request-id").map(str::to_owned))
        .collect()
}
