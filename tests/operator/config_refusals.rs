//! `creditgate check` (the real binary) and a live reload refuse configs
//! that cannot work as written, each error naming its key path, all of them
//! at once, exit status 2 (docs/configuration.md, "What `check` refuses").

use std::time::Duration;

use crate::support::process::{run, GatewayProcess, TempDir};
use crate::support::upstream::RecordingUpstream;

/// A config that passes `check`; each case changes one thing in it.
const VALID: &str = r#"
[server]
listen = "127.0.0.1:18080"
[admin]
listen = "127.0.0.1:19090"
token = "t"
[ledger]
window = "30d"
[plans.pro]
monthly_allowance = 1000
[upstreams.vendor]
url = "http://127.0.0.1:1"
[[routes]]
name = "paid"
path = "/v1/paid"
upstream = "vendor"
cost = 7
"#;

/// Runs `creditgate check` on `toml`; returns (exit code, stderr).
fn check(dir: &TempDir, name: &str, toml: &str) -> (Option<i32>, String) {
    let path = dir.write(name, toml);
    let output = run(&["check", "--config", path.to_str().unwrap()], &[]);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn replaced(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "{from:?} is not in the base config");
    VALID.replacen(from, to, 1)
}

fn with_route(path: &str) -> String {
    format!("{VALID}\n[[routes]]\nname = \"extra\"\npath = \"{path}\"\nupstream = \"vendor\"\ncost = 1\n")
}

#[test]
fn the_base_config_passes_check() {
    let dir = TempDir::new("refusals-base");
    let (code, stderr) = check(&dir, "valid.toml", VALID);
    assert_eq!(code, Some(0), "{stderr}");
    // Both listeners on port 0 pick free ports: they never compete.
    let both_zero =
        replaced("127.0.0.1:18080", "127.0.0.1:0").replacen("127.0.0.1:19090", "127.0.0.1:0", 1);
    let (code, stderr) = check(&dir, "zero.toml", &both_zero);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn each_config_that_cannot_work_exits_2_naming_its_key() {
    let dir = TempDir::new("refusals");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "cost-beyond-bound",
            replaced("cost = 7", "cost = 9223372036854775807"),
            "routes[0].cost",
        ),
        (
            "allowance-beyond-bound",
            replaced(
                "monthly_allowance = 1000",
                "monthly_allowance = 1000000000000001",
            ),
            "plans.pro.monthly_allowance",
        ),
        (
            "units-max-times-cost",
            replaced(
                "cost = 7",
                "cost = 7\nunits = { json = \"/n\", max = 200000000000000 }",
            ),
            "routes[0].units.max",
        ),
        (
            "settle-max-beyond-bound",
            replaced(
                "cost = 7",
                "cost = 7\nsettle = { header = \"x-usage\", max = 1000000000000001 }",
            ),
            "routes[0].settle.max",
        ),
        (
            "route-on-usage-api",
            with_route("/v1/credits"),
            "routes[1].path",
        ),
        (
            "route-under-usage-api",
            with_route("/v1/credits/export"),
            "routes[1].path",
        ),
        (
            "prefix-under-usage-api",
            with_route("/v1/credits/*"),
            "routes[1].path",
        ),
        (
            "prefix-over-usage-api",
            with_route("/v1/*"),
            "routes[1].path",
        ),
        (
            "same-listen-address",
            replaced("127.0.0.1:19090", "127.0.0.1:18080"),
            "admin.listen",
        ),
        (
            "wildcard-covers-admin",
            replaced("127.0.0.1:18080", "0.0.0.0:19090"),
            "admin.listen",
        ),
        ("empty-file", String::new(), "routes"),
        (
            "no-routes",
            VALID[..VALID.find("[[routes]]").unwrap()].to_owned(),
            "routes",
        ),
        (
            "retention-shorter-than-window",
            replaced(
                "window = \"30d\"",
                "window = \"30d\"\nhistory_retention = \"7d\"",
            ),
            "ledger.history_retention",
        ),
    ];
    for (name, toml, key) in cases {
        let file = format!("{name}.toml");
        let (code, stderr) = check(&dir, &file, &toml);
        assert_eq!(code, Some(2), "{name}: exit {code:?}\n{stderr}");
        let expected = format!("{file}: {key}: ");
        assert!(
            stderr.contains(&expected),
            "{name}: {expected:?} missing from:\n{stderr}"
        );
        assert!(
            stderr.contains("1 error(s)"),
            "{name}: one problem, one error:\n{stderr}"
        );
    }
}

#[test]
fn every_refusal_is_listed_at_once() {
    let dir = TempDir::new("refusals-all");
    let toml = replaced("cost = 7", "cost = 1000000000000001")
        .replacen("127.0.0.1:19090", "127.0.0.1:18080", 1)
        .replacen(
            "window = \"30d\"",
            "window = \"30d\"\nhistory_retention = \"1d\"",
            1,
        )
        + "\n[[routes]]\nname = \"usage\"\npath = \"/v1/credits\"\nupstream = \"vendor\"\ncost = 1\n";
    let (code, stderr) = check(&dir, "all.toml", &toml);
    assert_eq!(code, Some(2), "{stderr}");
    for key in [
        "routes[0].cost",
        "routes[1].path",
        "admin.listen",
        "ledger.history_retention",
    ] {
        assert!(
            stderr.contains(&format!("all.toml: {key}: ")),
            "{key} missing from:\n{stderr}"
        );
    }
    assert!(stderr.contains("4 error(s)"), "{stderr}");
}

/// A reload runs the same validation: a refused file changes nothing and
/// the reload answers 400 with the errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refuses_the_same_configs_and_changes_nothing() {
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("refusals-reload");
    let toml = VALID
        .replace("127.0.0.1:18080", "{DATA}")
        .replace("127.0.0.1:19090", "{ADMIN}")
        .replace("http://127.0.0.1:1", &upstream.url());
    let gateway = GatewayProcess::start(&dir, &toml, &[]);
    let client = gateway.client();
    let admin = [("authorization", "Bearer t")];
    let put = client
        .put_json(
            &gateway.admin_url("/admin/v1/accounts/site-1"),
            &admin,
            serde_json::json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
    let key = client
        .post(
            &gateway.admin_url("/admin/v1/accounts/site-1/keys"),
            &admin,
            "",
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = format!("Bearer {key}");
    let running = std::fs::read_to_string(&gateway.config_path).unwrap();
    for (broken, key) in [
        (
            running.replace("cost = 7", "cost = 9223372036854775807"),
            "routes[0].cost",
        ),
        (
            format!("{running}\n[[routes]]\nname = \"u\"\npath = \"/v1/credits/*\"\nupstream = \"vendor\"\ncost = 1\n"),
            "routes[1].path",
        ),
        (
            running.replace("window = \"30d\"", "window = \"30d\"\nhistory_retention = \"1h\""),
            "ledger.history_retention",
        ),
        (
            running.replace("monthly_allowance = 1000", "monthly_allowance = 1000000000000001"),
            "plans.pro.monthly_allowance",
        ),
    ] {
        std::fs::write(&gateway.config_path, &broken).unwrap();
        let reload = client
            .post(&gateway.admin_url("/admin/v1/reload"), &admin, "")
            .await;
        assert_eq!(reload.status, 400, "{key}: {}", reload.text());
        let body = reload.json();
        assert_eq!(body["code"], "invalid_config");
        assert!(body["errors"].to_string().contains(key), "{key}: {body}");
    }
    // The running config is untouched: same price, same allowance, and the
    // usage API still owns its paths.
    let paid = client
        .post(&gateway.url("/v1/paid"), &[("authorization", &auth)], "x")
        .await;
    assert_eq!(paid.status, 200, "{}", paid.text());
    assert_eq!(paid.header("x-credits-cost"), Some("7"));
    assert_eq!(paid.header("x-credits-limit"), Some("1000"));
    let usage = client
        .get(
            &gateway.url("/v1/credits/history"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(usage.status, 200, "{}", usage.text());
    assert_eq!(usage.json()["items"][0]["cost"], 7);
    upstream.wait_for(1, Duration::from_secs(10)).await;
}
