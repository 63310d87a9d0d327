//! The `creditgate` command line as operators and scripts use it: ids are
//! refused before any request, every success is JSON, the config file is
//! found in a fixed order, each kind of failure has its exit code, and
//! `--help` documents all of it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::process::{free_port, GatewayProcess, TempDir, BIN};
use crate::support::upstream::RecordingUpstream;

const TOKEN: &str = "cli-admin-token";

/// Variables that would change what the CLI does; every run starts without them.
const CLI_ENV: &[&str] = &[
    "CREDITGATE_CONFIG",
    "CREDITGATE_ADMIN_URL",
    "CREDITGATE_ADMIN_TOKEN",
    "CREDITGATE_LOG",
];

/// Runs `creditgate` in `cwd` with only `env` of the CLI's own variables set.
pub fn creditgate(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut command = Command::new(BIN);
    for name in CLI_ENV {
        command.env_remove(name);
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run creditgate")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The JSON a successful run printed (panics with the run's output otherwise).
pub fn json_out(output: &Output) -> serde_json::Value {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

pub fn config(upstream: &str, routes: usize) -> String {
    let mut toml = format!(
        r#"
[server]
listen = "{{DATA}}"
drain_timeout = "2s"
[admin]
listen = "{{ADMIN}}"
token = "{TOKEN}"
[plans.free]
monthly_allowance = 100
[plans.pro]
monthly_allowance = 1000
[upstreams.vendor]
url = "{upstream}"
"#
    );
    for n in 0..routes {
        toml.push_str(&format!(
            "[[routes]]\nname = \"paid{n}\"\npath = \"/v1/paid{n}\"\nupstream = \"vendor\"\ncost = 7\n"
        ));
    }
    toml
}

/// The admin API calls the gateway logged so far (one line per call).
fn admin_calls(gateway: &GatewayProcess) -> usize {
    gateway
        .logs()
        .lines()
        .filter(|line| line.contains("\"target\":\"creditgate::admin\""))
        .count()
}

/// [`admin_calls`] once a `method` call on account tmp1 has been logged.
async fn admin_calls_after(gateway: &GatewayProcess, method: &str) -> usize {
    let needle = format!("\"method\":\"{method}\"");
    crate::support::wait::wait_until("the admin call's log line", async || {
        let logged = gateway.logs().lines().any(|line| {
            line.contains("\"target\":\"creditgate::admin\"")
                && line.contains(&needle)
                && line.contains("/admin/v1/accounts/tmp1")
        });
        if logged {
            Ok(admin_calls(gateway))
        } else {
            Err(format!("no {method} line yet"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_break_the_rule_are_refused_before_any_request() {
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("cli-ids");
    let gateway = GatewayProcess::start(&dir, &config(&upstream.url(), 1), &[]);
    let admin = gateway.admin_url("");
    let cli = |args: &[&str]| {
        let mut all = vec!["account", "--admin-url", &admin, "--token", TOKEN];
        all.extend_from_slice(args);
        creditgate(&all, &[], dir.path())
    };
    json_out(&cli(&["put", "tmp1", "--plan", "pro"]));
    // The log is written off the request path: count once the put's line is in.
    let calls_before = admin_calls_after(&gateway, "PUT").await;

    let refused: &[&[&str]] = &[
        &["put", "tmp1#oops", "--plan", "free"],
        &["show", "a?b"],
        &["show", "bad id"],
        &["show", "."],
        &["show", ".."],
        &["put", "..", "--plan", "free"],
        &["key-add", "a/b"],
        &["history", "tmp1#x"],
        &["refund", "tmp1?x", "req-1"],
        &["key-revoke", "tmp1", ".."],
        &["key-revoke", "tmp1", "key id"],
        &["refund", "tmp1", "not a request id"],
        &["history", "tmp1", "--before", "not-a-cursor"],
        &["history", "tmp1", "--limit", "501"],
    ];
    for args in refused {
        let output = cli(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?} must be a usage error: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?} printed on stdout");
        let message = stderr(&output);
        assert!(message.contains("invalid value"), "{args:?}: {message}");
        if args[1].contains(['#', '?', ' ', '.', '/']) {
            assert!(
                message.contains(creditgate::account_id::RULE),
                "{args:?}: the account id rule is not quoted: {message}"
            );
        }
    }
    let tmp1 = json_out(&cli(&["show", "tmp1"]));
    // Lines are written in order: once the show's line is in, so is any
    // line a refused call would have left.
    assert_eq!(
        admin_calls_after(&gateway, "GET").await,
        calls_before + 1,
        "the admin API saw a request:\n{}",
        gateway.logs()
    );
    assert_eq!(tmp1["plan"], "pro", "account tmp1 was changed: {tmp1}");
    assert_eq!(tmp1["suspended"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_prints_json_on_success() {
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("cli-json");
    let gateway = GatewayProcess::start(&dir, &config(&upstream.url(), 1), &[]);
    let config_path = gateway.config_path.to_str().unwrap().to_owned();
    // Address and token from the config file this time.
    let cli = |args: &[&str]| {
        let mut all = vec!["account", "--config", &config_path];
        all.extend_from_slice(args);
        creditgate(&all, &[], dir.path())
    };

    let created = json_out(&cli(&["put", "site-42", "--plan", "pro"]));
    assert_eq!(created["account"], "site-42");
    assert_eq!(created["plan"], "pro");
    assert_eq!(created["monthly_allowance"], 1000);
    let key = json_out(&cli(&["key-add", "site-42"]));
    assert_eq!(key["account"], "site-42");
    let secret = key["key"].as_str().expect("key").to_owned();
    let key_id = key["key_id"].as_str().expect("key_id").to_owned();

    let client = gateway.client();
    let auth = format!("Bearer {secret}");
    for request_id in ["json-req-1", "json-req-2"] {
        let response = client
            .post(
                &gateway.url("/v1/paid0"),
                &[("authorization", &auth), ("x-request-id", request_id)],
                "x",
            )
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let show = json_out(&cli(&["show", "site-42"]));
    assert_eq!(show["used"], 14);
    let first = json_out(&cli(&["history", "site-42", "--limit", "1"]));
    assert_eq!(first["items"][0]["request_id"], "json-req-2");
    let next = first["next"].as_str().expect("a next cursor").to_owned();
    let second = json_out(&cli(&[
        "history", "site-42", "--limit", "1", "--before", &next,
    ]));
    assert_eq!(second["items"][0]["request_id"], "json-req-1");
    let refund = json_out(&cli(&["refund", "site-42", "json-req-1"]));
    assert_eq!(refund["refunded"], true);
    assert_eq!(refund["already_refunded"], false);
    let suspended = json_out(&cli(&["put", "site-42", "--suspended", "true"]));
    assert_eq!(suspended["suspended"], true);
    assert_eq!(suspended["plan"], "pro");

    let revoke = json_out(&cli(&["key-revoke", "site-42", &key_id]));
    assert_eq!(
        revoke,
        serde_json::json!({"account": "site-42", "key_id": key_id, "revoked": true})
    );
    // Revoking it again: the API refuses (404), exit 1, the problem on stderr.
    let again = cli(&["key-revoke", "site-42", &key_id]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(again.stdout.is_empty());
    assert!(stderr(&again).contains("404"), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("\"code\": \"not_found\""),
        "{}",
        stderr(&again)
    );

    let check = json_out(&creditgate(
        &["check", "--config", &config_path],
        &[],
        dir.path(),
    ));
    assert_eq!(check["config"], config_path.as_str());
    assert_eq!(check["routes"], 1);
    assert_eq!(check["ledger"], "memory");
    let probe = json_out(&creditgate(
        &["probe", "--config", &config_path],
        &[],
        dir.path(),
    ));
    assert_eq!(probe["status"], "ok");
    let ready = json_out(&creditgate(
        &["probe", "--ready", "--admin-url", &gateway.admin_url("")],
        &[],
        dir.path(),
    ));
    assert_eq!(ready["status"], "ready");
}

#[test]
fn the_config_file_is_found_by_flag_then_variable_then_the_defaults() {
    let dir = TempDir::new("cli-discovery");
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    // `check` reads, it does not listen: any addresses do.
    let text = |routes| {
        config("http://127.0.0.1:1", routes)
            .replace("{DATA}", "127.0.0.1:8080")
            .replace("{ADMIN}", "127.0.0.1:9090")
    };
    let local = dir.write("config/creditgate.toml", &text(1));
    let from_env = dir.write("env.toml", &text(2));
    let from_flag = dir.write("flag.toml", &text(3));
    let (local, from_env, from_flag) = (
        local.to_str().unwrap(),
        from_env.to_str().unwrap(),
        from_flag.to_str().unwrap(),
    );
    let check = |args: &[&str], env: &[(&str, &str)], cwd: &Path| {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        creditgate(&all, env, cwd)
    };

    let flag = json_out(&check(
        &["--config", from_flag],
        &[("CREDITGATE_CONFIG", from_env)],
        dir.path(),
    ));
    assert_eq!(
        (flag["routes"].as_u64(), flag["found_by"].as_str()),
        (Some(3), Some("--config"))
    );
    let env = json_out(&check(&[], &[("CREDITGATE_CONFIG", from_env)], dir.path()));
    assert_eq!(
        (env["routes"].as_u64(), env["found_by"].as_str()),
        (Some(2), Some("CREDITGATE_CONFIG"))
    );
    assert_eq!(env["config"], from_env);

    let system_default = Path::new("/etc/creditgate/creditgate.toml");
    if system_default.exists() {
        // This machine has a system config, which rightly comes before ./config.
        eprintln!(
            "skipping the ./config and not-found cases: {} exists",
            system_default.display()
        );
        return;
    }
    let here = json_out(&check(&[], &[], dir.path()));
    assert_eq!(here["found_by"], "./config/creditgate.toml");
    assert_eq!(here["routes"], 1);
    assert_eq!(
        std::fs::canonicalize(dir.path().join(here["config"].as_str().unwrap())).unwrap(),
        std::fs::canonicalize(local).unwrap()
    );

    // A named file that does not exist is an error, never a fallback.
    for (args, env) in [
        (vec!["--config", "missing.toml"], vec![]),
        (vec![], vec![("CREDITGATE_CONFIG", "missing.toml")]),
    ] {
        let output = check(&args, &env, dir.path());
        assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("missing.toml"),
            "{}",
            stderr(&output)
        );
    }

    // Nowhere: exit 3 and a message naming every place, for each command
    // that reads a config (and never "cannot reach the admin API").
    let empty = TempDir::new("cli-nowhere");
    for args in [
        vec!["check"],
        vec!["serve"],
        vec!["account", "show", "site-42"],
        vec![
            "account",
            "--admin-url",
            "http://127.0.0.1:9",
            "show",
            "site-42",
        ],
    ] {
        let output = creditgate(&args, &[], empty.path());
        assert_eq!(
            output.status.code(),
            Some(3),
            "{args:?}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        for place in [
            "--config",
            "CREDITGATE_CONFIG",
            "/etc/creditgate/creditgate.toml",
            "./config/creditgate.toml",
        ] {
            assert!(
                message.contains(place),
                "{args:?}: {place} not named in: {message}"
            );
        }
        assert!(!message.contains("cannot reach"), "{args:?}: {message}");
    }
}

#[test]
fn each_kind_of_failure_has_its_exit_code() {
    let dir = TempDir::new("cli-exits");
    let invalid = dir.write(
        "invalid.toml",
        "[server]\nlisten = \"nowhere\"\n[[routes]]\nname = \"x\"\n",
    );
    let output = creditgate(
        &["check", "--config", invalid.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("server.listen"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("routes[0].path"),
        "{}",
        stderr(&output)
    );
    let serve = creditgate(
        &["serve", "--config", invalid.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert_eq!(serve.status.code(), Some(2), "{}", stderr(&serve));

    // Nothing listens there: 5, and it says where the address came from.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let output = creditgate(
        &[
            "account",
            "show",
            "site-42",
            "--admin-url",
            &nowhere,
            "--token",
            "t",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot reach the admin API"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("--admin-url"),
        "{}",
        stderr(&output)
    );
    // The same through the environment variables.
    let output = creditgate(
        &["account", "show", "site-42"],
        &[
            ("CREDITGATE_ADMIN_URL", &nowhere),
            ("CREDITGATE_ADMIN_TOKEN", "t"),
        ],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    // The probe only ever says 0 or 1 (Docker reserves 2).
    let probe = creditgate(&["probe", "--admin-url", &nowhere], &[], dir.path());
    assert_eq!(probe.status.code(), Some(1), "{}", stderr(&probe));
    let probe = creditgate(&["probe"], &[], TempDir::new("cli-probe-nowhere").path());
    assert_eq!(probe.status.code(), Some(1), "{}", stderr(&probe));
    assert!(
        stderr(&probe).contains("no config file found"),
        "{}",
        stderr(&probe)
    );
    // A URL that is not one: a usage error, nothing sent.
    let output = creditgate(
        &[
            "account",
            "show",
            "site-42",
            "--admin-url",
            "127.0.0.1:9090",
            "--token",
            "t",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    // Unknown subcommands and flags are usage errors too.
    assert_eq!(
        creditgate(&["account", "frobnicate"], &[], dir.path())
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        creditgate(&["serve", "--bogus"], &[], dir.path())
            .status
            .code(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_exit_1_with_the_problem_on_stderr() {
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("cli-refused");
    let gateway = GatewayProcess::start(&dir, &config(&upstream.url(), 1), &[]);
    let admin = gateway.admin_url("");
    let wrong_token = creditgate(
        &[
            "account",
            "show",
            "site-1",
            "--admin-url",
            &admin,
            "--token",
            "wrong",
        ],
        &[],
        dir.path(),
    );
    assert_eq!(
        wrong_token.status.code(),
        Some(1),
        "{}",
        stderr(&wrong_token)
    );
    assert!(
        stderr(&wrong_token).contains("401"),
        "{}",
        stderr(&wrong_token)
    );
    let unknown_plan = creditgate(
        &[
            "account",
            "put",
            "site-1",
            "--plan",
            "gold",
            "--admin-url",
            &admin,
            "--token",
            TOKEN,
        ],
        &[],
        dir.path(),
    );
    assert_eq!(
        unknown_plan.status.code(),
        Some(1),
        "{}",
        stderr(&unknown_plan)
    );
    assert!(
        stderr(&unknown_plan).contains("unknown_plan"),
        "{}",
        stderr(&unknown_plan)
    );
}

#[test]
fn help_describes_every_command_with_examples_and_exit_codes() {
    let dir = TempDir::new("cli-help");
    let help = |args: &[&str]| {
        let output = creditgate(args, &[], dir.path());
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let top = help(&["--help"]);
    for expected in [
        "serve",
        "check",
        "account",
        "probe",
        "Exit codes:",
        "  0  success",
        "  1  the admin API refused",
        "  2  bad input",
        "  3  no config file found",
        "  4  the admin API cannot be reached",
        "CREDITGATE_CONFIG",
        "/etc/creditgate/creditgate.toml",
        "creditgate serve --dev",
    ] {
        assert!(top.contains(expected), "--help lacks {expected:?}:\n{top}");
    }
    for command in [
        vec!["serve"],
        vec!["check"],
        vec!["probe"],
        vec!["account"],
        vec!["account", "put"],
        vec!["account", "show"],
        vec!["account", "key-add"],
        vec!["account", "key-revoke"],
        vec!["account", "history"],
        vec!["account", "refund"],
    ] {
        let mut args = command.clone();
        args.push("--help");
        let text = help(&args);
        assert!(
            text.contains("Example"),
            "{command:?} --help has no example:\n{text}"
        );
        let example = format!("creditgate {}", command.join(" "));
        assert!(
            text.contains(&example),
            "{command:?} --help has no `{example}` example:\n{text}"
        );
        assert!(
            text.contains("Exit codes") || command[0] == "account" && command.len() == 2,
            "{command:?} --help does not list the exit codes:\n{text}"
        );
    }
    let put = help(&["account", "put", "--help"]);
    for expected in [
        "<ACCOUNT>",
        "1-64 characters",
        "--plan <PLAN>",
        "--suspended",
        "--admin-url",
        "--token",
        "CREDITGATE_ADMIN_TOKEN",
    ] {
        assert!(
            put.contains(expected),
            "account put --help lacks {expected:?}:\n{put}"
        );
    }
    let serve = help(&["serve", "--help"]);
    for expected in ["--dev", "--config", "loopback", "SIGHUP"] {
        assert!(
            serve.contains(expected),
            "serve --help lacks {expected:?}:\n{serve}"
        );
    }
}

#[tokio::test]
async fn grants_are_given_listed_and_voided_from_the_command_line() {
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("cli-grants");
    let gateway = GatewayProcess::start(&dir, &config(&upstream.url(), 1), &[]);
    let config_path = gateway.config_path.to_str().unwrap().to_owned();
    let cli = |args: &[&str]| {
        let mut all = vec!["account", "--config", &config_path];
        all.extend_from_slice(args);
        creditgate(&all, &[], dir.path())
    };
    json_out(&cli(&["put", "site-7", "--plan", "pro"]));

    // Bad input is refused before anything is sent: exit 2.
    for args in [
        &["grant", "site-7", "--credits", "0"][..],
        &["grant", "site-7", "--credits", "5", "--expires-at", "soon"],
        &["grant", "site#7", "--credits", "5"],
        &["grant-void", "site-7", "x1"],
    ] {
        let refused = cli(args);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&refused)
        );
    }
    let listed = json_out(&cli(&["grants", "site-7"]));
    assert_eq!(listed["items"], serde_json::json!([]));

    let grant = json_out(&cli(&[
        "grant",
        "site-7",
        "--credits",
        "500",
        "--expires-at",
        "2099-01-01T00:00:00Z",
        "--note",
        "top-up #1",
    ]));
    assert_eq!(
        (
            &grant["credits"],
            &grant["remaining"],
            &grant["note"],
            &grant["expires_at"]
        ),
        (
            &serde_json::json!(500),
            &serde_json::json!(500),
            &serde_json::json!("top-up #1"),
            &serde_json::json!("2099-01-01T00:00:00Z")
        )
    );
    let grant_id = grant["grant_id"].as_str().expect("grant_id").to_owned();
    let listed = json_out(&cli(&["grants", "site-7"]));
    assert_eq!(listed["items"][0]["grant_id"], grant_id.as_str());
    assert_eq!(json_out(&cli(&["show", "site-7"]))["available"], 1500);

    let voided = json_out(&cli(&["grant-void", "site-7", &grant_id]));
    assert_eq!(voided["voided_credits"], 500);
    assert_eq!(json_out(&cli(&["show", "site-7"]))["available"], 1000);
    // An unknown grant: the API refuses, exit 1.
    let unknown = cli(&["grant-void", "site-7", "g99"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr(&unknown));
}
