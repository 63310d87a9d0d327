//! Path confusion and SSRF: the route that is charged is always the route
//! whose upstream receives the request, with the path it was matched on, and
//! an upstream no route exposes (the sinkhole) receives nothing.

use crate::support::gateway::{Setup, TestGateway};
use crate::support::http::raw_exchange_until_closed;
use crate::support::money::{assert_ledger_matches_vendors, by_request_id};
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

/// What must become of a request path.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Routed to route-a (vendor A, 1 credit) and forwarded as this target.
    A(&'static str),
    /// Routed to route-b (vendor B, 2 credits) and forwarded as this target.
    B(&'static str),
    /// Refused with this status; nothing forwarded.
    Refused(u16),
}

use Expect::{Refused, A, B};

/// Every case with its one right outcome: both what must get through (and
/// where, at what price) and what must not.
const CASES: &[(&str, Expect)] = &[
    ("/v1/a/x", A("/v1/a/x")),
    ("/v1/b/x", B("/v1/b/x")),
    ("/v1/a/../b/x", B("/v1/b/x")),
    ("/v1/a/./x/../y", A("/v1/a/y")),
    ("/v1//a//x", A("/v1/a/x")),
    ("/v1/a/%2e%2e/b/x", Refused(400)),
    ("/v1/a/%2E%2e/b/x", Refused(400)),
    ("/v1/a/.%2e/b/x", Refused(400)),
    ("/v1/a/%2fb/x", Refused(400)),
    ("/v1/a/%2F..%2Fb", Refused(400)),
    ("/v1/a/%5c../b", Refused(400)),
    ("/v1/a\\..\\b", Refused(400)),
    ("/v1/a/..;/b/x", Refused(400)),
    ("/v1/a/.;/x", Refused(400)),
    ("/v1/a/%3b/x", A("/v1/a/%3B/x")),
    ("//sinkhole/v1/a/x", Refused(404)),
    ("/http://127.0.0.1/internal", Refused(404)),
    ("/v1/a/http://evil.example/", A("/v1/a/http:/evil.example/")),
    ("/@evil.example/v1/a/x", Refused(404)),
    ("/v1/a/x@evil.example", A("/v1/a/x@evil.example")),
    ("/v1/a/%00", Refused(400)),
    ("/v1/a/x%00.json", Refused(400)),
    ("/V1/A/x", Refused(404)),
    ("/v1/A/x", Refused(404)),
    ("/v1/a/%252e%252e/b", Refused(400)),
    ("/v1/a/%25%32%65", Refused(400)),
    ("/v1/a/../../v1/b/x", B("/v1/b/x")),
    ("/v1/a/../../../etc/passwd", Refused(400)),
    ("/..", Refused(400)),
    ("/v1/a/x/..%2f..%2fb", Refused(400)),
    ("/v1/a/%u002e%u002e/b", Refused(400)),
    ("/v1/a/x?next=/v1/b/y", A("/v1/a/x?next=/v1/b/y")),
    // The fragment never travels (hyper drops it from the target).
    ("/v1/a/x#/../b", A("/v1/a/x")),
    ("/v1/%61/x", A("/v1/a/x")),
    ("/v1/b/../a/x", A("/v1/a/x")),
    // Unreserved encodings are decoded, others kept with upper-case hex.
    ("/v1/b/%7ex", B("/v1/b/~x")),
    ("/v1/a/caf%c3%a9", A("/v1/a/caf%C3%A9")),
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
    let must_forward = CASES
        .iter()
        .filter(|(_, expect)| !matches!(expect, Refused(_)))
        .count();
    assert!(must_forward >= 14, "a floor of paths that must get through");

    let mut problems = Vec::new();
    let mut charged = std::collections::HashMap::new();
    for (path, expect) in CASES {
        let (seen_a, seen_b) = (vendor_a.reached(), vendor_b.reached());
        // Raw bytes: the path arrives exactly as written.
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n");
        let answer =
            raw_exchange_until_closed(gateway.running().data_addr, request.as_bytes()).await;
        let answer = String::from_utf8_lossy(&answer);
        let status: u16 = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (a_grew, b_grew) = (vendor_a.reached() - seen_a, vendor_b.reached() - seen_b);
        let received = |vendor: &RecordingUpstream| vendor.requests().last().map(|r| r.uri.clone());
        let outcome = match (status, a_grew, b_grew) {
            (200, 1, 0) => format!("A {:?}", received(&vendor_a)),
            (200, 0, 1) => format!("B {:?}", received(&vendor_b)),
            (status, 0, 0) => format!("refused {status}"),
            (status, a, b) => format!("{status} with {a} to A and {b} to B"),
        };
        let (wanted, route, cost) = match expect {
            A(target) => (format!("A {:?}", Some(target)), "route-a", 1),
            B(target) => (format!("B {:?}", Some(target)), "route-b", 2),
            Refused(status) => (format!("refused {status}"), "", 0),
        };
        if outcome != wanted {
            problems.push(format!("{path:?}: expected {wanted}, got {outcome}"));
            continue;
        }
        if cost == 0 {
            continue;
        }
        let received_path = match expect {
            A(target) | B(target) => target.split('?').next().unwrap(),
            Refused(_) => unreachable!(),
        };
        assert!(!received_path.contains(".."), "{path}: {received_path}");
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
        let view = gateway.ledger_view(&["site-1"]).await;
        let debit = view
            .debits
            .iter()
            .find(|debit| debit.request_id == request_id)
            .unwrap_or_else(|| panic!("{path}: no debit for {request_id}"));
        assert_eq!(
            (debit.route.as_str(), debit.cost),
            (route, cost),
            "{path}: charged route"
        );
        charged.insert(request_id, cost);
    }
    assert!(
        problems.is_empty(),
        "{} of {} paths went otherwise:\n{}",
        problems.len(),
        CASES.len(),
        problems.join("\n")
    );
    assert_eq!(sinkhole.reached(), 0, "the sinkhole received a request");
    let view = gateway.ledger_view(&["site-1"]).await;
    assert_ledger_matches_vendors(&view, &[&vendor_a, &vendor_b], by_request_id(&charged));
    eprintln!(
        "path corpus: {} cases, {must_forward} forwarded to the right vendor and charged, the rest refused",
        CASES.len()
    );
}
