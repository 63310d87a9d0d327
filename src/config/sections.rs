//! The walk of the file's sections — `[server]`, `[admin]`, `[plans.*]`,
//! `[upstreams.*]` — into their typed form, with the defaults of
//! docs/configuration.md. `[ledger]` is read in `ledger.rs`, `[[routes]]` in
//! `routes.rs`; rules across sections are in `validate.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::env::Env;
use super::reader::{join, Section};
use super::routes::read_routes;
use super::{
    AdminConfig, Config, ConfigIssue, ServerConfig, TlsConfig, UpstreamConfig, UpstreamScheme,
};
use crate::ledger::{LimitTable, WindowLimit};

/// What the walk read, before the rules across sections.
pub(super) struct Draft {
    pub config: Config,
    /// `[[routes]]` tables in the file, read or not.
    pub declared_routes: usize,
}

pub(super) fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// Walks the whole file. Every problem found is pushed to `issues`; the
/// [`Draft`] holds whatever could be read.
pub(super) fn read_root(
    table: toml::Table,
    base_dir: &Path,
    env: Env<'_>,
    issues: &mut Vec<ConfigIssue>,
) -> Draft {
    let mut root = Section {
        path: String::new(),
        table,
        issues,
        env,
    };
    let server = read_server(root.table("server"), base_dir);
    let admin = read_admin(root.table("admin"));
    let ledger = super::ledger::read_ledger(root.table("ledger"), base_dir);
    let (plans, limits) = read_plans(root.table("plans"), ledger.window);
    let upstreams = read_upstreams(root.table("upstreams"));
    let (routes, declared_routes) = read_routes(&mut root, &upstreams);
    let alerts = super::alerts::read_alerts(root.table("alerts"));
    root.finish();
    Draft {
        config: Config {
            source: None,
            server,
            admin,
            ledger,
            plans,
            limits,
            upstreams,
            routes,
            alerts,
        },
        declared_routes,
    }
}

fn read_server(section: Option<Section<'_>>, base_dir: &Path) -> ServerConfig {
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

fn read_admin(section: Option<Section<'_>>) -> AdminConfig {
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

fn read_plans(
    section: Option<Section<'_>>,
    ledger_window: Duration,
) -> (BTreeMap<String, u64>, LimitTable) {
    let mut plans = BTreeMap::new();
    let mut limits = LimitTable::new();
    let Some(mut s) = section else {
        return (plans, limits);
    };
    let names: Vec<String> = s.table.keys().cloned().collect();
    for name in names {
        if !is_name(&name) {
            s.issue(&name, "plan names are 1-64 characters of A-Z a-z 0-9 . _ -");
        }
        let Some(mut plan) = s.table(&name) else {
            continue;
        };
        let allowance = plan.credits("monthly_allowance");
        let allowance = plan.require("monthly_allowance", allowance);
        let windows = read_limits(&mut plan, ledger_window);
        plan.finish();
        if !windows.is_empty() {
            limits.insert(name.clone(), windows);
        }
        if let Some(allowance) = allowance {
            plans.insert(name, allowance);
        }
    }
    s.finish();
    (plans, limits)
}

/// `limits = [{ window = "1d", credits = 1500 }, …]`: a plan's extra
/// windows. Each window is positive, whole milliseconds and unique within
/// the plan and shorter than `ledger.window` (read before the plans);
/// credits are within the ledger's bound.
fn read_limits(plan: &mut Section<'_>, ledger_window: Duration) -> Vec<WindowLimit> {
    let mut limits: Vec<WindowLimit> = Vec::new();
    let mut windows: Vec<u64> = Vec::new();
    let Some(value) = plan.take("limits") else {
        return limits;
    };
    let toml::Value::Array(items) = value else {
        let found = value.type_str();
        plan.issue(
            "limits",
            format!("expected an array of {{ window, credits }} tables, found {found}"),
        );
        return limits;
    };
    let path = join(&plan.path, "limits");
    for (index, item) in items.into_iter().enumerate() {
        let toml::Value::Table(table) = item else {
            plan.issues.push(ConfigIssue {
                key: format!("{path}[{index}]"),
                message: format!(
                    "expected a {{ window, credits }} table, found {}",
                    item.type_str()
                ),
            });
            continue;
        };
        let mut entry = Section {
            path: format!("{path}[{index}]"),
            table,
            issues: plan.issues,
            env: plan.env,
        };
        let name = match entry.table.get("window") {
            Some(toml::Value::String(text)) => Some(text.clone()),
            _ => None,
        };
        let window = entry.duration("window");
        let window = entry.require("window", window);
        let credits = entry.credits("credits");
        let credits = entry.require("credits", credits);
        if credits == Some(0) {
            entry.issue("credits", "must be greater than zero");
        }
        let mut window_ms = None;
        if let Some(window) = window {
            let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            if window.as_nanos() % 1_000_000 != 0 {
                entry.issue("window", "must be whole milliseconds");
            } else if windows.contains(&ms) {
                entry.issue("window", "duplicates an earlier window of this plan");
            } else if window >= ledger_window {
                entry.issue(
                    "window",
                    format!(
                        "is {} but ledger.window is {}: an extra window must be shorter than the ledger's",
                        humantime::format_duration(window),
                        humantime::format_duration(ledger_window)
                    ),
                );
            } else {
                window_ms = Some(ms);
            }
            windows.push(ms);
        }
        entry.finish();
        if let (Some(name), Some(window_ms), Some(credits @ 1..)) = (name, window_ms, credits) {
            limits.push(WindowLimit {
                name,
                window_ms,
                credits,
            });
        }
    }
    limits
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

fn read_upstreams(section: Option<Section<'_>>) -> BTreeMap<String, UpstreamConfig> {
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
                } else {
                    match (
                        http::HeaderName::from_bytes(lower.as_bytes()),
                        http::HeaderValue::from_str(&value),
                    ) {
                        (Ok(name), Ok(mut value)) => {
                            // Vendor credentials: kept out of debug output.
                            value.set_sensitive(true);
                            headers.push((name, value));
                        }
                        // The value may hold a secret: never echo it.
                        _ => h.issue(&header, "not a valid header value"),
                    }
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
