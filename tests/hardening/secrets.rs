//! Keys stay secret: the client's key and the vendor's key never appear in a
//! response on any path, and client credentials never reach the vendor.

use std::time::Duration;

use crate::support::gateway::{Setup, TestGateway, VENDOR_KEY};
use crate::support::http::Response;
use crate::support::money::{assert_ledger_matches_vendors, Tally};
use crate::support::upstream::{unused_addr, Behavior, RecordingUpstream};

fn assert_clean(response: &Response, key: &str, what: &str) {
    let mut everything = response.text();
    for (name, value) in &response.headers {
        everything.push_str(name.as_str());
        everything.push_str(value.to_str().unwrap_or(""));
    }
    assert!(
        !everything.contains(VENDOR_KEY),
        "{what}: vendor key in the response"
    );
    assert!(
        !everything.contains(key),
        "{what}: client key in the response"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_leak_on_any_path() {
    let upstream = RecordingUpstream::start().await;
    let mut setup = Setup::new(&upstream.url());
    setup.upstream_timeout = "300ms";
    let extra = format!(
        "[upstreams.dead]\nurl = \"http://{}\"\n[[routes]]\nname = \"dead\"\npath = \"/v1/dead\"\nupstream = \"dead\"\ncost = 1\n",
        unused_addr().await
    );
    setup.extra = &extra;
    let gateway = TestGateway::start(&setup).await;
    let key = gateway.account_with_key("site-1", "free").await;
    let auth = format!("Bearer {key}");
    let client_headers = [
        ("authorization", auth.as_str()),
        ("x-api-key", key.as_str()),
        ("proxy-authorization", "Basic c2VjcmV0"),
        ("proxy-foo", "bar"),
        ("x-vendor-tenant", "client-chosen-tenant"),
    ];
    let paid = gateway.url("/v1/paid");
    let checks: Vec<(&str, Behavior, &str)> = vec![
        ("success", Behavior::Ok, "/v1/paid"),
        ("upstream 5xx", Behavior::Status(500), "/v1/paid"),
        ("upstream 4xx", Behavior::Status(403), "/v1/paid"),
        (
            "timeout",
            Behavior::Delay(Duration::from_secs(1)),
            "/v1/paid",
        ),
        ("unreachable", Behavior::Ok, "/v1/dead"),
        ("not found", Behavior::Ok, "/v1/nothing"),
    ];
    // Requests answered with a gateway or vendor 5xx: refunded.
    let mut refunded = std::collections::HashSet::new();
    for (what, behavior, path) in checks {
        upstream.set_behavior(behavior);
        let response = gateway
            .client
            .post(&gateway.url(path), &client_headers, "x")
            .await;
        assert_clean(&response, &key, what);
        if response.status >= 500 {
            refunded.insert(response.header("x-request-id").unwrap().to_owned());
        }
    }
    let wrong_method = gateway.client.get(&paid, &client_headers).await;
    assert_eq!(wrong_method.status, 405);
    assert_clean(&wrong_method, &key, "405");
    let too_large = gateway
        .client
        .post(&paid, &client_headers, vec![b'x'; 4096])
        .await;
    assert_eq!(too_large.status, 413);
    assert_clean(&too_large, &key, "413");
    upstream.set_behavior(Behavior::Ok);
    let mut tally = Tally::default();
    for _ in 0..20 {
        let response = gateway.client.post(&paid, &client_headers, "x").await;
        assert_clean(&response, &key, "200 or 429");
        tally.add(response.status);
    }
    // 100 credits: 7 each, the success and the 4xx came first.
    assert_eq!((tally.count(200), tally.count(429)), (12, 8), "{tally}");
    let view = gateway.ledger_view(&["site-1"]).await;
    assert_ledger_matches_vendors(&view, &[&upstream], |request| match request.path() {
        "/v1/paid" if !refunded.contains(request.request_id()) => 7,
        _ => 0,
    });
    let unknown = gateway
        .client
        .post(&paid, &[("authorization", "Bearer cg_unknown")], "x")
        .await;
    assert_eq!(unknown.status, 401);
    assert!(!unknown.text().contains("cg_unknown"));

    for request in upstream.requests() {
        assert_eq!(
            request.header_all("authorization"),
            vec![format!("Bearer {VENDOR_KEY}").as_str()]
        );
        assert_eq!(request.header_all("x-vendor-tenant"), vec!["creditgate"]);
        for (name, value) in &request.headers {
            assert!(
                !value.contains(&key),
                "client key reached the vendor in {name}"
            );
            assert!(!name.starts_with("proxy-"), "{name} reached the vendor");
            assert_ne!(name, "x-api-key");
        }
    }
}
