//! Configuration: the TOML file (docs/configuration.md) turned into a validated [`Config`].
//!
//! Parsing happens in passes so that every error is reported at once: the
//! file is parsed into a raw `toml::Value`, walked key by key, then checked
//! as a whole. Each problem (unknown key, wrong type, bad duration, missing
//! `${VAR}`, a number beyond the ledger's bound, a route the usage API
//! shadows, …) is collected as a [`ConfigIssue`] with its key path; nothing
//! stops at the first.
//!
//! - `mod.rs`: the validated types, [`Config::load`] and [`Config::parse`];
//! - `reader.rs`: reading one TOML table (typed keys, unknown keys);
//! - `env.rs`: `${VAR}` substitution;
//! - `sections.rs`, `ledger.rs`, `routes.rs`: the walk of each section, with its defaults;
//! - `validate.rs`: the credits bound and the rules across keys and sections.
//!
//! Values validated here stay typed (methods, header names and values), so
//! nothing downstream parses them again.

mod alerts;
mod env;
mod ledger;
mod reader;
mod routes;
mod sections;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

pub use alerts::PPM as THRESHOLD_PPM;
pub use validate::MAX_CREDITS;

/// A fully validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from (used by reload).
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub ledger: LedgerConfig,
    /// Plan name → monthly allowance in credits.
    pub plans: BTreeMap<String, u64>,
    /// Plan name → its extra (shorter) windows, in file order; plans
    /// without `limits` are absent.
    pub limits: crate::ledger::LimitTable,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// In file order.
    pub routes: Vec<RouteConfig>,
    /// `[alerts]`: threshold alerts (docs/alerts.md); `None` when absent.
    pub alerts: Option<AlertsConfig>,
}

/// `[alerts]` (docs/alerts.md). `Debug` hides the secret.
#[derive(Clone, PartialEq)]
pub struct AlertsConfig {
    /// Where alerts are POSTed: `http://` or `https://`.
    pub url: http::Uri,
    /// Signs every alert (HMAC-SHA256); never empty.
    pub secret: String,
    /// Fractions of the monthly allowance, in millionths
    /// ([`THRESHOLD_PPM`] = the whole allowance), ascending, each once.
    pub thresholds: Vec<u32>,
    /// One delivery attempt, connect to response head. Default 10s.
    pub timeout: Duration,
    /// The wait after the first failed attempt, doubled after each further
    /// one (capped at 5 minutes). Default 1s.
    pub retry_base: Duration,
    /// How long after the crossing a failing receiver is retried before the
    /// alert is marked failed. Default 24h.
    pub retry_for: Duration,
}

impl std::fmt::Debug for AlertsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertsConfig")
            .field("url", &self.url)
            .field("secret", &"***")
            .field("thresholds", &self.thresholds)
            .field("timeout", &self.timeout)
            .field("retry_base", &self.retry_base)
            .field("retry_for", &self.retry_for)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    /// Default 10 MiB (10485760).
    pub max_body_bytes: u64,
    /// Default 10s. Counted from accept: the first request head (HTTP/1) or
    /// the preface and SETTINGS (HTTP/2) must be in by then.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress, or a response the client
    /// has stopped reading, is closed after this. Default 60s.
    pub idle_timeout: Duration,
    /// Data-plane worker threads. Default: the machine's cores.
    pub workers: usize,
    /// How long in-flight requests may take to finish after SIGTERM. Default 30s.
    pub drain_timeout: Duration,
    /// The whole request body must arrive within this. Default 60s.
    pub body_read_timeout: Duration,
    /// More header fields than this → 431. Default 100.
    pub max_headers: usize,
    /// A request head larger than this → 431 (min 8192). Default 65536.
    pub max_header_bytes: usize,
    /// Open connections per listener beyond this are closed at once. Default 10000.
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Paths are resolved relative to the config file's directory.
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Default `127.0.0.1:9090`.
    pub listen: SocketAddr,
    /// `None` (key absent or empty string) disables `/admin/v1/*` (403).
    pub token: Option<String>,
}

/// Where the ledger lives. URLs may hold passwords: `Debug` shows them as
/// `***` (see `ledger.rs`).
#[derive(Clone, PartialEq)]
pub enum LedgerBackend {
    Memory,
    /// One Redis: `redis://` or `rediss://` (TLS), `user:password@` for ACLs.
    Redis {
        url: String,
    },
    /// Redis Cluster: seed node URLs (the rest is discovered).
    RedisCluster {
        urls: Vec<String>,
    },
    /// The primary that Redis Sentinel names, followed across failovers.
    RedisSentinel(SentinelConfig),
}

/// `ledger.sentinel = { master = "name", nodes = ["redis://h:26379", …] }`
/// (docs/configuration.md, "Sentinel").
#[derive(Clone, PartialEq)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the primary under.
    pub master: String,
    /// The sentinels: `redis://` or `rediss://` URLs, with `user:password@`
    /// when the sentinels require auth (the same on every node).
    pub nodes: Vec<String>,
    /// How the primary itself is reached: over TLS (default: when the
    /// sentinels' URLs are `rediss://`), as which ACL user, with which
    /// password, in which database.
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    Reject,
    Allow,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerConfig {
    pub backend: LedgerBackend,
    /// Default 30 days.
    pub window: Duration,
    /// Per Redis call. Default 250ms.
    pub timeout: Duration,
    /// Default `Reject`.
    pub on_unavailable: OnUnavailable,
    /// How long a debit stays in the history after it was made. Default 90
    /// days, or `window` when that is longer; set shorter than `window`, an error.
    pub history_retention: Duration,
    /// Refuse to start on a Redis that could lose debits (AOF off) or evict
    /// them (`maxmemory-policy` other than `noeviction`). Default false: warn.
    pub require_durable: bool,
    /// A PEM file of the certificate authorities `rediss://` connections
    /// trust instead of the built-in web PKI roots; resolved relative to the
    /// config file's directory.
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Parsed `url`: scheme `http` or `https`, an authority, optional base path
    /// (without trailing slash; empty when none). No query, no fragment.
    pub scheme: UpstreamScheme,
    /// `host[:port]` exactly as it will be sent in `Host`.
    pub authority: String,
    /// "" or "/base" (never ends with '/').
    pub base_path: String,
    /// Default 60s. Covers connect + until the response head arrives.
    pub timeout: Duration,
    /// Default 5s (capped at `timeout`).
    pub connect_timeout: Duration,
    /// Injected on every forwarded request, in file order. Values are
    /// marked sensitive (they usually hold the vendor's credentials).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    /// `None` = any method. Written in any case in the file; stored upper-case.
    pub method: Option<Method>,
    pub path: PathPattern,
    /// Name of an entry in `Config::upstreams` (validated to exist).
    pub upstream: String,
    pub cost: u64,
    /// Default true.
    pub refund_on_failure: bool,
    /// Price per unit of work read from the request body (docs/configuration.md):
    /// admission cost = `cost × ceil(units / per)`.
    pub units: Option<UnitsConfig>,
    /// Replace the admission cost (a reservation) by what the response reports.
    pub settle: Option<SettleConfig>,
}

/// `units = { json = "/n", default = 1, max = 10, per = 1 }`
#[derive(Debug, Clone, PartialEq)]
pub struct UnitsConfig {
    /// JSON pointer into the request body.
    pub pointer: String,
    /// Used when the field is absent; without one, an absent field is a 400.
    pub default: Option<f64>,
    /// Larger values are a 400 `invalid_units`.
    pub max: Option<f64>,
    /// Units per credit step (default 1).
    pub per: u64,
}

/// `settle = { json = "/usage/total_tokens", per = 1000, max = 64 }` or
/// `settle = { header = "x-usage-tokens", per = 1000 }`
#[derive(Debug, Clone, PartialEq)]
pub struct SettleConfig {
    pub source: SettleSource,
    /// Reported units per credit step (default 1).
    pub per: u64,
    /// Most credits a settlement may charge; default: the reservation.
    pub max_credits: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleSource {
    /// JSON pointer into the response body (or into each SSE event's data).
    Json(String),
    /// A response header (lower-cased name).
    Header(String),
}

/// A route path: exact (`/v1/images/generate`) or prefix (`/v1/agents/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    /// Stored without the trailing `*`, e.g. `/v1/agents/`. Matches any path
    /// that starts with it (including exactly `/v1/agents/`).
    Prefix(String),
}

impl PathPattern {
    /// The pattern as the config file writes it (`/v1/agents/*`).
    pub fn as_config(&self) -> String {
        match self {
            PathPattern::Exact(path) => path.clone(),
            PathPattern::Prefix(prefix) => format!("{prefix}*"),
        }
    }
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `routes[2].cost` or `upstreams.images.timeout`;
    /// empty for whole-file problems (unreadable file, TOML syntax error).
    pub key: String,
    pub message: String,
}

/// Every problem found in a configuration file, with the file's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub issues: Vec<ConfigIssue>,
}

impl std::fmt::Display for ConfigError {
    /// One line per issue: `FILE: KEY: MESSAGE` (`FILE: MESSAGE` without a key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if issue.key.is_empty() {
                write!(f, "{}: {}", self.file, issue.message)?;
            } else {
                write!(f, "{}: {}: {}", self.file, issue.key, issue.message)?;
            }
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file, resolving `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            issues: vec![ConfigIssue {
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::parse(&text, &file, base_dir, &|name| std::env::var(name).ok())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses TOML text. `file` is the name used in errors; `base_dir` resolves
    /// relative TLS paths; `env` looks up `${VAR}` values.
    pub fn parse(
        text: &str,
        file: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let fail = |issues: Vec<ConfigIssue>| ConfigError {
            file: file.to_owned(),
            issues,
        };
        let root: toml::Table = toml::from_str(text).map_err(|e| {
            fail(vec![ConfigIssue {
                key: String::new(),
                message: reader::toml_error_line(text, &e),
            }])
        })?;
        let mut issues = Vec::new();
        let draft = sections::read_root(root, base_dir, env, &mut issues);
        issues.extend(validate::whole(&draft));
        if issues.is_empty() {
            Ok(draft.config)
        } else {
            Err(fail(issues))
        }
    }
}

#[cfg(test)]
mod tests;
