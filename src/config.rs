//! Configuration: the TOML file (docs/configuration.md) turned into a validated [`Config`].
//!
//! Parsing happens in two passes so that every error is reported at once:
//! the file is parsed into a raw `toml::Value`, then walked key by key. Each
//! problem (unknown key, wrong type, bad duration, missing `${VAR}`, …) is
//! collected as a [`ConfigIssue`] with its key path; nothing stops at the first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// In file order.
    pub routes: Vec<RouteConfig>,
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

#[derive(Debug, Clone, PartialEq)]
pub enum LedgerBackend {
    Memory,
    Redis {
        url: String,
    },
    /// Redis Cluster: seed node URLs (the rest is discovered).
    RedisCluster {
        urls: Vec<String>,
    },
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
    /// How long a debit stays in the history after it was made (never less than
    /// `window`). Default 90 days.
    pub history_retention: Duration,
    /// Refuse to start on a Redis that could lose debits (AOF off) or evict
    /// them (`maxmemory-policy` other than `noeviction`). Default false: warn.
    pub require_durable: bool,
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
    /// Injected on every forwarded request, in file order. Names are valid
    /// header names (lower-cased), values valid header values.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    /// Upper-case method token; `None` = any method.
    pub method: Option<String>,
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
                message: toml_error_line(text, &e),
            }])
        })?;
        let mut issues = Vec::new();
        let config = parse_root(root, base_dir, env, &mut issues);
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(fail(issues))
        }
    }

    /// The allowance of a configured plan.
    pub fn plan_allowance(&self, plan: &str) -> Option<u64> {
        self.plans.get(plan).copied()
    }
}

// ---------------------------------------------------------------------------
// The second pass: walk the raw table, collecting every issue.

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One table being read: takes keys by name and reports the rest as unknown.
struct Section<'a> {
    path: String,
    table: toml::Table,
    issues: &'a mut Vec<ConfigIssue>,
    env: Env<'a>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Section<'a> {
    fn issue(&mut self, key: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: join(&self.path, key),
            message: message.into(),
        });
    }

    fn type_name(value: &toml::Value) -> &'static str {
        value.type_str()
    }

    fn take(&mut self, key: &str) -> Option<toml::Value> {
        self.table.remove(key)
    }

    fn require<T>(&mut self, key: &str, value: Option<T>) -> Option<T> {
        if value.is_none() && !self.issues.iter().any(|i| i.key == join(&self.path, key)) {
            self.issue(key, "missing required key");
        }
        value
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            toml::Value::String(raw) => {
                let path = join(&self.path, key);
                match substitute(&raw, self.env) {
                    Ok(value) => Some(value),
                    Err(message) => {
                        self.issues.push(ConfigIssue { key: path, message });
                        None
                    }
                }
            }
            other => {
                let found = Self::type_name(&other);
                self.issue(key, format!("expected a string, found {found}"));
                None
            }
        }
    }

    fn u64(&mut self, key: &str) -> Option<u64> {
        match self.take(key)? {
            toml::Value::Integer(n) if n >= 0 => Some(n as u64),
            toml::Value::Integer(_) => {
                self.issue(key, "expected a non-negative integer, found a negative one");
                None
            }
            other => {
                let found = Self::type_name(&other);
                self.issue(
                    key,
                    format!("expected a non-negative integer, found {found}"),
                );
                None
            }
        }
    }

    /// A non-negative integer or float.
    fn number(&mut self, key: &str) -> Option<f64> {
        match self.take(key)? {
            toml::Value::Integer(n) if n >= 0 => Some(n as f64),
            toml::Value::Float(f) if f.is_finite() && f >= 0.0 => Some(f),
            other => {
                let found = Self::type_name(&other);
                self.issue(
                    key,
                    format!("expected a non-negative number, found {found}"),
                );
                None
            }
        }
    }

    fn bool(&mut self, key: &str) -> Option<bool> {
        match self.take(key)? {
            toml::Value::Boolean(b) => Some(b),
            other => {
                let found = Self::type_name(&other);
                self.issue(key, format!("expected true or false, found {found}"));
                None
            }
        }
    }

    fn duration(&mut self, key: &str) -> Option<Duration> {
        let text = self.string(key)?;
        match humantime::parse_duration(&text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.issue(key, "must be greater than zero");
                None
            }
            Err(e) => {
                self.issue(
                    key,
                    format!(
                        "invalid duration `{text}` ({e}); use e.g. \"30d\", \"10s\", \"250ms\""
                    ),
                );
                None
            }
        }
    }

    fn socket_addr(&mut self, key: &str) -> Option<SocketAddr> {
        let text = self.string(key)?;
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.issue(
                    key,
                    format!("invalid socket address `{text}`; use e.g. \"0.0.0.0:8080\""),
                );
                None
            }
        }
    }

    /// A nested table as its own section (`None` when absent or not a table).
    fn table(&mut self, key: &str) -> Option<Section<'_>> {
        let value = self.take(key)?;
        let path = join(&self.path, key);
        match value {
            toml::Value::Table(table) => Some(Section {
                path,
                table,
                issues: self.issues,
                env: self.env,
            }),
            other => {
                let found = Self::type_name(&other);
                self.issues.push(ConfigIssue {
                    key: path,
                    message: format!("expected a table, found {found}"),
                });
                None
            }
        }
    }

    /// Reports every key nobody asked for.
    fn finish(self) {
        for key in self.table.keys() {
            self.issues.push(ConfigIssue {
                key: join(&self.path, key),
                message: "unknown key".to_owned(),
            });
        }
    }
}

/// A TOML syntax error as one line: where, then what.
fn toml_error_line(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("invalid TOML at line {line}, column {column}: {message}")
        }
        None => format!("invalid TOML: {message}"),
    }
}

/// Replaces `${NAME}` with the environment's value.
fn substitute(raw: &str, env: Env<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` in value".to_owned())?;
        let name = &after[..end];
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "invalid environment variable name `{name}` in `${{…}}`"
            ));
        }
        let value = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
const DAY: u64 = 86_400;

fn parse_root(
    table: toml::Table,
    base_dir: &Path,
    env: Env<'_>,
    issues: &mut Vec<ConfigIssue>,
) -> Config {
    let mut root = Section {
        path: String::new(),
        table,
        issues,
        env,
    };
    let server = parse_server(root.table("server"), base_dir);
    let admin = parse_admin(root.table("admin"));
    let ledger = parse_ledger(root.table("ledger"));
    let plans = parse_plans(root.table("plans"));
    let upstreams = parse_upstreams(root.table("upstreams"));
    let routes = parse_routes(&mut root, &upstreams);
    root.finish();
    Config {
        source: None,
        server,
        admin,
        ledger,
        plans,
        upstreams,
        routes,
    }
}

fn parse_server(section: Option<Section<'_>>, base_dir: &Path) -> ServerConfig {
    let mut server = ServerConfig {
        listen: DEFAULT_LISTEN.parse().expect("valid default"),
        tls: None,
        max_body_bytes: 10 * 1024 * 1024,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        workers: std::thread::available_parallelism().map_or(1, usize::from),
        drain_timeout: Duration::from_secs(30),
        body_read_timeout: Duration::from_secs(60),
        max_headers: 100,
        max_header_bytes: 64 * 1024,
        max_connections: 10_000,
    };
    let Some(mut s) = section else {
        return server;
    };
    if let Some(listen) = s.socket_addr("listen") {
        server.listen = listen;
    }
    if let Some(mut tls) = s.table("tls") {
        let cert = tls.string("cert");
        let cert = tls.require("cert", cert);
        let key = tls.string("key");
        let key = tls.require("key", key);
        tls.finish();
        if let (Some(cert), Some(key)) = (cert, key) {
            server.tls = Some(TlsConfig {
                cert: base_dir.join(cert),
                key: base_dir.join(key),
            });
        }
    }
    match s.u64("max_body_bytes") {
        Some(0) => s.issue("max_body_bytes", "must be greater than zero"),
        Some(n) => server.max_body_bytes = n,
        None => {}
    }
    if let Some(d) = s.duration("header_read_timeout") {
        server.header_read_timeout = d;
    }
    if let Some(d) = s.duration("idle_timeout") {
        server.idle_timeout = d;
    }
    match s.u64("workers") {
        Some(n @ 1..=1024) => server.workers = n as usize,
        Some(_) => s.issue("workers", "must be between 1 and 1024"),
        None => {}
    }
    if let Some(d) = s.duration("drain_timeout") {
        server.drain_timeout = d;
    }
    if let Some(d) = s.duration("body_read_timeout") {
        server.body_read_timeout = d;
    }
    match s.u64("max_headers") {
        Some(n @ 1..=10_000) => server.max_headers = n as usize,
        Some(_) => s.issue("max_headers", "must be between 1 and 10000"),
        None => {}
    }
    match s.u64("max_header_bytes") {
        Some(n @ 8192..=16_777_216) => server.max_header_bytes = n as usize,
        Some(_) => s.issue("max_header_bytes", "must be between 8192 and 16777216"),
        None => {}
    }
    match s.u64("max_connections") {
        Some(0) => s.issue("max_connections", "must be at least 1"),
        Some(n) => server.max_connections = n as usize,
        None => {}
    }
    s.finish();
    server
}

fn parse_admin(section: Option<Section<'_>>) -> AdminConfig {
    let mut admin = AdminConfig {
        listen: DEFAULT_ADMIN_LISTEN.parse().expect("valid default"),
        token: None,
    };
    let Some(mut s) = section else {
        return admin;
    };
    if let Some(listen) = s.socket_addr("listen") {
        admin.listen = listen;
    }
    admin.token = s.string("token").filter(|t| !t.is_empty());
    s.finish();
    admin
}

fn parse_ledger(section: Option<Section<'_>>) -> LedgerConfig {
    let mut ledger = LedgerConfig {
        backend: LedgerBackend::Memory,
        window: Duration::from_secs(30 * DAY),
        timeout: Duration::from_millis(250),
        on_unavailable: OnUnavailable::Reject,
        history_retention: Duration::from_secs(90 * DAY),
        require_durable: false,
    };
    let Some(mut s) = section else {
        return ledger;
    };
    let backend = s.string("backend");
    let redis_url = s.string("redis_url");
    let cluster = match s.take("cluster") {
        None => None,
        Some(toml::Value::Array(items)) => {
            let mut urls = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    toml::Value::String(raw) => match substitute(&raw, s.env) {
                        Ok(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                            urls.push(url)
                        }
                        Ok(_) => s.issue(
                            &format!("cluster[{i}]"),
                            "must start with redis:// or rediss://",
                        ),
                        Err(message) => s.issue(&format!("cluster[{i}]"), message),
                    },
                    _ => s.issue(&format!("cluster[{i}]"), "expected a redis:// URL string"),
                }
            }
            if urls.is_empty() {
                s.issue("cluster", "needs at least one node URL");
            }
            Some(urls)
        }
        Some(_) => {
            s.issue("cluster", "expected an array of redis:// URLs");
            None
        }
    };
    if let Some(url) = &redis_url {
        if url.starts_with("rediss://") {
            s.issue("redis_url", "TLS to Redis (rediss://) is not built into this version; use redis:// over a private network or a TLS tunnel");
        } else if !url.starts_with("redis://") {
            s.issue("redis_url", "must start with redis://");
        }
    }
    match (backend.as_deref(), redis_url, cluster) {
        (_, Some(_), Some(_)) => s.issue(
            "cluster",
            "give either redis_url (one Redis) or cluster (Redis Cluster), not both",
        ),
        (None | Some("redis"), None, Some(urls)) => {
            if !urls.is_empty() {
                ledger.backend = LedgerBackend::RedisCluster { urls };
            }
        }
        (None | Some("redis"), Some(url), None) => ledger.backend = LedgerBackend::Redis { url },
        (None, None, None) => {}
        (Some("redis"), None, None) => s.issue(
            "redis_url",
            "missing: required when backend = \"redis\" (or give cluster)",
        ),
        (Some("memory"), None, None) => {}
        (Some("memory"), _, _) => s.issue(
            "backend",
            "is \"memory\" but redis_url or cluster is set; remove one of them",
        ),
        (Some(other), _, _) => s.issue(
            "backend",
            format!("unknown backend `{other}`; use \"redis\" or \"memory\""),
        ),
    }
    if let Some(d) = s.duration("window") {
        ledger.window = d;
    }
    if let Some(d) = s.duration("timeout") {
        ledger.timeout = d;
    }
    match s.string("on_unavailable").as_deref() {
        None => {}
        Some("reject") => ledger.on_unavailable = OnUnavailable::Reject,
        Some("allow") => ledger.on_unavailable = OnUnavailable::Allow,
        Some(other) => s.issue(
            "on_unavailable",
            format!("unknown value `{other}`; use \"reject\" or \"allow\""),
        ),
    }
    if let Some(d) = s.duration("history_retention") {
        ledger.history_retention = d;
    }
    ledger.history_retention = ledger.history_retention.max(ledger.window);
    if let Some(flag) = s.bool("require_durable") {
        ledger.require_durable = flag;
    }
    s.finish();
    ledger
}

fn parse_plans(section: Option<Section<'_>>) -> BTreeMap<String, u64> {
    let mut plans = BTreeMap::new();
    let Some(mut s) = section else {
        return plans;
    };
    let names: Vec<String> = s.table.keys().cloned().collect();
    for name in names {
        if !is_name(&name) {
            s.issue(&name, "plan names are 1-64 characters of A-Z a-z 0-9 . _ -");
        }
        let Some(mut plan) = s.table(&name) else {
            continue;
        };
        let allowance = plan.u64("monthly_allowance");
        let allowance = plan.require("monthly_allowance", allowance);
        plan.finish();
        if let Some(allowance) = allowance {
            plans.insert(name, allowance);
        }
    }
    s.finish();
    plans
}

/// Headers an upstream config may not inject: they are the connection's own.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

fn parse_upstreams(section: Option<Section<'_>>) -> BTreeMap<String, UpstreamConfig> {
    let mut upstreams = BTreeMap::new();
    let Some(mut s) = section else {
        return upstreams;
    };
    let names: Vec<String> = s.table.keys().cloned().collect();
    for name in names {
        if !is_name(&name) {
            s.issue(
                &name,
                "upstream names are 1-64 characters of A-Z a-z 0-9 . _ -",
            );
        }
        let Some(mut u) = s.table(&name) else {
            continue;
        };
        let url = u.string("url");
        let url = u
            .require("url", url)
            .and_then(|url| match parse_upstream_url(&url) {
                Ok(parts) => Some(parts),
                Err(message) => {
                    u.issue("url", message);
                    None
                }
            });
        let timeout = u.duration("timeout").unwrap_or(Duration::from_secs(60));
        let connect_timeout = u
            .duration("connect_timeout")
            .unwrap_or(Duration::from_secs(5))
            .min(timeout);
        let mut headers = Vec::new();
        if let Some(mut h) = u.table("headers") {
            let names: Vec<String> = h.table.keys().cloned().collect();
            for header in names {
                let Some(value) = h.string(&header) else {
                    continue;
                };
                let lower = header.to_ascii_lowercase();
                if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
                    h.issue(&header, "not a valid header name");
                } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                    h.issue(
                        &header,
                        "this header is managed by the gateway and cannot be injected",
                    );
                } else if http::HeaderValue::from_str(&value).is_err() {
                    // The value may hold a secret: never echo it.
                    h.issue(&header, "not a valid header value");
                } else {
                    headers.push((lower, value));
                }
            }
            h.finish();
        }
        u.finish();
        if let Some((scheme, authority, base_path)) = url {
            upstreams.insert(
                name,
                UpstreamConfig {
                    scheme,
                    authority,
                    base_path,
                    timeout,
                    connect_timeout,
                    headers,
                },
            );
        }
    }
    s.finish();
    upstreams
}

fn parse_upstream_url(url: &str) -> Result<(UpstreamScheme, String, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL `{url}`: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => UpstreamScheme::Http,
        Some("https") => UpstreamScheme::Https,
        _ => return Err(format!("`{url}` must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{url}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err("user info (`user@`) is not allowed in upstream URLs; use headers".to_owned());
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!("`{url}` must not have a query or fragment"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok((scheme, authority.as_str().to_owned(), base_path))
}

fn parse_routes(
    root: &mut Section<'_>,
    upstreams: &BTreeMap<String, UpstreamConfig>,
) -> Vec<RouteConfig> {
    let mut routes: Vec<RouteConfig> = Vec::new();
    let Some(value) = root.take("routes") else {
        return routes;
    };
    let toml::Value::Array(items) = value else {
        root.issue("routes", "expected an array of tables ([[routes]])");
        return routes;
    };
    for (index, item) in items.into_iter().enumerate() {
        let path = format!("routes[{index}]");
        let toml::Value::Table(table) = item else {
            root.issues.push(ConfigIssue {
                key: path,
                message: "expected a table".to_owned(),
            });
            continue;
        };
        let mut r = Section {
            path,
            table,
            issues: root.issues,
            env: root.env,
        };
        let units = r.table("units").and_then(parse_units);
        let settle = r.table("settle").and_then(parse_settle);
        let name = r.string("name");
        let name = r.require("name", name);
        if let Some(name) = &name {
            if !is_name(name) {
                r.issue(
                    "name",
                    "route names are 1-64 characters of A-Z a-z 0-9 . _ -",
                );
            } else if routes.iter().any(|route| &route.name == name) {
                r.issue("name", format!("duplicate route name `{name}`"));
            }
        }
        let method = r.string("method").and_then(|m| {
            let upper = m.to_ascii_uppercase();
            match http::Method::from_bytes(upper.as_bytes()) {
                Ok(_) if !upper.is_empty() => Some(upper),
                _ => {
                    r.issue("method", format!("`{m}` is not an HTTP method"));
                    None
                }
            }
        });
        let pattern = r.string("path");
        let pattern = r
            .require("path", pattern)
            .and_then(|p| match parse_pattern(&p) {
                Ok(pattern) => Some(pattern),
                Err(message) => {
                    r.issue("path", message);
                    None
                }
            });
        let upstream = r.string("upstream");
        let upstream = r.require("upstream", upstream);
        if let Some(upstream) = &upstream {
            if !upstreams.contains_key(upstream) {
                let defined: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                r.issue(
                    "upstream",
                    format!(
                        "unknown upstream `{upstream}`; defined: {}",
                        defined.join(", ")
                    ),
                );
            }
        }
        let cost = r.u64("cost");
        let cost = r.require("cost", cost);
        let refund_on_failure = r.bool("refund_on_failure").unwrap_or(true);
        if let (Some(pattern), true) = (&pattern, name.is_some()) {
            if routes
                .iter()
                .any(|route| &route.path == pattern && route.method == method)
            {
                r.issue("path", "another route already has this method and path");
            }
        }
        r.finish();
        if let (Some(name), Some(path), Some(upstream), Some(cost)) =
            (name, pattern, upstream, cost)
        {
            routes.push(RouteConfig {
                name,
                method,
                path,
                upstream,
                cost,
                refund_on_failure,
                units,
                settle,
            });
        }
    }
    routes
}

fn json_pointer(s: &mut Section<'_>, key: &str) -> Option<String> {
    let pointer = s.string(key)?;
    if pointer.is_empty() || pointer.starts_with('/') {
        Some(pointer)
    } else {
        s.issue(
            key,
            format!("`{pointer}` is not a JSON pointer (it must start with '/')"),
        );
        None
    }
}

fn per(s: &mut Section<'_>) -> u64 {
    match s.u64("per") {
        Some(0) => {
            s.issue("per", "must be at least 1");
            1
        }
        Some(per) => per,
        None => 1,
    }
}

fn parse_units(mut s: Section<'_>) -> Option<UnitsConfig> {
    let pointer = json_pointer(&mut s, "json");
    let pointer = s.require("json", pointer);
    let default = s.number("default");
    let max = s.number("max");
    let per = per(&mut s);
    if let (Some(default), Some(max)) = (default, max) {
        if default > max {
            s.issue("default", "is larger than `max`");
        }
    }
    s.finish();
    Some(UnitsConfig {
        pointer: pointer?,
        default,
        max,
        per,
    })
}

fn parse_settle(mut s: Section<'_>) -> Option<SettleConfig> {
    let json = json_pointer(&mut s, "json");
    let header = s.string("header");
    let source = match (json, header) {
        (Some(pointer), None) => Some(SettleSource::Json(pointer)),
        (None, Some(name)) => {
            let lower = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(lower.as_bytes()).is_ok() {
                Some(SettleSource::Header(lower))
            } else {
                s.issue("header", "not a valid header name");
                None
            }
        }
        (Some(_), Some(_)) => {
            s.issue("json", "give either `json` or `header`, not both");
            None
        }
        (None, None) => {
            s.issue("json", "missing: give `json` (a JSON pointer) or `header`");
            None
        }
    };
    let per = per(&mut s);
    let max_credits = s.u64("max");
    s.finish();
    Some(SettleConfig {
        source: source?,
        per,
        max_credits,
    })
}

fn parse_pattern(path: &str) -> Result<PathPattern, String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".to_owned());
    }
    let (body, prefix) = match path.strip_suffix("/*") {
        Some(body) => (body, true),
        None => (path, false),
    };
    if body.contains(['?', '#', '%', '\\', '*']) {
        return Err("may not contain ?, #, %, \\ or * (except a trailing /*)".to_owned());
    }
    // Routes match normalised paths, so a pattern must be normalised too.
    let inner = body.trim_start_matches('/');
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if !inner.is_empty() {
        for segment in inner.split('/') {
            if segment.is_empty() {
                return Err("may not contain empty segments (//)".to_owned());
            }
            if segment == "." || segment == ".." {
                return Err("may not contain . or .. segments".to_owned());
            }
        }
    }
    if body.starts_with("//") {
        return Err("may not contain empty segments (//)".to_owned());
    }
    Ok(if prefix {
        PathPattern::Prefix(format!("{}/", body.trim_end_matches('/')))
    } else {
        PathPattern::Exact(path.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "ADMIN" => Some("admin-secret".into()),
            "IMAGES_KEY" => Some("vendor-secret".into()),
            "REDIS" => Some("redis://127.0.0.1:6379/0".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", Path::new("/etc/cg"), &env)
    }

    fn keys(error: &ConfigError) -> Vec<&str> {
        error.issues.iter().map(|i| i.key.as_str()).collect()
    }

    #[test]
    fn an_empty_file_is_a_memory_gateway_with_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(config.server.max_body_bytes, 10_485_760);
        assert_eq!(config.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.ledger.backend, LedgerBackend::Memory);
        assert_eq!(config.ledger.window, Duration::from_secs(30 * DAY));
        assert_eq!(config.ledger.timeout, Duration::from_millis(250));
        assert_eq!(config.ledger.on_unavailable, OnUnavailable::Reject);
        assert!(config.admin.token.is_none());
        assert!(config.routes.is_empty());
    }

    #[test]
    fn a_full_file_parses_with_variables_resolved() {
        let config = parse(
            r#"
[server]
listen = "127.0.0.1:8081"
tls = { cert = "certs/server.pem", key = "certs/server.key" }
max_body_bytes = 2048
header_read_timeout = "5s"
[admin]
token = "${ADMIN}"
[ledger]
redis_url = "${REDIS}"
window = "3s"
on_unavailable = "allow"
[plans.free]
monthly_allowance = 100
[upstreams.images]
url = "https://images.vendor.example/api/"
timeout = "120s"
headers = { Authorization = "Bearer ${IMAGES_KEY}" }
[[routes]]
name = "image-generate"
method = "post"
path = "/v1/images/generate"
upstream = "images"
cost = 10
[[routes]]
name = "agents"
path = "/v1/agents/*"
upstream = "images"
cost = 1
refund_on_failure = false
"#,
        )
        .unwrap();
        assert_eq!(config.admin.token.as_deref(), Some("admin-secret"));
        assert_eq!(
            config.ledger.backend,
            LedgerBackend::Redis {
                url: "redis://127.0.0.1:6379/0".into()
            }
        );
        assert_eq!(config.ledger.window, Duration::from_secs(3));
        assert_eq!(
            config.ledger.history_retention,
            Duration::from_secs(90 * DAY)
        );
        let tls = config.server.tls.unwrap();
        assert_eq!(tls.cert, Path::new("/etc/cg/certs/server.pem"));
        let images = &config.upstreams["images"];
        assert_eq!(images.scheme, UpstreamScheme::Https);
        assert_eq!(images.authority, "images.vendor.example");
        assert_eq!(images.base_path, "/api");
        assert_eq!(
            images.headers,
            vec![("authorization".into(), "Bearer vendor-secret".into())]
        );
        assert_eq!(config.routes[0].method.as_deref(), Some("POST"));
        assert_eq!(
            config.routes[1].path,
            PathPattern::Prefix("/v1/agents/".into())
        );
        assert!(!config.routes[1].refund_on_failure);
        assert!(config.routes[0].refund_on_failure);
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_key_path() {
        let error = parse(
            r#"
surprise = 1
[server]
lisen = "0.0.0.0:1"
header_read_timeout = "soon"
[ledger]
window = 30
[upstreams.images]
url = "https://x.example"
foo = "bar"
headers = { Authorization = "Bearer ${NOPE}" }
[[routes]]
name = "a"
path = "/a"
upstream = "images"
cost = 1
[[routes]]
name = "a"
path = "/b"
upstream = "videos"
cots = 2
"#,
        )
        .unwrap_err();
        let keys = keys(&error);
        for expected in [
            "surprise",
            "server.lisen",
            "server.header_read_timeout",
            "ledger.window",
            "upstreams.images.foo",
            "upstreams.images.headers.Authorization",
            "routes[1].name",
            "routes[1].upstream",
            "routes[1].cots",
            "routes[1].cost",
        ] {
            assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
        }
        let text = error.to_string();
        assert!(
            text.contains("test.toml: routes[1].cots: unknown key"),
            "{text}"
        );
        assert!(
            text.contains("environment variable NOPE is not set"),
            "{text}"
        );
        assert!(
            text.contains("unknown upstream `videos`; defined: images"),
            "{text}"
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let error = parse("[server\nlisten = 1").unwrap_err();
        assert_eq!(error.issues.len(), 1);
        assert!(error.to_string().starts_with("test.toml: invalid TOML"));
    }

    #[test]
    fn per_unit_pricing_and_settlement_parse_and_validate() {
        let config = parse(
            r#"
[upstreams.a]
url = "http://127.0.0.1:1"
[[routes]]
name = "img"
path = "/img"
upstream = "a"
cost = 4
units = { json = "/n", default = 1, max = 10 }
[[routes]]
name = "chat"
path = "/chat"
upstream = "a"
cost = 1
units = { json = "/max_tokens", default = 1000, max = 32000, per = 1000 }
settle = { header = "X-Usage-Tokens", per = 1000, max = 64 }
"#,
        )
        .unwrap();
        let units = config.routes[0].units.as_ref().unwrap();
        assert_eq!(
            (units.default, units.max, units.per),
            (Some(1.0), Some(10.0), 1)
        );
        let settle = config.routes[1].settle.as_ref().unwrap();
        assert_eq!(settle.source, SettleSource::Header("x-usage-tokens".into()));
        assert_eq!((settle.per, settle.max_credits), (1000, Some(64)));

        let error = parse(
            r#"
[upstreams.a]
url = "http://127.0.0.1:1"
[[routes]]
name = "bad"
path = "/bad"
upstream = "a"
cost = 1
units = { json = "n", per = 0, default = 5, max = 2, extra = 1 }
settle = { json = "/u", header = "x-u" }
"#,
        )
        .unwrap_err();
        assert_eq!(
            keys(&error),
            vec![
                "routes[0].units.json",
                "routes[0].units.per",
                "routes[0].units.default",
                "routes[0].units.extra",
                "routes[0].settle.json",
            ]
        );
    }

    #[test]
    fn backend_rules() {
        assert!(parse("[ledger]\nbackend = \"redis\"").is_err());
        assert!(parse("[ledger]\nbackend = \"memory\"\nredis_url = \"redis://x\"").is_err());
        assert!(parse("[ledger]\nredis_url = \"http://x\"").is_err());
        assert_eq!(
            parse("[ledger]\ncluster = [\"redis://a:1\", \"redis://b:2\"]")
                .unwrap()
                .ledger
                .backend,
            LedgerBackend::RedisCluster {
                urls: vec!["redis://a:1".into(), "redis://b:2".into()]
            }
        );
        assert!(
            parse("[ledger]\ncluster = [\"redis://a:1\"]\nredis_url = \"redis://b:2\"").is_err()
        );
        assert!(parse("[ledger]\ncluster = []").is_err());
        assert!(parse("[ledger]\ncluster = [\"http://a:1\"]").is_err());
        assert_eq!(
            parse("[ledger]\nbackend = \"memory\"")
                .unwrap()
                .ledger
                .backend,
            LedgerBackend::Memory
        );
    }

    #[test]
    fn route_paths_are_validated() {
        assert_eq!(
            parse_pattern("/v1/x"),
            Ok(PathPattern::Exact("/v1/x".into()))
        );
        assert_eq!(
            parse_pattern("/v1/*"),
            Ok(PathPattern::Prefix("/v1/".into()))
        );
        assert_eq!(parse_pattern("/*"), Ok(PathPattern::Prefix("/".into())));
        for bad in [
            "v1", "/a/../b", "/a//b", "/a/*/b", "/a%2f", "/a?b", "/a\\b", "/a/./b",
        ] {
            assert!(parse_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_headers_and_user_info_are_rejected() {
        let error =
            parse("[upstreams.a]\nurl = \"https://user:pw@x.example\"\nheaders = { Host = \"y\" }")
                .unwrap_err();
        assert_eq!(
            keys(&error),
            vec!["upstreams.a.url", "upstreams.a.headers.Host"]
        );
        assert!(!error.to_string().contains("pw@"), "{error}");
    }

    #[test]
    fn shipped_configs_are_valid() {
        let all = |name: &str| Some(format!("value-of-{name}"));
        let redis_env = |name: &str| match name {
            "CREDITGATE_REDIS_URL" => Some("redis://127.0.0.1:6379/0".to_owned()),
            other => all(other),
        };
        Config::parse(
            include_str!("../config/creditgate.toml"),
            "creditgate.toml",
            Path::new("."),
            &|_| None,
        )
        .unwrap();
        Config::parse(
            include_str!("../config/example-redis.toml"),
            "example-redis.toml",
            Path::new("."),
            &redis_env,
        )
        .unwrap();
    }
}
