//! `creditgate account list`, `account usage` and `account reindex` against
//! a running gateway: JSON on stdout, pages followed with `--all`.

use std::process::Output;

use serde_json::{json, Value};

use super::Demo;
use crate::support::gateway::ADMIN_TOKEN;
use crate::support::process::run;

async fn cli(demo: &Demo, args: &[&str]) -> Output {
    let admin = demo.admin_url("");
    let mut all: Vec<String> = ["account", "--admin-url", &admin, "--token", ADMIN_TOKEN]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        run(&args, &[])
    })
    .await
    .unwrap()
}

fn json_out(output: &Output) -> Value {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

fn ids(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["account"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_accounts_and_shows_usage() {
    let demo = Demo::start("backend = \"memory\"", None).await;
    let key = demo.account_with_key("site-b", "pro").await;
    demo.put_account("site-a", json!({"plan": "starter"})).await;
    demo.put_account("site-c", json!({"plan": "agency"})).await;
    demo.spend(&key, "/v1/videos/generate", json!({})).await;

    let first = json_out(&cli(&demo, &["list", "--limit", "2"]).await);
    assert_eq!(ids(&first), ["site-a", "site-b"]);
    assert_eq!(first["next"], "site-b");
    assert_eq!(first["items"][1]["used"], 25);
    let rest = json_out(&cli(&demo, &["list", "--after", "site-b"]).await);
    assert_eq!(ids(&rest), ["site-c"]);
    assert_eq!(rest["next"], Value::Null);
    let all = json_out(&cli(&demo, &["list", "--all"]).await);
    assert_eq!(ids(&all), ["site-a", "site-b", "site-c"]);

    let usage = json_out(&cli(&demo, &["usage", "site-b"]).await);
    assert_eq!(usage["used"], 25);
    assert_eq!(
        usage["by_route"],
        json!([{"route": "video-generate", "credits": 25, "requests": 1}])
    );
    let reindex = json_out(&cli(&demo, &["reindex"]).await);
    assert_eq!(reindex, json!({"indexed": 3}));

    // Usage errors are exit 2, before anything is sent; an unknown account is the API's 404.
    for bad in [
        &["list", "--limit", "0"][..],
        &["list", "--after", "a/b"],
        &["list", "--all", "--after", "x"],
    ] {
        assert_eq!(cli(&demo, bad).await.status.code(), Some(2), "{bad:?}");
    }
    let missing = cli(&demo, &["usage", "nobody"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    demo.shutdown().await;
}
