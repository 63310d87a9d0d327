//! `docs/openapi.json` against the gateway: the document names exactly the
//! operations the routers serve (their tables, and a running gateway probed
//! with every method on every path), it is served as built in, its schemas
//! are strict enough to refuse wrong bodies, and the test clients' check
//! (`support::openapi`) fails a test on an answer that breaks it.

use std::collections::BTreeSet;

use bytes::Bytes;
use creditgate::api::endpoints::{ADMIN, USAGE};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::proxy::assert_problem;
use crate::support::gateway::{config_toml, Setup, TestGateway, ADMIN_TOKEN};
use crate::support::http::TestClient;
use crate::support::openapi::{self, Listener, SPEC};
use crate::support::upstream::{Behavior, RecordingUpstream};

const PROBED_METHODS: [http::Method; 6] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::PATCH,
];

fn the_file() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
        .expect("docs/openapi.json")
}

#[test]
fn every_served_operation_is_documented_and_every_documented_one_is_served() {
    let served: BTreeSet<(String, String, &str)> = USAGE
        .iter()
        .map(|e| (e.method.to_string(), e.path.to_owned(), "data"))
        .chain(
            ADMIN
                .iter()
                .map(|e| (e.method.to_string(), e.path.to_owned(), "admin")),
        )
        .collect();
    let documented: BTreeSet<(String, String, &str)> = openapi::operations()
        .into_iter()
        .map(|(method, path, listener)| (method, path, listener.name()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served, not in docs/openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in docs/openapi.json, not served: {unserved:?}"
    );
    assert!(served.len() >= 25, "{served:?}");
}

/// Fills a template's parameters with values that exist.
fn concrete(template: &str, account: &str, key_id: &str) -> String {
    template
        .replace("{id}", account)
        .replace("{key_id}", key_id)
        // The grant the documented POST before it creates.
        .replace("{grant_id}", "g1")
}

#[tokio::test]
async fn a_running_gateway_answers_every_documented_operation_and_nothing_else() {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start(&Setup::new(&upstream.url())).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let paid = gateway
        .send_as(
            &key,
            http::Method::POST,
            "/v1/paid",
            &[("x-request-id", "probe-1")],
            "x",
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.text());
    let spare = gateway
        .client
        .post(
            &gateway.admin_url("/admin/v1/accounts/site-1/keys"),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            "",
        )
        .await
        .json();
    let spare_id = spare["key_id"].as_str().expect("key_id").to_owned();
    let bearer_admin = format!("Bearer {ADMIN_TOKEN}");
    let bearer_key = format!("Bearer {key}");
    let request = |method: &http::Method, listener: Listener, path: &str| {
        let (url, auth) = match listener {
            Listener::Data => (gateway.url(path), bearer_key.as_str()),
            Listener::Admin => (gateway.admin_url(path), bearer_admin.as_str()),
        };
        let body = match (method.as_str(), path) {
            ("PUT", _) => json!({"plan": "pro"}).to_string(),
            ("POST", p) if p.ends_with("/refunds") => json!({"request_id": "probe-1"}).to_string(),
            ("POST", p) if p.ends_with("/grants") => {
                json!({"credits": 5, "note": "probe"}).to_string()
            }
            _ => String::new(),
        };
        http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request")
    };

    // Every documented operation is served: the checking client holds each
    // answer to the document, and none is the router's miss.
    let documented = openapi::operations();
    for (method, template, listener) in &documented {
        let method: http::Method = method.parse().expect("method");
        let path = concrete(template, "site-1", &spare_id);
        let response = gateway
            .client
            .send(request(&method, *listener, &path))
            .await;
        let what = format!("{method} {path}: {} {}", response.status, response.text());
        if path == "/admin/v1/reload" {
            // Started from a parsed config, not a file: a documented 400.
            assert_problem(&response, 400, "invalid_config");
            continue;
        }
        assert!(response.status < 400, "{what}");
    }

    // Every other method on a documented path is refused as the routers
    // refuse what they do not serve, and so is a path next to them.
    let mut refused = 0;
    for (_, template, listener) in &documented {
        for method in &PROBED_METHODS {
            let documented_here = documented
                .iter()
                .any(|(m, t, _)| t == template && m == method.as_str());
            if documented_here {
                continue;
            }
            let path = concrete(template, "site-1", &spare_id);
            let response = gateway.client.send(request(method, *listener, &path)).await;
            let what = format!("{method} {path}: {} {}", response.status, response.text());
            let console = SPEC["paths"][template.as_str()]["get"]["tags"]
                .as_array()
                .is_some_and(|tags| tags.contains(&json!("console")));
            let (status, code) = match listener {
                Listener::Data => (405, "method_not_allowed"),
                Listener::Admin if console => (405, ""),
                Listener::Admin => (404, "not_found"),
            };
            assert_eq!(response.status, status, "{what}");
            match (listener, method == http::Method::HEAD) {
                // A HEAD answer has no body.
                (_, true) => {}
                (Listener::Admin, false) if console => {
                    assert!(response.body.is_empty(), "{what}");
                }
                (_, false) => assert_problem(&response, status, code),
            }
            if status == 404 && method != http::Method::HEAD {
                // The router's miss, not a handler's "no account".
                assert_eq!(
                    response.json()["detail"],
                    "no such admin resource",
                    "{what}"
                );
            }
            if status == 405 {
                let allow = if console { "GET, HEAD" } else { "GET" };
                assert_eq!(response.header("allow"), Some(allow), "{what}");
            }
            refused += 1;
        }
    }
    assert!(refused > 50, "{refused} refusals probed");
    for (listener, path, status, code) in [
        (
            Listener::Admin,
            "/admin/v1/accounts/site-1/nothing",
            404,
            "not_found",
        ),
        (
            Listener::Admin,
            "/admin/v1/accounts/site-1/keys",
            404,
            "not_found",
        ),
        (Listener::Admin, "/admin/v2/accounts", 404, "not_found"),
        (Listener::Admin, "/admin/openapi.yaml", 404, "not_found"),
        (
            Listener::Data,
            "/v1/credits/nothing",
            404,
            "route_not_found",
        ),
        (
            Listener::Data,
            "/v1/credits/usage/extra",
            404,
            "route_not_found",
        ),
    ] {
        let response = gateway
            .client
            .send(request(&http::Method::GET, listener, path))
            .await;
        assert_problem(&response, status, code);
    }
    // Only the probe's request reached the vendor: the usage API answers
    // for itself.
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn the_document_is_served_as_built_in_without_a_token() {
    let upstream = RecordingUpstream::start().await;
    // No admin token at all: the description is still served.
    let toml = config_toml(&Setup::new(&upstream.url()))
        .replace(&format!("token = \"{ADMIN_TOKEN}\""), "");
    let gateway = TestGateway::start_toml(&toml).await;
    let response = gateway
        .client
        .get(&gateway.admin_url("/admin/openapi.json"), &[])
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.text(),
        the_file(),
        "the served document is the file"
    );
    // The admin API itself stays closed.
    assert_problem(
        &gateway.admin_get("/admin/v1/accounts").await,
        403,
        "admin_disabled",
    );
    // The data listener does not serve it.
    let data = gateway
        .client
        .get(&gateway.url("/admin/openapi.json"), &[])
        .await;
    assert_problem(&data, 401, "unauthenticated");
}

/// Every `$ref` in `value` resolves in the document.
fn dangling_refs(value: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(target) = map.get("$ref").and_then(Value::as_str) {
                let resolves = target
                    .strip_prefix('#')
                    .is_some_and(|pointer| SPEC.pointer(pointer).is_some());
                if !resolves {
                    out.push(format!("{at}: {target}"));
                }
            }
            for (key, child) in map {
                dangling_refs(child, &format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                dangling_refs(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_document_is_whole() {
    assert_eq!(SPEC["openapi"], "3.1.0");
    let mut dangling = Vec::new();
    dangling_refs(&SPEC, "", &mut dangling);
    assert!(dangling.is_empty(), "dangling $refs: {dangling:?}");
    // Every schema compiles (formats included).
    for name in SPEC["components"]["schemas"].as_object().unwrap().keys() {
        openapi::validator(&format!("/components/schemas/{name}"));
    }
    let mut ids = BTreeSet::new();
    for (path, item) in SPEC["paths"].as_object().unwrap() {
        let declared: BTreeSet<String> = item
            .get("parameters")
            .into_iter()
            .flat_map(|list| list.as_array().unwrap())
            .map(|p| {
                let p = match p.get("$ref").and_then(Value::as_str) {
                    Some(target) => SPEC.pointer(&target[1..]).unwrap(),
                    None => p,
                };
                p["name"].as_str().unwrap().to_owned()
            })
            .collect();
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        assert_eq!(declared, in_template, "{path}: path parameters");
        for method in openapi::METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            assert!(
                operation["security"].is_array(),
                "{method} {path}: security"
            );
            assert!(
                !operation["responses"].as_object().unwrap().is_empty(),
                "{method} {path}: responses"
            );
        }
    }
    // Every problem code the gateway has is in the document, and no other.
    let codes: BTreeSet<&str> = creditgate::error::ErrorKind::ALL
        .iter()
        .map(|kind| kind.code())
        .collect();
    let documented: BTreeSet<&str> = SPEC["components"]["schemas"]["ProblemCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();
    assert_eq!(codes, documented, "ProblemCode");
}

/// What each schema refuses: members missing, extra, mistyped, out of range
/// or badly formatted.
#[test]
fn the_schemas_refuse_wrong_bodies() {
    let balance = json!({"account": "site-42", "plan": "pro", "monthly_allowance": 10000,
        "used": 1234, "available": 8766, "window_seconds": 2592000,
        "as_of": "2026-11-24T12:00:00Z",
        "next_release": {"at": "2026-12-01T09:13:00Z", "credits": 40}});
    let problem = json!({"type": "urn:creditgate:problem:not_found", "title": "Not found",
        "status": 404, "detail": "no account `x`", "code": "not_found"});
    let history = json!({"items": [{"at": "2026-11-24T11:59:58Z", "route": "image",
        "cost": 10, "request_id": "3f2a9c0d4b1e7a55", "refunded": false,
        "from_allowance": 10, "from_grants": 0}], "next": null});
    // (schema, a body it accepts, changes (pointer, value) it must refuse)
    type Mutations = Vec<(&'static str, Value)>;
    let cases: Vec<(&str, Value, Mutations)> = vec![
        (
            "Balance",
            balance.clone(),
            vec![
                ("/extra", json!(1)),
                ("/used", json!(-1)),
                ("/used", json!("1234")),
                ("/as_of", json!("yesterday")),
                ("/next_release/at", json!(null)),
                ("/account", json!("a/b")),
            ],
        ),
        (
            "Account",
            {
                let mut account = balance.clone();
                account["suspended"] = json!(false);
                account
            },
            vec![("/suspended", json!("no")), ("/recount", json!({}))],
        ),
        (
            "Problem",
            problem.clone(),
            vec![
                ("/code", json!("teapot")),
                ("/status", json!(200)),
                ("/type", json!("about:blank")),
                ("/stack", json!("…")),
            ],
        ),
        (
            "HistoryPage",
            history.clone(),
            vec![
                ("/items/0/cost", json!(1.5)),
                ("/items/0/refunded", json!(0)),
                ("/items/0/extra", json!(true)),
                ("/next", json!("not hex")),
            ],
        ),
    ];
    for (schema, good, mutations) in cases {
        let pointer = format!("/components/schemas/{schema}");
        assert_eq!(
            openapi::violations(&pointer, &good),
            Vec::<String>::new(),
            "{schema}"
        );
        for (at, value) in mutations {
            let mut bad = good.clone();
            let (parent, member) = at.rsplit_once('/').unwrap();
            bad.pointer_mut(parent).unwrap()[member] = value.clone();
            assert!(
                !openapi::violations(&pointer, &bad).is_empty(),
                "{schema} accepts {at} = {value}"
            );
        }
        // And a required member missing.
        let mut missing = good.clone();
        let first = missing.as_object().unwrap().keys().next().unwrap().clone();
        missing.as_object_mut().unwrap().remove(&first);
        assert!(
            !openapi::violations(&pointer, &missing).is_empty(),
            "{schema} accepts a body without `{first}`"
        );
    }
}

/// The clients of test gateways fail a test on an answer that breaks the
/// document: here an "admin listener" that is a vendor answering wrongly.
#[tokio::test]
async fn a_checking_client_fails_on_an_answer_that_breaks_the_document() {
    let impostor = RecordingUpstream::start().await;
    impostor.set_behavior_for(
        "/healthz",
        Behavior::Body {
            status: 200,
            content_type: "application/json".into(),
            body: br#"{"status":"fine"}"#.to_vec(),
        },
    );
    impostor.set_behavior_for(
        "/admin/v1/prices",
        Behavior::Body {
            status: 200,
            content_type: "application/json".into(),
            body: br#"{"routes":[]}"#.to_vec(),
        },
    );
    let data = "127.0.0.1:9".parse().unwrap();
    let client = TestClient::checking(data, impostor.addr());
    for path in ["/healthz", "/admin/v1/prices", "/admin/v1/accounts/a"] {
        let client = client.clone();
        let url = format!("{}{path}", impostor.url());
        let outcome = tokio::spawn(async move { client.get(&url, &[]).await }).await;
        let panic = outcome.expect_err(path).into_panic();
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("docs/openapi.json"), "{path}: {message}");
    }
    // An unchecked client takes the same answers.
    let plain = TestClient::new();
    assert_eq!(
        plain
            .get(&format!("{}/healthz", impostor.url()), &[])
            .await
            .status,
        200
    );
}
