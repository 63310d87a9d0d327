//! The walk end to end: defaults, every section, every error at once.

use super::*;

const DAY: u64 = 86_400;

/// One upstream and one route, for files whose subject is elsewhere (a file
/// without routes is refused).
const ONE_ROUTE: &str = r#"
[upstreams.minimal]
url = "http://127.0.0.1:1"
[[routes]]
name = "minimal"
path = "/minimal"
upstream = "minimal"
cost = 1
"#;

fn with_route(text: &str) -> String {
    format!("{text}\n{ONE_ROUTE}")
}

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
fn an_empty_file_is_refused_for_having_no_routes() {
    let error = parse("").unwrap_err();
    assert_eq!(keys(&error), ["routes"]);
    assert!(error.to_string().contains("no routes"), "{error}");
}

#[test]
fn a_file_with_one_route_gets_every_default() {
    let config = parse(ONE_ROUTE).unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(config.server.max_body_bytes, 10_485_760);
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.ledger.backend, LedgerBackend::Memory);
    assert_eq!(config.ledger.window, Duration::from_secs(30 * DAY));
    assert_eq!(config.ledger.timeout, Duration::from_millis(250));
    assert_eq!(config.ledger.on_unavailable, OnUnavailable::Reject);
    assert!(config.admin.token.is_none());
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.routes[0].method, None);
    assert_eq!(config.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(
        config.ledger.history_retention,
        Duration::from_secs(90 * DAY)
    );
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
    let (name, value) = &images.headers[0];
    assert_eq!(images.headers.len(), 1);
    assert_eq!(name, "authorization");
    assert_eq!(value, "Bearer vendor-secret");
    assert!(
        value.is_sensitive(),
        "vendor credentials stay out of debug output"
    );
    assert!(!format!("{images:?}").contains("vendor-secret"));
    assert_eq!(config.routes[0].method, Some(http::Method::POST));
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
    let parse = |text: &str| super::tests::parse(&with_route(text));
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
    assert!(parse("[ledger]\ncluster = [\"redis://a:1\"]\nredis_url = \"redis://b:2\"").is_err());
    assert!(parse("[ledger]\ncluster = []").is_err());
    assert!(parse("[ledger]\ncluster = [\"http://a:1\"]").is_err());
    // TLS: docs/configuration.md, "Connecting to Redis" (more in ledger.rs).
    for tls in [
        "[ledger]\nredis_url = \"rediss://a:1\"",
        "[ledger]\ncluster = [\"rediss://a:1\"]",
    ] {
        assert!(parse(tls).is_ok(), "{tls}");
    }
    assert_eq!(
        parse("[ledger]\nbackend = \"memory\"")
            .unwrap()
            .ledger
            .backend,
        LedgerBackend::Memory
    );
}

#[test]
fn reserved_headers_and_user_info_are_rejected() {
    let error = parse(&with_route(
        "[upstreams.a]\nurl = \"https://user:pw@x.example\"\nheaders = { Host = \"y\" }",
    ))
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
        include_str!("../../config/creditgate.toml"),
        "creditgate.toml",
        Path::new("."),
        &|_| None,
    )
    .unwrap();
    Config::parse(
        include_str!("../../config/example-redis.toml"),
        "example-redis.toml",
        Path::new("."),
        &redis_env,
    )
    .unwrap();
}

#[test]
fn numbers_beyond_the_ledger_bound_are_refused_with_their_key_paths() {
    let error = parse(
        r#"
[plans.huge]
monthly_allowance = 1000000000000001
[plans.edge]
monthly_allowance = 1000000000000000
[upstreams.a]
url = "http://127.0.0.1:1"
[[routes]]
name = "dear"
path = "/dear"
upstream = "a"
cost = 9223372036854775807
[[routes]]
name = "many"
path = "/many"
upstream = "a"
cost = 1000
units = { json = "/n", max = 1000000000001 }
[[routes]]
name = "settled"
path = "/settled"
upstream = "a"
cost = 1
units = { json = "/n", max = 10 }
settle = { header = "x-usage", max = 1000000000000001 }
[[routes]]
name = "fine"
path = "/fine"
upstream = "a"
cost = 1000000000000000
"#,
    )
    .unwrap_err();
    assert_eq!(
        keys(&error),
        [
            "plans.huge.monthly_allowance",
            "routes[0].cost",
            "routes[1].units.max",
            "routes[2].settle.max",
        ],
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("is 9223372036854775807; credits are at most 10^15"),
        "{text}"
    );
    assert!(
        text.contains("1000 × 1000000000001 = 1000000000001000 credits"),
        "{text}"
    );
}

#[test]
fn configs_that_cannot_work_are_refused_with_their_key_paths() {
    let error = parse(
        r#"
[server]
listen = "0.0.0.0:8080"
[admin]
listen = "127.0.0.1:8080"
[ledger]
window = "30d"
history_retention = "7d"
[upstreams.a]
url = "http://127.0.0.1:1"
[[routes]]
name = "shadowed"
path = "/v1/credits/history"
upstream = "a"
cost = 1
[[routes]]
name = "catch-all"
path = "/v1/*"
upstream = "a"
cost = 1
[[routes]]
name = "fine"
path = "/v1/creditsx"
upstream = "a"
cost = 1
"#,
    )
    .unwrap_err();
    assert_eq!(
        keys(&error),
        [
            "routes[0].path",
            "routes[1].path",
            "admin.listen",
            "ledger.history_retention",
        ],
        "{error}"
    );
    let text = error.to_string();
    assert!(text.contains("the usage API owns"), "{text}");
    assert!(text.contains("`/v1/*` would match /v1/credits"), "{text}");
    assert!(text.contains("ledger.window is 30days"), "{text}");
}

#[test]
fn the_retention_default_follows_a_longer_window() {
    let config = parse(&with_route("[ledger]\nwindow = \"120d\"")).unwrap();
    assert_eq!(
        config.ledger.history_retention,
        Duration::from_secs(120 * DAY)
    );
    let config = parse(&with_route(
        "[ledger]\nwindow = \"3s\"\nhistory_retention = \"3s\"",
    ))
    .unwrap();
    assert_eq!(config.ledger.history_retention, Duration::from_secs(3));
}

#[test]
fn two_listeners_on_port_zero_do_not_compete() {
    let config = parse(&with_route(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"",
    ))
    .unwrap();
    assert_eq!(config.server.listen, config.admin.listen);
}

#[test]
fn alerts_are_read_with_their_defaults_and_hide_the_secret() {
    assert!(parse(ONE_ROUTE).unwrap().alerts.is_none());
    let config = parse(&with_route(
        "[alerts]\nurl = \"https://plugin.example/hooks/credits\"\nsecret = \"${ADMIN}\"",
    ))
    .unwrap();
    let alerts = config.alerts.expect("alerts");
    assert_eq!(
        alerts.url.to_string(),
        "https://plugin.example/hooks/credits"
    );
    assert_eq!(alerts.secret, "admin-secret");
    assert_eq!(alerts.thresholds, [800_000, 950_000, 1_000_000]);
    assert_eq!(alerts.timeout, Duration::from_secs(10));
    assert_eq!(alerts.retry_base, Duration::from_secs(1));
    assert_eq!(alerts.retry_for, Duration::from_secs(DAY));
    assert!(!format!("{alerts:?}").contains("admin-secret"));
    let custom = parse(&with_route(
        "[alerts]\nurl = \"http://127.0.0.1:1/h\"\nsecret = \"s\"\nthresholds = [0.5, 1]\nretry_base = \"100ms\"\nretry_for = \"1h\"\ntimeout = \"2s\"",
    ))
    .unwrap()
    .alerts
    .unwrap();
    assert_eq!(custom.thresholds, [500_000, 1_000_000]);
    assert_eq!(custom.retry_base, Duration::from_millis(100));
}

#[test]
fn bad_alerts_are_refused_with_their_key_paths_all_at_once() {
    let error = parse(&with_route(
        "[alerts]\nurl = \"ftp://x\"\nsecret = \"\"\nthresholds = [0.9, 0.8, 0, 1.5, 0.1234567, \"x\", 0.9]\nextra = 1",
    ))
    .unwrap_err();
    assert_eq!(
        keys(&error),
        [
            "alerts.url",
            "alerts.secret",
            "alerts.thresholds[1]",
            "alerts.thresholds[2]",
            "alerts.thresholds[3]",
            "alerts.thresholds[4]",
            "alerts.thresholds[5]",
            "alerts.thresholds[6]",
            "alerts.extra",
        ],
        "{error}"
    );
    let missing = parse(&with_route("[alerts]\nthresholds = []")).unwrap_err();
    assert_eq!(
        keys(&missing),
        ["alerts.url", "alerts.secret", "alerts.thresholds"],
        "{missing}"
    );
    let unset = parse(&with_route(
        "[alerts]\nurl = \"http://h/\"\nsecret = \"${ALERT_SECRET}\"",
    ))
    .unwrap_err();
    assert_eq!(keys(&unset), ["alerts.secret"], "{unset}");
}

#[test]
fn plan_limits_parse_in_order_and_every_mistake_names_its_key() {
    let config = parse(&with_route(
        r#"
[plans.pro]
monthly_allowance = 10000
limits = [{ window = "1d", credits = 1500 }, { window = "1h", credits = 300 }]
[plans.free]
monthly_allowance = 100
"#,
    ))
    .unwrap();
    let pro = &config.limits["pro"];
    assert_eq!(
        pro.iter()
            .map(|l| (l.name.as_str(), l.window_ms, l.credits))
            .collect::<Vec<_>>(),
        [("1d", 86_400_000, 1500), ("1h", 3_600_000, 300)]
    );
    assert!(!config.limits.contains_key("free"));

    let error = parse(&with_route(
        r#"
[ledger]
window = "7d"
[plans.pro]
monthly_allowance = 10000
limits = [
  { window = "1d", credits = 0 },
  { window = "1d", credits = 5 },
  { window = "30d", credits = 5 },
  { window = "soon", credits = 5 },
  { window = "1h", credits = 1000000000000001 },
  { window = "2h" },
  { window = "3h", credits = 5, extra = 1 },
  "1h",
]
[plans.bad]
monthly_allowance = 1
limits = { window = "1h", credits = 5 }
"#,
    ))
    .unwrap_err();
    assert_eq!(
        keys(&error),
        [
            "plans.bad.limits",
            "plans.pro.limits[0].credits",
            "plans.pro.limits[1].window",
            "plans.pro.limits[2].window",
            "plans.pro.limits[3].window",
            "plans.pro.limits[4].credits",
            "plans.pro.limits[5].credits",
            "plans.pro.limits[6].extra",
            "plans.pro.limits[7]",
        ],
        "{error}"
    );
    assert!(
        error.to_string().contains("shorter than the ledger's"),
        "{error}"
    );
    assert!(error.to_string().contains("duplicates"), "{error}");
}
