//! The usage report, the price list, the account list and the console's
//! files over HTTP, on every ledger backend (docs/usage-api.md).

use serde_json::{json, Value};

use super::{total, Demo};
use crate::proxy::assert_problem;
use crate::support::cluster::RedisCluster;
use crate::support::gateway::ADMIN_TOKEN;
use crate::support::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_endpoints() {
    let demo = Demo::start("backend = \"memory\"", None).await;
    endpoints_answer_as_documented(&demo).await;
    demo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_endpoints() {
    let redis = RedisServer::start();
    let ledger = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let demo = Demo::start(&ledger, None).await;
    endpoints_answer_as_documented(&demo).await;
    demo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_endpoints() {
    let cluster = RedisCluster::start();
    let ledger = format!("backend = \"redis\"\ncluster = {}", cluster.toml_urls());
    let demo = Demo::start(&ledger, None).await;
    endpoints_answer_as_documented(&demo).await;
    demo.shutdown().await;
}

async fn endpoints_answer_as_documented(demo: &Demo) {
    let key = demo.account_with_key("site-42", "pro").await;
    for id in ["b-shop", "a-blog", "zz-agency"] {
        demo.put_account(id, json!({"plan": "starter"})).await;
    }
    // 3 requests for 2 images (8 each), 2 videos (25 each), 2 agent calls
    // (reserved 1 and 4, both settled to 3), 1 free status check; one image
    // request refunded by the operator.
    let mut images = Vec::new();
    for _ in 0..3 {
        images.push(
            demo.spend(&key, "/v1/images/generate", json!({"n": 2}))
                .await,
        );
    }
    for _ in 0..2 {
        demo.spend(&key, "/v1/videos/generate", json!({})).await;
    }
    demo.spend(&key, "/v1/agents/chat", json!({})).await;
    demo.spend(&key, "/v1/agents/chat", json!({"max_tokens": 4000}))
        .await;
    assert_eq!(demo.get_with_key(&key, "/v1/status").await.status, 200);
    let refund = demo
        .admin_post(
            "/admin/v1/accounts/site-42/refunds",
            json!({"request_id": images[0]}),
        )
        .await;
    assert_eq!(refund.status, 200, "{}", refund.text());
    let used = 2 * 8 + 2 * 25 + 2 * 3;
    assert_eq!(demo.upstream.count(), 8, "every request reached the vendor");

    // The plugin's report, with the customer's key.
    let response = demo.get_with_key(&key, "/v1/credits/usage").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let report = response.json();
    assert_eq!(report["account"], "site-42");
    assert_eq!(report["plan"], "pro");
    assert_eq!(report["monthly_allowance"], 5000);
    assert_eq!(report["used"], used, "{report}");
    assert_eq!(report["available"], 5000 - used);
    assert_eq!(report["window_seconds"], 30 * 86_400);
    assert_eq!(
        report["by_route"],
        json!([
            {"route": "video-generate", "credits": 50, "requests": 2},
            {"route": "image-generate", "credits": 16, "requests": 2},
            {"route": "agent-chat", "credits": 6, "requests": 2},
        ]),
        "largest first; refunded and free requests not counted"
    );
    let by_day = report["by_day"].as_array().unwrap();
    assert_eq!(by_day.len(), 31, "{report}");
    let as_of = report["as_of"].as_str().unwrap();
    assert_eq!(by_day[30]["day"], as_of[..10], "the last day is today");
    assert_eq!(by_day[30]["credits"], used);
    assert_eq!(
        by_day[30]["by_route"],
        json!({"video-generate": 50, "image-generate": 16, "agent-chat": 6})
    );
    for list in ["by_route", "by_day", "returning"] {
        assert_eq!(total(&report[list]), used, "Σ {list}: {report}");
    }
    let returning = report["returning"].as_array().unwrap();
    assert!(!returning.is_empty() && returning.len() <= 2, "{report}");
    let balance = demo.get_with_key(&key, "/v1/credits").await.json();
    assert_eq!(balance["used"], used);

    // The same report on the admin plane.
    let admin = demo.admin_get("/admin/v1/accounts/site-42/usage").await;
    assert_eq!(admin.status, 200, "{}", admin.text());
    let admin = admin.json();
    for field in ["used", "by_route", "returning", "plan"] {
        assert_eq!(admin[field], report[field], "{field}");
    }
    assert_problem(
        &demo.admin_get("/admin/v1/accounts/nobody/usage").await,
        404,
        "not_found",
    );

    // Refusals on the data plane.
    let anonymous = demo.client.get(&demo.url("/v1/credits/usage"), &[]).await;
    assert_problem(&anonymous, 401, "unauthenticated");
    let wrong_method = demo
        .client
        .post(
            &demo.url("/v1/credits/prices"),
            &[("authorization", &format!("Bearer {key}"))],
            "",
        )
        .await;
    assert_problem(&wrong_method, 405, "method_not_allowed");
    assert_problem(
        &demo.get_with_key(&key, "/v1/credits/usage/extra").await,
        404,
        "route_not_found",
    );

    // The price list: every route in config order, nothing about upstreams.
    let prices = demo.get_with_key(&key, "/v1/credits/prices").await;
    assert_eq!(prices.status, 200, "{}", prices.text());
    let text = prices.text();
    for secret in [
        "images-vendor-secret",
        "127.0.0.1",
        "upstream",
        "\"images\"",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let prices = prices.json();
    let names: Vec<&str> = prices["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "image-generate",
            "image-upscale",
            "video-generate",
            "agent-chat",
            "status"
        ]
    );
    assert_eq!(
        prices["routes"][0],
        json!({"route": "image-generate", "method": "POST", "path": "/v1/images/generate",
               "cost": 4, "units": {"json": "/n", "per": 1, "default": 1, "max": 10},
               "settle": null})
    );
    assert_eq!(
        prices["routes"][3]["settle"],
        json!({"json": "/usage/total_tokens", "per": 1000, "max": 8})
    );
    assert_eq!(prices["routes"][3]["method"], Value::Null);
    assert_eq!(prices["routes"][4]["cost"], 0);
    let admin_prices = demo.admin_get("/admin/v1/prices").await.json();
    assert_eq!(admin_prices["routes"], prices["routes"]);
    assert_eq!(
        admin_prices["plans"][1],
        json!({"plan": "pro", "monthly_allowance": 5000})
    );

    // The account list, in id order, a page at a time.
    let list = demo.admin_get("/admin/v1/accounts").await;
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["account"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a-blog", "b-shop", "site-42", "zz-agency"]);
    assert_eq!(list["next"], Value::Null);
    assert_eq!(
        list["items"][2],
        json!({"account": "site-42", "plan": "pro", "suspended": false,
               "monthly_allowance": 5000, "used": used, "available": 5000 - used})
    );
    let first = demo.admin_get("/admin/v1/accounts?limit=2").await.json();
    assert_eq!(first["next"], "b-shop");
    let second = demo
        .admin_get("/admin/v1/accounts?limit=2&after=b-shop")
        .await
        .json();
    assert_eq!(second["items"][0]["account"], "site-42");
    assert_eq!(second["items"][1]["account"], "zz-agency");
    for bad in ["limit=0", "limit=501", "limit=ten", "after=a%2Fb"] {
        assert_problem(
            &demo.admin_get(&format!("/admin/v1/accounts?{bad}")).await,
            400,
            "bad_request",
        );
    }
    let unauthorized = demo
        .client
        .get(&demo.admin_url("/admin/v1/accounts"), &[])
        .await;
    assert_problem(&unauthorized, 401, "unauthorized");
    let reindex = demo.admin_post("/admin/v1/reindex", json!({})).await;
    assert_eq!(reindex.status, 200, "{}", reindex.text());
    assert_eq!(reindex.json(), json!({"indexed": 4}));

    // The console's files: no token needed, a strict policy on each.
    for (path, kind) in [
        ("/admin/", "text/html"),
        ("/admin/console.js", "text/javascript"),
        ("/admin/console.css", "text/css"),
    ] {
        let response = demo.client.get(&demo.admin_url(path), &[]).await;
        assert_eq!(response.status, 200, "{path}");
        assert!(
            response.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        let policy = response.header("content-security-policy").unwrap();
        assert!(policy.starts_with("default-src 'none'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert_eq!(response.header("x-frame-options"), Some("DENY"));
        assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
        assert!(!response.text().contains(ADMIN_TOKEN));
    }
    // A suspended account still reads its report (its dashboard says why requests fail).
    demo.put_account("site-42", json!({"suspended": true}))
        .await;
    let suspended = demo.get_with_key(&key, "/v1/credits/usage").await;
    assert_eq!(suspended.status, 200, "{}", suspended.text());
    assert_eq!(suspended.json()["used"], used);

    let bare = demo.client.get(&demo.admin_url("/admin"), &[]).await;
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location"), Some("/admin/"));
}
