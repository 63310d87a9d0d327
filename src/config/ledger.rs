//! The `[ledger]` section: which backend, how to reach Redis (one server,
//! a Cluster or Sentinel; `redis://` or `rediss://`; `tls_ca`), and the
//! ledger's own settings, with the defaults of docs/configuration.md.
//!
//! Redis URLs are read the way redis-rs reads them, so a URL the client
//! would refuse is refused here, naming its key, instead of at start-up.
//! Messages never repeat a URL: it may hold a password.

use std::path::Path;
use std::time::Duration;

use redis::IntoConnectionInfo;

use super::env::substitute;
use super::reader::Section;
use super::{LedgerBackend, LedgerConfig, OnUnavailable, SentinelConfig};

const DAY: u64 = 86_400;

pub(super) fn read_ledger(section: Option<Section<'_>>, base_dir: &Path) -> LedgerConfig {
    let mut ledger = LedgerConfig {
        backend: LedgerBackend::Memory,
        window: Duration::from_secs(30 * DAY),
        timeout: Duration::from_millis(250),
        on_unavailable: OnUnavailable::Reject,
        history_retention: Duration::from_secs(90 * DAY),
        require_durable: false,
        tls_ca: None,
    };
    let Some(mut s) = section else {
        return ledger;
    };
    let backend = s.string("backend");
    let given: Vec<&str> = ["redis_url", "cluster", "sentinel"]
        .into_iter()
        .filter(|key| s.table.contains_key(*key))
        .collect();
    let redis_url = s.string("redis_url").filter(|url| match parse_url(url) {
        Ok(_) => true,
        Err(message) => {
            s.issue("redis_url", message);
            false
        }
    });
    let cluster = read_cluster(&mut s);
    let sentinel = s.table("sentinel").and_then(read_sentinel);
    let target = match (redis_url, cluster, sentinel) {
        (Some(url), None, None) => Some(LedgerBackend::Redis { url }),
        (None, Some(urls), None) => Some(LedgerBackend::RedisCluster { urls }),
        (None, None, Some(sentinel)) => Some(LedgerBackend::RedisSentinel(sentinel)),
        _ => None,
    };
    match backend.as_deref() {
        _ if given.len() > 1 => s.issue(
            given[1],
            format!(
                "set only one of redis_url (one Redis), cluster (Redis Cluster) and sentinel \
                 (Redis Sentinel); this file sets {}",
                given.join(" and ")
            ),
        ),
        None | Some("redis") => match target {
            Some(target) => ledger.backend = target,
            None if given.is_empty() && backend.is_some() => s.issue(
                "redis_url",
                "missing: required when backend = \"redis\" (or give cluster or sentinel)",
            ),
            // Nothing given (the memory default), or already reported.
            None => {}
        },
        Some("memory") if given.is_empty() => {}
        Some("memory") => s.issue(
            "backend",
            format!("is \"memory\" but {} is set; remove one of them", given[0]),
        ),
        Some(other) => s.issue(
            "backend",
            format!("unknown backend `{other}`; use \"redis\" or \"memory\""),
        ),
    }
    if let Some(ca) = s.string("tls_ca") {
        if ca.is_empty() {
            s.issue("tls_ca", "is empty; give the path of a PEM file");
        } else if uses_tls(&ledger.backend)
            // A Redis target that was given but is wrong is reported already.
            || (matches!(ledger.backend, LedgerBackend::Memory) && !given.is_empty())
        {
            ledger.tls_ca = Some(base_dir.join(ca));
        } else {
            s.issue(
                "tls_ca",
                "is set but no Redis connection uses TLS: write rediss:// URLs \
                 (with sentinel, also for the primary: sentinel.tls = true)",
            );
        }
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
    // Unset, the retention follows a window longer than its default; set,
    // it is taken as written (shorter than the window is an error, see
    // `validate.rs`).
    ledger.history_retention = s
        .duration("history_retention")
        .unwrap_or(ledger.history_retention.max(ledger.window));
    if let Some(flag) = s.bool("require_durable") {
        ledger.require_durable = flag;
    }
    s.finish();
    ledger
}

/// Whether any connection of this backend is TLS (so `tls_ca` means something).
fn uses_tls(backend: &LedgerBackend) -> bool {
    match backend {
        LedgerBackend::Memory => false,
        LedgerBackend::Redis { url } => is_tls(url),
        LedgerBackend::RedisCluster { urls } => urls.iter().any(|url| is_tls(url)),
        LedgerBackend::RedisSentinel(sentinel) => {
            sentinel.tls || sentinel.nodes.iter().any(|url| is_tls(url))
        }
    }
}

fn is_tls(url: &str) -> bool {
    url.starts_with("rediss://")
}

/// A `redis://` or `rediss://` URL, parsed as redis-rs will parse it.
fn parse_url(url: &str) -> Result<redis::ConnectionInfo, String> {
    if !url.starts_with("redis://") && !is_tls(url) {
        return Err("must start with redis:// or rediss:// (TLS)".to_owned());
    }
    if url.contains('#') {
        // redis-rs reads `#insecure` as "skip certificate checks".
        return Err(
            "must not have a fragment (`#…`): certificate checks cannot be turned off; \
             give a private CA in ledger.tls_ca instead"
                .to_owned(),
        );
    }
    url.into_connection_info()
        .map_err(|e| format!("is not a valid Redis URL ({e})"))
}

/// The credentials a URL carries, to compare URLs that must share them.
fn credentials(info: &redis::ConnectionInfo) -> (Option<String>, Option<String>) {
    let redis = info.redis_settings();
    (
        redis.username().map(str::to_owned),
        redis.password().map(str::to_owned),
    )
}

/// An array of Redis URLs (`cluster`, `sentinel.nodes`): each parsed, `${VAR}`
/// replaced; `None` when the key is absent or wrong (reported).
fn read_urls(s: &mut Section<'_>, key: &str) -> Option<Vec<(String, redis::ConnectionInfo)>> {
    let value = s.take(key)?;
    let toml::Value::Array(items) = value else {
        s.issue(key, "expected an array of redis:// or rediss:// URLs");
        return None;
    };
    let mut urls = Vec::new();
    let mut valid = true;
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{key}[{i}]");
        let toml::Value::String(raw) = item else {
            s.issue(&at, "expected a redis:// or rediss:// URL string");
            valid = false;
            continue;
        };
        match substitute(&raw, s.env).and_then(|url| parse_url(&url).map(|info| (url, info))) {
            Ok(parsed) => urls.push(parsed),
            Err(message) => {
                s.issue(&at, message);
                valid = false;
            }
        }
    }
    if urls.is_empty() && valid {
        s.issue(key, "needs at least one node URL");
        return None;
    }
    if !valid {
        return None;
    }
    // redis-rs uses one TLS mode and one set of credentials for all of them.
    let first = &urls[0].1;
    let tls = is_tls(&urls[0].0);
    if urls.iter().any(|(url, _)| is_tls(url) != tls) {
        s.issue(
            key,
            "mixes redis:// and rediss://; every node must use the same scheme",
        );
        return None;
    }
    if urls
        .iter()
        .any(|(_, info)| credentials(info) != credentials(first))
    {
        s.issue(
            key,
            "the nodes' URLs carry different user names or passwords; they must all be the same",
        );
        return None;
    }
    Some(urls)
}

fn read_cluster(s: &mut Section<'_>) -> Option<Vec<String>> {
    let urls = read_urls(s, "cluster")?;
    if urls.iter().any(|(_, info)| info.redis_settings().db() != 0) {
        s.issue(
            "cluster",
            "names a database other than 0; Redis Cluster has only database 0",
        );
        return None;
    }
    Some(urls.into_iter().map(|(url, _)| url).collect())
}

/// `sentinel = { master, nodes, tls, username, password, db }`; `None` when
/// something is wrong (already reported).
fn read_sentinel(mut s: Section<'_>) -> Option<SentinelConfig> {
    let master = s.string("master");
    let master = match s.require("master", master) {
        Some(name) if name.is_empty() || name.contains(char::is_whitespace) => {
            s.issue(
                "master",
                "must be the name the sentinels monitor the primary under",
            );
            None
        }
        name => name,
    };
    if !s.table.contains_key("nodes") {
        s.issue("nodes", "missing required key: the sentinels' URLs");
    }
    let nodes = read_urls(&mut s, "nodes").filter(|nodes| {
        let no_db = nodes
            .iter()
            .all(|(_, info)| info.redis_settings().db() == 0);
        if !no_db {
            s.issue(
                "nodes",
                "a sentinel has no databases: write the primary's database as sentinel.db",
            );
        }
        no_db
    });
    let tls = s.bool("tls");
    let username = s.string("username").filter(|u| !u.is_empty());
    let password = s.string("password").filter(|p| !p.is_empty());
    let db = match s.u64("db") {
        Some(db) if db <= i32::MAX as u64 => db as i64,
        Some(_) => {
            s.issue("db", "is not a database number");
            0
        }
        None => 0,
    };
    s.finish();
    let (master, nodes) = (master?, nodes?);
    let nodes_tls = is_tls(&nodes[0].0);
    Some(SentinelConfig {
        master,
        nodes: nodes.into_iter().map(|(url, _)| url).collect(),
        tls: tls.unwrap_or(nodes_tls),
        username,
        password,
        db,
    })
}

/// `scheme://user:***@host…`: a URL with its password hidden.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for LedgerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerBackend::Memory => f.write_str("Memory"),
            LedgerBackend::Redis { url } => f
                .debug_struct("Redis")
                .field("url", &redacted(url))
                .finish(),
            LedgerBackend::RedisCluster { urls } => f
                .debug_struct("RedisCluster")
                .field(
                    "urls",
                    &urls.iter().map(|url| redacted(url)).collect::<Vec<_>>(),
                )
                .finish(),
            LedgerBackend::RedisSentinel(sentinel) => {
                f.debug_tuple("RedisSentinel").field(sentinel).finish()
            }
        }
    }
}

impl std::fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("master", &self.master)
            .field(
                "nodes",
                &self
                    .nodes
                    .iter()
                    .map(|url| redacted(url))
                    .collect::<Vec<_>>(),
            )
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::{Config, ConfigError};

    const ONE_ROUTE: &str = r#"
[upstreams.minimal]
url = "http://127.0.0.1:1"
[[routes]]
name = "minimal"
path = "/minimal"
upstream = "minimal"
cost = 1
"#;

    fn env(name: &str) -> Option<String> {
        (name == "REDIS_PASSWORD").then(|| "s3cret".to_owned())
    }

    fn parse(ledger: &str) -> Result<Config, ConfigError> {
        let text = format!("[ledger]\n{ledger}\n{ONE_ROUTE}");
        Config::parse(&text, "test.toml", Path::new("/etc/cg"), &env)
    }

    fn issues(ledger: &str) -> Vec<(String, String)> {
        parse(ledger)
            .unwrap_err()
            .issues
            .into_iter()
            .map(|issue| (issue.key, issue.message))
            .collect()
    }

    fn keys(ledger: &str) -> Vec<String> {
        issues(ledger).into_iter().map(|(key, _)| key).collect()
    }

    #[test]
    fn rediss_with_acl_credentials_and_a_private_ca() {
        let config = parse(
            "redis_url = \"rediss://creditgate:${REDIS_PASSWORD}@redis.internal:6380/2\"\n\
             tls_ca = \"certs/redis-ca.pem\"",
        )
        .unwrap();
        assert_eq!(
            config.ledger.backend,
            LedgerBackend::Redis {
                url: "rediss://creditgate:s3cret@redis.internal:6380/2".into()
            }
        );
        // Relative to the config file, like server.tls.
        assert_eq!(
            config.ledger.tls_ca,
            Some(PathBuf::from("/etc/cg/certs/redis-ca.pem"))
        );
        let shown = format!("{:?}", config.ledger);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("rediss://creditgate:***@redis.internal:6380/2"));
    }

    #[test]
    fn a_ca_without_any_tls_connection_is_a_mistake() {
        let found = issues("redis_url = \"redis://h:6379\"\ntls_ca = \"ca.pem\"");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "ledger.tls_ca");
        assert!(found[0].1.contains("rediss://"), "{found:?}");
    }

    #[test]
    fn a_ca_with_the_memory_ledger_is_a_mistake_too() {
        let found = issues("tls_ca = \"ca.pem\"");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "ledger.tls_ca");
        // Not repeated when the URL is wrong: that one is the error.
        let found = issues("redis_url = \"rediss://h:x\"\ntls_ca = \"ca.pem\"");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "ledger.redis_url");
    }

    #[test]
    fn certificate_checks_cannot_be_turned_off() {
        let found = issues("redis_url = \"rediss://h:6380/#insecure\"");
        assert_eq!(found[0].0, "ledger.redis_url");
        assert!(found[0].1.contains("tls_ca"), "{found:?}");
    }

    #[test]
    fn urls_are_checked_as_the_client_reads_them_without_echoing_them() {
        for bad in [
            "http://h:1",
            "redis://:s3cret@h:notaport",
            "rediss://:s3cret@h:1/db",
        ] {
            let found = issues(&format!("redis_url = \"{bad}\""));
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert_eq!(found[0].0, "ledger.redis_url");
            assert!(!found[0].1.contains("s3cret"), "{found:?}");
        }
    }

    #[test]
    fn cluster_nodes_share_scheme_credentials_and_database_zero() {
        assert_eq!(
            parse("cluster = [\"rediss://u:p@a:1\", \"rediss://u:p@b:2\"]\ntls_ca = \"ca.pem\"")
                .unwrap()
                .ledger
                .backend,
            LedgerBackend::RedisCluster {
                urls: vec!["rediss://u:p@a:1".into(), "rediss://u:p@b:2".into()]
            }
        );
        for (cluster, says) in [
            ("[\"redis://a:1\", \"rediss://b:2\"]", "same scheme"),
            ("[\"redis://u:p@a:1\", \"redis://u:q@b:2\"]", "passwords"),
            ("[\"redis://a:1/3\"]", "database 0"),
            ("[\"redis://a:1\", 7]", "URL string"),
        ] {
            let found = issues(&format!("cluster = {cluster}"));
            assert_eq!(found.len(), 1, "{cluster}: {found:?}");
            assert!(found[0].0.starts_with("ledger.cluster"), "{found:?}");
            assert!(found[0].1.contains(says), "{cluster}: {found:?}");
        }
    }

    #[test]
    fn sentinel_with_every_key() {
        let config = parse(
            "sentinel = { master = \"ledger\", nodes = [\"rediss://:sentinel-pw@s1:26379\", \
             \"rediss://:sentinel-pw@s2:26379\"], username = \"creditgate\", \
             password = \"${REDIS_PASSWORD}\", db = 3 }\n\
             tls_ca = \"/etc/ssl/redis-ca.pem\"",
        )
        .unwrap();
        let LedgerBackend::RedisSentinel(sentinel) = &config.ledger.backend else {
            panic!("{:?}", config.ledger.backend);
        };
        assert_eq!(sentinel.master, "ledger");
        assert_eq!(sentinel.nodes.len(), 2);
        // TLS to the primary follows the sentinels' scheme unless set.
        assert!(sentinel.tls);
        assert_eq!(sentinel.username.as_deref(), Some("creditgate"));
        assert_eq!(sentinel.password.as_deref(), Some("s3cret"));
        assert_eq!(sentinel.db, 3);
        assert_eq!(
            config.ledger.tls_ca,
            Some(PathBuf::from("/etc/ssl/redis-ca.pem"))
        );
        let shown = format!("{:?}", config.ledger.backend);
        assert!(
            !shown.contains("s3cret") && !shown.contains("sentinel-pw"),
            "{shown}"
        );

        let plain = parse("sentinel = { master = \"m\", nodes = [\"redis://s1:26379\"] }").unwrap();
        let LedgerBackend::RedisSentinel(plain) = plain.ledger.backend else {
            panic!("sentinel");
        };
        assert!(!plain.tls);
        assert_eq!((plain.db, plain.username, plain.password), (0, None, None));
        // TLS to the primary only: tls_ca is used, so accepted.
        assert!(parse(
            "sentinel = { master = \"m\", nodes = [\"redis://s1:26379\"], tls = true }\n\
             tls_ca = \"ca.pem\""
        )
        .is_ok());
    }

    #[test]
    fn sentinel_mistakes_are_all_reported_with_their_keys() {
        let mut found = keys("sentinel = { nodes = [] , port = 1 }");
        found.sort();
        assert_eq!(
            found,
            [
                "ledger.sentinel.master",
                "ledger.sentinel.nodes",
                "ledger.sentinel.port"
            ]
        );
        let mut found = keys(
            "sentinel = { master = \"m\", nodes = [\"redis://s1:26379/2\"] }\n\
             redis_url = \"redis://h:1\"",
        );
        found.sort();
        assert_eq!(found, ["ledger.sentinel", "ledger.sentinel.nodes"]);
        assert_eq!(keys("sentinel = \"redis://s1\""), ["ledger.sentinel"]);
        assert_eq!(
            keys("backend = \"memory\"\nsentinel = { master = \"m\", nodes = [\"redis://s:1\"] }"),
            ["ledger.backend"]
        );
    }

    #[test]
    fn backend_redis_needs_a_target() {
        let found = issues("backend = \"redis\"");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "ledger.redis_url");
        assert!(found[0].1.contains("sentinel"), "{found:?}");
    }

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(redacted("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redacted("rediss://u:p@h:1/0"), "rediss://u:***@h:1/0");
        assert_eq!(redacted("redis://:p@h"), "redis://:***@h");
        assert_eq!(redacted("redis://u@h"), "redis://u@h");
        assert_eq!(redacted("redis://u:p:q@x@h/a@b"), "redis://u:***@h/a@b");
    }
}
