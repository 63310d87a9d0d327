//! Path confusion and SSRF: the route that is charged is always the route
//! whose upstream receives the request, with the path it was matched on, and
//! an upstream no route exposes (the sinkhole) receives nothing.

use std::time::Duration;

use crate::support::gateway::{Setup, TestGateway};
use crate::support::http::raw_exchange;
use crate::support::upstream::RecordingUpstream;

fn routes(b_url: &str, sinkhole_url: &str) -> String {
    format!(
        r#"
[upstreams.vendor_b]
url = "{b_url}"
[upstreams.sinkhole]
url = "{sinkhole_url}"

[[routes]]
name = "route-a"
path = "/v1/a/*"
upstream = "vendor"
cost = 1

[[routes]]
name = "route-b"
path = "/v1/b/*"
upstream = "vendor_b"
cost = 2
"#
    )
}

const CASES: &[&str] = &[
    "/v1/a/x",
    "/v1/b/x",
    "/v1/a/../b/x",
    "/v1/a/./x/../y",
    "/v1//a//x",
    "/v1/a/%2e%2e/b/x",
    "/v1/a/%2E%2e/b/x",
    "/v1/a/.%2e/b/x",
    "/v1/a/%2fb/x",
    "/v1/a/%2F..%2Fb",
    "/v1/a/%5c../b",
    "/v1/a\\..\\b",
    "/v1/a/..;/b/x",
    "/v1/a/.;/x",
    "/v1/a/%3b/x",
    "//sinkhole/v1/a/x",
    "/http://127.0.0.1/internal",
    "/v1/a/http://evil.example/",
    "/@evil.example/v1/a/x",
    "/v1/a/x@evil.example",
    "/v1/a/%00",
    "/v1/a/x%00.json",
    "/V1/A/x",
    "/v1/A/x",
    "/v1/a/%252e%252e/b",
    "/v1/a/%25%32%65",
    "/v1/a/../../v1/b/x",
    "/v1/a/../../../etc/passwd",
    "/..",
    "/v1/a/x/..%2f..%2fb",
    "/v1/a/%u002e%u002e/b",
    "/v1/a/x?next=/v1/b/y",
    "/v1/a/x#/../b",
    "/v1/%61/x",
    "/v1/b/../a/x",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charged_route_is_the_route_that_reached_its_upstream() {
    let vendor_a = RecordingUpstream::start().await;
    let vendor_b = RecordingUpstream::start().await;
    let sinkhole = RecordingUpstream::start().await;
    let extra = routes(&vendor_b.url(), &sinkhole.url());
    let mut setup = Setup::new(&vendor_a.url());
    setup.extra = &extra;
    let gateway = TestGateway::start(&setup).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let auth = format!("Authorization: Bearer {key}");
    assert!(CASES.len() >= 30, "{}", CASES.len());

    let mut forwarded = 0;
    for path in CASES {
        let (seen_a, seen_b) = (vendor_a.count(), vendor_b.count());
        // Raw bytes: the path arrives exactly as written.
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(
            gateway.running().data_addr,
            request.as_bytes(),
            Duration::from_secs(3),
        )
        .await;
        let answer = String::from_utf8_lossy(&answer);
        let status: u16 = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (a_grew, b_grew) = (vendor_a.count() - seen_a, vendor_b.count() - seen_b);
        assert!(
            a_grew + b_grew <= 1,
            "{path}: one request forwarded at most"
        );
        if status == 200 {
            forwarded += 1;
            let (upstream, route, cost) = if a_grew == 1 {
                (&vendor_a, "route-a", 1)
            } else {
                assert_eq!(b_grew, 1, "{path}: 200 but no upstream got it");
                (&vendor_b, "route-b", 2)
            };
            let received = upstream.requests().last().unwrap().uri.clone();
            let received_path = received.split('?').next().unwrap();
            let prefix = if route == "route-a" {
                "/v1/a/"
            } else {
                "/v1/b/"
            };
            assert!(
                received_path.starts_with(prefix),
                "{path}: {route} delivered {received}"
            );
            assert!(!received_path.contains(".."), "{path}: {received}");
            assert_eq!(
                creditgate::path::normalize(received_path).as_deref(),
                Ok(received_path),
                "{path}: the vendor got a normalised path"
            );
            // Debits in the same millisecond tie; find this one by its id.
            let request_id = answer
                .lines()
                .find_map(|line| line.strip_prefix("x-request-id: "))
                .expect("x-request-id")
                .trim()
                .to_owned();
            let history = gateway
                .admin_get("/admin/v1/accounts/site-1/history?limit=500")
                .await
                .json();
            let item = history["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|item| item["request_id"] == request_id.as_str())
                .unwrap_or_else(|| panic!("{path}: no debit for {request_id}"))
                .clone();
            assert_eq!(item["route"], route, "{path}: charged route");
            assert_eq!(item["cost"], cost, "{path}");
        } else {
            assert_eq!(
                a_grew + b_grew,
                0,
                "{path}: answered {status} but forwarded"
            );
            assert!(
                matches!(status, 400 | 404),
                "{path}: unexpected {status}: {answer}"
            );
        }
    }
    assert_eq!(sinkhole.count(), 0, "the sinkhole received a request");
    let charged: u64 = gateway.used("site-1").await;
    let expected: u64 = vendor_a.count() as u64 + 2 * vendor_b.count() as u64;
    assert_eq!(charged, expected, "ledger == Σ cost of forwarded requests");
    eprintln!(
        "path corpus: {} cases, {forwarded} forwarded, the rest refused",
        CASES.len()
    );
}
