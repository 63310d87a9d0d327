//! A raw-socket corpus of malformed or ambiguous HTTP/1.1 requests, each
//! followed on the same connection by a pipelined canary. Whatever the
//! gateway does with the first request, the vendor must never see a smuggled
//! request, both framing headers, a body framed differently from its
//! `Content-Length`, or a host the client chose.

use crate::support::gateway::{Setup, TestGateway};
use crate::support::http::raw_exchange_until_closed;
use crate::support::money::{assert_ledger_matches_vendors, by_path};
use crate::support::upstream::RecordingUpstream;

const CANARY_ROUTE: &str = r#"
[[routes]]
name = "canary"
method = "GET"
path = "/v1/canary/*"
upstream = "vendor"
cost = 0
"#;

/// What must become of a corpus case.
#[derive(Debug, Clone)]
enum Expect {
    /// A consistently framed request: it reaches the vendor once, whole,
    /// with exactly this body, and is charged; the pipelined canary after it
    /// is served, unless the connection must close (both framing headers).
    Forward { body: String, canary: bool },
    /// Refused with a 400 before anything reaches the vendor. After a
    /// framing error the connection closes (the bytes after it cannot be
    /// trusted, so the canary is never served); after a refused request
    /// target it may go on.
    Refuse { canary: bool },
}

use Expect::{Forward, Refuse};

fn forward(body: &str, canary: bool) -> Expect {
    Forward {
        body: body.to_owned(),
        canary,
    }
}

const FRAMING_ERROR: Expect = Refuse { canary: false };

/// (name, request bytes before the canary, expectation). `AUTH` stands for
/// a valid `Authorization` header line.
fn corpus(auth: &str) -> Vec<(&'static str, String, Expect)> {
    // Nothing routes /v1/smuggled: if it ever reaches the vendor, a body was
    // read there as a request.
    let smuggled = "GET /v1/smuggled HTTP/1.1\r\nHost: x\r\nAUTH\r\n\r\n";
    let post = |headers: &str, body: &str| {
        format!("POST /v1/paid HTTP/1.1\r\nHost: x\r\nAUTH\r\n{headers}\r\n\r\n{body}")
    };
    let chunked_smuggle = format!("0\r\n\r\n{smuggled}");
    // Content-Length: 44 over a head with LF line ends: the body is the
    // first 44 bytes of the smuggled request, sent on as data.
    let first_44 = smuggled.replace("AUTH", auth)[..44].to_owned();
    vec![
        // Both framing headers: chunked wins, and the connection closes after.
        ("cl-te", post("Content-Length: 4\r\nTransfer-Encoding: chunked", &chunked_smuggle), forward("", false)),
        ("te-cl", post("Transfer-Encoding: chunked\r\nContent-Length: 4", &chunked_smuggle), forward("", false)),
        ("cl-cl-conflict", post("Content-Length: 0\r\nContent-Length: 44", smuggled), FRAMING_ERROR),
        ("cl-cl-same", post("Content-Length: 5\r\nContent-Length: 5", "hello"), forward("hello", true)),
        ("cl-list", post("Content-Length: 5, 44", smuggled), FRAMING_ERROR),
        ("cl-plus", post("Content-Length: +5", "hello"), FRAMING_ERROR),
        ("cl-negative", post("Content-Length: -1", smuggled), FRAMING_ERROR),
        ("cl-hex", post("Content-Length: 0x5", "hello"), FRAMING_ERROR),
        ("cl-space-inside", post("Content-Length: 1 0", smuggled), FRAMING_ERROR),
        ("cl-huge", post("Content-Length: 99999999999999999999999", smuggled), FRAMING_ERROR),
        ("te-chunked-identity", post("Transfer-Encoding: chunked, identity", &chunked_smuggle), FRAMING_ERROR),
        // Chunked is the final coding: the smuggled request is the next
        // request on the connection, answered by the gateway (404).
        ("te-identity-chunked", post("Transfer-Encoding: identity, chunked", &chunked_smuggle), forward("", true)),
        ("te-xchunked", post("Transfer-Encoding: xchunked", &chunked_smuggle), FRAMING_ERROR),
        ("te-space-before-colon", post("Transfer-Encoding : chunked", &chunked_smuggle), FRAMING_ERROR),
        ("te-tab", post("Transfer-Encoding:\tchunked", &chunked_smuggle), forward("", true)),
        ("te-vtab", post("Transfer-Encoding: \u{b}chunked", &chunked_smuggle), FRAMING_ERROR),
        ("te-uppercase", post("Transfer-Encoding: CHUNKED", &chunked_smuggle), forward("", true)),
        ("te-twice", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity", &chunked_smuggle), FRAMING_ERROR),
        ("te-quoted", post("Transfer-Encoding: \"chunked\"", &chunked_smuggle), FRAMING_ERROR),
        ("te-gzip-only", post("Transfer-Encoding: gzip", smuggled), FRAMING_ERROR),
        ("chunk-size-hex-prefix", post("Transfer-Encoding: chunked", &format!("0x5\r\nhello\r\n0\r\n\r\n{smuggled}")), FRAMING_ERROR),
        ("chunk-ext", post("Transfer-Encoding: chunked", "5;ext=1\r\nhello\r\n0\r\n\r\n"), forward("hello", true)),
        ("chunk-size-huge", post("Transfer-Encoding: chunked", &format!("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n{smuggled}")), FRAMING_ERROR),
        ("chunk-size-negative", post("Transfer-Encoding: chunked", &format!("-5\r\nhello\r\n0\r\n\r\n{smuggled}")), FRAMING_ERROR),
        ("chunk-missing-crlf", post("Transfer-Encoding: chunked", &format!("5\r\nhello0\r\n\r\n{smuggled}")), FRAMING_ERROR),
        ("chunk-size-too-short", post("Transfer-Encoding: chunked", &format!("2\r\nhello\r\n0\r\n\r\n{smuggled}")), FRAMING_ERROR),
        ("chunk-bare-lf", post("Transfer-Encoding: chunked", &format!("5\nhello\n0\n\n{smuggled}")), FRAMING_ERROR),
        // What follows the 44 bytes is not a request: 400, and the connection closes.
        ("bare-lf-head", format!("POST /v1/paid HTTP/1.1\nHost: x\nAUTH\nContent-Length: 44\n\n{smuggled}"), forward(&first_44, false)),
        ("obs-fold", post("X-Folded: a\r\n b\r\nContent-Length: 44", smuggled), FRAMING_ERROR),
        ("obs-fold-te", post("X-Folded: a\r\n Transfer-Encoding: chunked", &chunked_smuggle), FRAMING_ERROR),
        ("nul-in-value", post("X-Nul: a\0b\r\nContent-Length: 5", "hello"), FRAMING_ERROR),
        ("cr-in-value", post("X-Cr: a\rb\r\nContent-Length: 5", "hello"), FRAMING_ERROR),
        ("space-in-name", post("Content Length: 44", smuggled), FRAMING_ERROR),
        ("http10-te", format!("POST /v1/paid HTTP/1.0\r\nHost: x\r\nAUTH\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_smuggle}"), FRAMING_ERROR),
        // Well framed, refused by the gateway: the connection goes on.
        ("absolute-form", "GET http://evil.example/v1/free HTTP/1.1\r\nHost: evil.example\r\nAUTH\r\n\r\n".to_owned(), Refuse { canary: true }),
        ("absolute-form-https", "GET https://evil.example:443/v1/free HTTP/1.1\r\nHost: x\r\nAUTH\r\n\r\n".to_owned(), Refuse { canary: true }),
        ("authority-form", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nAUTH\r\n\r\n".to_owned(), Refuse { canary: true }),
        ("asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: x\r\nAUTH\r\n\r\n".to_owned(), Refuse { canary: true }),
        // Served as plain requests: upgrades are not performed, hosts are the gateway's.
        ("upgrade-h2c", "GET /v1/free HTTP/1.1\r\nHost: x\r\nAUTH\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n".to_owned(), forward("", true)),
        ("upgrade-websocket", "GET /v1/free HTTP/1.1\r\nHost: x\r\nAUTH\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_owned(), forward("", true)),
        ("host-missing", "GET /v1/free HTTP/1.1\r\nAUTH\r\n\r\n".to_owned(), forward("", true)),
        ("host-twice", "GET /v1/free HTTP/1.1\r\nHost: x\r\nHost: evil.example\r\nAUTH\r\n\r\n".to_owned(), forward("", true)),
        ("host-evil", "GET /v1/free HTTP/1.1\r\nHost: evil.example\r\nAUTH\r\n\r\n".to_owned(), forward("", true)),
        ("request-line-two-spaces", "GET  /v1/free HTTP/1.1\r\nHost: x\r\nAUTH\r\n\r\n".to_owned(), FRAMING_ERROR),
        ("request-line-tab", "GET\t/v1/free HTTP/1.1\r\nHost: x\r\nAUTH\r\n\r\n".to_owned(), FRAMING_ERROR),
        ("version-garbage", "GET /v1/free HTTP/9.9\r\nHost: x\r\nAUTH\r\n\r\n".to_owned(), FRAMING_ERROR),
        ("x-forwarded-host", "GET /v1/free HTTP/1.1\r\nHost: x\r\nX-Forwarded-Host: evil.example\r\nAUTH\r\n\r\n".to_owned(), forward("", true)),
        ("expect-continue-cl-te", post("Expect: 100-continue\r\nContent-Length: 4\r\nTransfer-Encoding: chunked", &chunked_smuggle), forward("", false)),
    ]
    .into_iter()
    .map(|(name, bytes, expect)| (name, bytes.replace("AUTH", auth), expect))
    .collect()
}

/// The status codes of every response in a raw HTTP/1 answer, in order.
fn statuses(answer: &str) -> Vec<u16> {
    answer
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| answer.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_is_smuggled_past_the_gateway() {
    let upstream = RecordingUpstream::start().await;
    let mut setup = Setup::new(&upstream.url());
    setup.extra = CANARY_ROUTE;
    let gateway = TestGateway::start(&setup).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let auth = format!("Authorization: Bearer {key}");
    let addr = gateway.running().data_addr;
    let cases = corpus(&auth);
    assert!(cases.len() >= 40, "corpus has {} cases", cases.len());
    let forwarded_cases = cases
        .iter()
        .filter(|(_, _, expect)| matches!(expect, Forward { .. }))
        .count();
    assert!(
        forwarded_cases >= 15,
        "a floor of cases that must get through"
    );

    // Each case's own request carries `?case=N` and its canary the path
    // /v1/canary/N, so the vendor's log says which case each came from.
    let mut exchanges = Vec::new();
    for (index, (name, first, expect)) in cases.into_iter().enumerate() {
        let tagged = first
            .replace("/v1/paid ", &format!("/v1/paid?case={index} "))
            .replace("/v1/free ", &format!("/v1/free?case={index} "));
        let canary = format!(
            "GET /v1/canary/{index} HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n"
        );
        let bytes = format!("{tagged}{canary}").into_bytes();
        exchanges.push(tokio::spawn(async move {
            // Every case ends with the connection closed by the gateway;
            // a hang fails here.
            let answer = raw_exchange_until_closed(addr, &bytes).await;
            (
                index,
                name,
                expect,
                String::from_utf8_lossy(&answer).into_owned(),
            )
        }));
    }
    let mut outcomes = Vec::new();
    for exchange in exchanges {
        outcomes.push(exchange.await.unwrap());
    }

    let seen = upstream.requests();
    let mut problems = Vec::new();
    for (index, name, expect, answer) in &outcomes {
        let tag = format!("case={index}");
        let own: Vec<_> = seen
            .iter()
            .filter(|r| r.uri.split('?').nth(1) == Some(tag.as_str()))
            .collect();
        let canary_served = seen.iter().any(|r| r.uri == format!("/v1/canary/{index}"));
        // The first final status (a 100 Continue may come before it).
        let first_status = statuses(answer).into_iter().find(|s| *s >= 200);
        assert!(
            !answer.contains("vendor-secret"),
            "{name}: vendor key in the answer"
        );
        let (canary_expected, verdict) = match expect {
            Forward { body, canary } => {
                let ok =
                    first_status == Some(200) && own.len() == 1 && own[0].body == body.as_bytes();
                (*canary, ok)
            }
            Refuse { canary } => (*canary, first_status == Some(400) && own.is_empty()),
        };
        if !verdict || canary_served != canary_expected {
            problems.push(format!(
                "{name}: expected {expect:?}; answered {:?}, vendor got {:?}, canary served: {canary_served}",
                statuses(answer),
                own.iter()
                    .map(|r| (r.uri.as_str(), String::from_utf8_lossy(&r.body)))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} cases went otherwise:\n{}",
        problems.len(),
        outcomes.len(),
        problems.join("\n")
    );

    let upstream_authority = upstream.addr().to_string();
    for request in &seen {
        assert!(
            !request.uri.contains("smuggled"),
            "smuggled request reached the vendor: {}",
            request.uri
        );
        assert!(
            !request.uri.starts_with("http"),
            "absolute-form reached the vendor: {}",
            request.uri
        );
        assert!(
            !(request.header("content-length").is_some()
                && request.header("transfer-encoding").is_some()),
            "both framing headers reached the vendor: {:?}",
            request.headers
        );
        assert_eq!(
            request.header_all("host"),
            vec![upstream_authority.as_str()],
            "client-chosen host"
        );
        for (name, value) in &request.headers {
            assert!(
                !value.contains("evil.example"),
                "{name}: {value} reached the vendor"
            );
        }
        // A body may hold text that looks like a request (a consistently
        // framed body is data, not a request); what matters is that the
        // vendor frames it exactly as the gateway did.
        if let Some(length) = request.header("content-length") {
            assert_eq!(
                length.parse::<usize>().ok(),
                Some(request.body.len()),
                "framing mismatch"
            );
        }
    }
    // Everything that reached the vendor came whole, and the ledger holds
    // exactly the paid ones among them.
    assert_eq!(upstream.reached(), seen.len(), "{}", upstream.summary());
    let view = gateway.ledger_view(&["site-1"]).await;
    assert_ledger_matches_vendors(&view, &[&upstream], by_path(&[("/v1/paid", 7)]));
    eprintln!(
        "smuggling corpus: {} cases, {forwarded_cases} forwarded and charged as expected, {} requests reached the vendor",
        outcomes.len(),
        seen.len()
    );
}
