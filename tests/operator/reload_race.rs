//! SIGHUP reloads racing requests: each request is served by one whole
//! config, old or new, never a mix. Two configs differ in both routes'
//! prices, in the upstream's base path and in a header injected upstream,
//! so a request priced by one and forwarded by the other shows up as a
//! vendor view and a charge from different configs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::support::http::{Response, TestClient};
use crate::support::money::{assert_ledger_matches_vendors, Tally};
use crate::support::process::{GatewayProcess, TempDir};
use crate::support::upstream::{RecordedRequest, RecordingUpstream};
use crate::support::wait::wait_until;

const TOKEN: &str = "reload-token";

/// A price book: its name (the upstream's base path and injected header)
/// and the cost of routes x and y.
struct Book {
    name: &'static str,
    x: u64,
    y: u64,
}

const BOOKS: [Book; 2] = [
    Book {
        name: "a",
        x: 3,
        y: 5,
    },
    Book {
        name: "b",
        x: 4,
        y: 8,
    },
];

fn config(upstream: &str, book: &Book) -> String {
    format!(
        r#"
[server]
listen = "{{DATA}}"
[admin]
listen = "{{ADMIN}}"
token = "{TOKEN}"
[plans.big]
monthly_allowance = 1000000
[upstreams.vendor]
url = "{upstream}/{name}"
headers = {{ X-Price-Book = "{name}" }}
[[routes]]
name = "x"
path = "/v1/x"
upstream = "vendor"
cost = {x}
[[routes]]
name = "y"
path = "/v1/y"
upstream = "vendor"
cost = {y}
"#,
        name = book.name,
        x = book.x,
        y = book.y,
    )
}

/// The book a vendor request was forwarded under, checked for consistency:
/// its base path and its injected header must name the same book.
fn book_of(request: &RecordedRequest) -> Result<&'static Book, String> {
    let by_header = request.header("x-price-book");
    let by_path = request.path().split('/').nth(1);
    match BOOKS.iter().find(|book| Some(book.name) == by_header) {
        Some(book) if by_path == Some(book.name) => Ok(book),
        _ => Err(format!(
            "{} {} with X-Price-Book {by_header:?}: two configs in one request",
            request.method, request.uri
        )),
    }
}

/// What the request costs under the book it was forwarded by.
fn price(request: &RecordedRequest) -> u64 {
    let book = book_of(request).unwrap_or_else(|mix| panic!("{mix}"));
    match request.path().rsplit('/').next() {
        Some("x") => book.x,
        Some("y") => book.y,
        other => panic!("unexpected path {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_request_sees_one_whole_config_while_sighup_reloads_race_it() {
    const RELOADS: usize = 20;
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("reload-race");
    let gateway = Arc::new(GatewayProcess::start(
        &dir,
        &config(&upstream.url(), &BOOKS[0]),
        &[],
    ));
    let client = TestClient::new();
    let admin = [("authorization", format!("Bearer {TOKEN}"))];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let put = client
        .put_json(
            &gateway.admin_url("/admin/v1/accounts/site-1"),
            &admin,
            serde_json::json!({"plan": "big"}),
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

    // Four clients, each alternating routes x and y, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client_index in 0..4 {
        let (gateway, key, stop) = (gateway.clone(), key.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let client = TestClient::new();
            let mut responses: Vec<Response> = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let route = if (i + client_index) % 2 == 0 {
                    "x"
                } else {
                    "y"
                };
                responses.push(
                    client
                        .post_as(&key, &gateway.url(&format!("/v1/{route}")), "r")
                        .await,
                );
            }
            responses
        }));
    }

    // Flip between the books while the clients run, each reload applied
    // (counted in the metrics) before the next, each book serving a while.
    for reload in 1..=RELOADS {
        let book = &BOOKS[reload % 2];
        let staged = dir.write("next.toml", &config(&upstream.url(), book));
        let live = gateway.config_path.clone();
        let data = format!("127.0.0.1:{}", gateway.data_port);
        let admin_addr = format!("127.0.0.1:{}", gateway.admin_port);
        // The process reads the file with {DATA}/{ADMIN} already filled in.
        let text = std::fs::read_to_string(&staged)
            .unwrap()
            .replace("{DATA}", &data)
            .replace("{ADMIN}", &admin_addr);
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &live).unwrap();
        let served_before = upstream.count();
        gateway.signal("HUP");
        wait_until(&format!("reload {reload} to apply"), async || {
            let applied = gateway
                .metrics()
                .await
                .counter("creditgate_config_reloads_total{result=\"success\"}");
            let failed = gateway
                .metrics()
                .await
                .counter("creditgate_config_reloads_total{result=\"error\"}");
            assert_eq!(failed, 0.0, "a reload was rejected:\n{}", gateway.logs());
            match applied as usize {
                n if n == reload => Ok(()),
                n => Err(format!("{n} reloads applied")),
            }
        })
        .await;
        wait_until("a few requests to reach the vendor", async || {
            match upstream.count() - served_before {
                n if n >= 8 => Ok(()),
                n => Err(format!("{n} since the reload")),
            }
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut responses = Vec::new();
    for client in clients {
        responses.extend(client.await.unwrap());
    }

    // Every request: one book for its vendor view, and the same book's
    // price on its response.
    let tally: Tally = responses.iter().map(|r| r.status).collect();
    assert_eq!(tally.others(&[200]), 0, "statuses {tally}");
    let received = upstream.requests();
    let mut mixes = Vec::new();
    let mut per_book = [0usize; 2];
    for response in &responses {
        let id = response.header("x-request-id").unwrap();
        let request = received
            .iter()
            .find(|r| r.request_id() == id)
            .unwrap_or_else(|| panic!("{id} never reached the vendor"));
        let cost: u64 = response.header("x-credits-cost").unwrap().parse().unwrap();
        match book_of(request) {
            Err(mix) => mixes.push(mix),
            Ok(book) if cost != price(request) => mixes.push(format!(
                "{id}: forwarded under book {} ({}), charged {cost}",
                book.name, request.uri
            )),
            Ok(book) => per_book[usize::from(book.name == "b")] += 1,
        }
    }
    assert!(
        mixes.is_empty(),
        "{} of {} requests mixed two configs:\n{}",
        mixes.len(),
        responses.len(),
        mixes.join("\n")
    );
    assert!(
        per_book[0] >= 20 && per_book[1] >= 20,
        "both books served: {per_book:?}"
    );
    assert_eq!(
        upstream.reached(),
        responses.len(),
        "{}",
        upstream.summary()
    );
    // And the ledger charged each request its own book's price.
    let view = gateway.ledger_view(TOKEN, &["site-1"]).await;
    assert_ledger_matches_vendors(&view, &[&upstream], price);
    eprintln!(
        "reload race: {RELOADS} reloads, {} requests ({} under book a, {} under b)",
        responses.len(),
        per_book[0],
        per_book[1]
    );
}
