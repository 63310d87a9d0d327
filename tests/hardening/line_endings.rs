//! Bare LF as an HTTP/1 line terminator (see "HTTP/1 line endings" in
//! `docs/operations.md`): the gateway reads `\n` as the end of a line
//! everywhere in a head — framing headers included — exactly as RFC 9112
//! §2.2 allows and as hyper's parser does, and re-serialises every header
//! it forwards with CRLF. These tests send heads with bare LFs and check,
//! on the bytes a vendor receives, that no client gets to smuggle its
//! credentials, override an injected header, or frame a request one way
//! for the gateway and another for the vendor.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::gateway::{Setup, TestGateway, VENDOR_KEY};
use crate::support::http::raw_exchange;

/// One request exactly as it arrived at the vendor.
#[derive(Debug, Clone)]
struct Wire {
    head: String,
    body: Vec<u8>,
}

impl Wire {
    fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }

    /// Header lines, split on CRLF only, names lower-cased.
    fn headers(&self) -> Vec<(String, String)> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, value) = line.split_once(':').expect("name: value");
                (name.to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect()
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect()
    }
}

/// A vendor that keeps the raw bytes of every request head it receives.
struct RawVendor {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Wire>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawVendor {
    async fn start() -> RawVendor {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve_raw(stream, seen.clone()));
                }
            }
        });
        RawVendor { addr, seen, task }
    }

    fn seen(&self) -> Vec<Wire> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RawVendor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads requests framed by Content-Length or chunked encoding (as the
/// gateway's client sends them) and answers each `200 ok`.
async fn serve_raw(mut stream: TcpStream, seen: Arc<Mutex<Vec<Wire>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end + 4);
        let wire_head = Wire {
            head: head.clone(),
            body: Vec::new(),
        };
        let length = wire_head
            .all("content-length")
            .first()
            .and_then(|v| v.parse::<usize>().ok());
        let chunked = wire_head
            .all("transfer-encoding")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            let Some(end) = read_until(&mut stream, &mut buf, b"0\r\n\r\n").await else {
                return;
            };
            let raw: Vec<u8> = buf.drain(..end + 5).collect();
            dechunk(&raw)
        } else {
            let length = length.unwrap_or(0);
            while buf.len() < length {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..length).collect()
        };
        seen.lock().unwrap().push(Wire { head, body });
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Reads until `needle` is in `buf`; returns its offset.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(needle.len()).position(|w| w == needle) {
            return Some(at);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(
            std::str::from_utf8(&raw[..line_end])
                .unwrap()
                .split(';')
                .next()
                .unwrap(),
            16,
        )
        .expect("hex size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

struct Fixture {
    vendor: RawVendor,
    gateway: TestGateway,
    key: String,
}

impl Fixture {
    async fn start() -> Fixture {
        let vendor = RawVendor::start().await;
        let gateway = TestGateway::start(&Setup::new(&format!("http://{}", vendor.addr))).await;
        let key = gateway.account_with_key("site-1", "pro").await;
        Fixture {
            vendor,
            gateway,
            key,
        }
    }

    /// Sends raw bytes (`KEY` replaced by the client's key) on one
    /// connection; returns the status codes the gateway answered, in order.
    async fn send(&self, raw: &str) -> Vec<u16> {
        let bytes = raw.replace("KEY", &self.key);
        let answer = raw_exchange(
            self.gateway.running().data_addr,
            bytes.as_bytes(),
            Duration::from_secs(3),
        )
        .await;
        String::from_utf8_lossy(&answer)
            .match_indices("HTTP/1.1 ")
            .filter_map(|(at, _)| {
                let text = String::from_utf8_lossy(&answer[at + 9..]).into_owned();
                text.get(..3).and_then(|code| code.parse().ok())
            })
            .collect()
    }

    async fn used(&self) -> u64 {
        self.gateway.used("site-1").await
    }
}

/// Every line the vendor got ends in CRLF: no bare LF (or CR) survives.
fn assert_crlf_only(wire: &Wire) {
    let head = wire.head.as_bytes();
    for (at, byte) in head.iter().enumerate() {
        match byte {
            b'\n' => assert!(
                at > 0 && head[at - 1] == b'\r',
                "bare LF forwarded: {:?}",
                wire.head
            ),
            b'\r' => assert_eq!(
                head.get(at + 1),
                Some(&b'\n'),
                "bare CR forwarded: {:?}",
                wire.head
            ),
            _ => {}
        }
    }
}

fn assert_only_vendor_credentials(wire: &Wire, key: &str) {
    assert!(
        !wire.head.contains(key),
        "the client's key reached the vendor: {:?}",
        wire.head
    );
    assert_eq!(
        wire.all("authorization"),
        vec![format!("Bearer {VENDOR_KEY}")],
        "{:?}",
        wire.head
    );
    assert!(wire.all("x-api-key").is_empty(), "{:?}", wire.head);
    assert!(wire.all("cookie").is_empty(), "{:?}", wire.head);
    assert_eq!(
        wire.all("x-vendor-tenant"),
        vec!["creditgate".to_owned()],
        "{:?}",
        wire.head
    );
}

#[tokio::test]
async fn a_bare_lf_ends_a_header_line_and_the_vendor_gets_crlf_lines() {
    let fixture = Fixture::start().await;
    let statuses = fixture
        .send(
            "GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n\
             X-Request-Id: a\nInjected: b\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(statuses, vec![200]);
    let seen = fixture.vendor.seen();
    assert_eq!(seen.len(), 1);
    let wire = &seen[0];
    assert_crlf_only(wire);
    // Two header lines, exactly as if the client had sent CRLF.
    assert_eq!(wire.all("x-request-id"), vec!["a".to_owned()]);
    assert_eq!(wire.all("injected"), vec!["b".to_owned()]);
    assert_only_vendor_credentials(wire, &fixture.key);
}

#[tokio::test]
async fn a_head_with_only_bare_lfs_is_one_request_and_the_next_is_the_next() {
    let fixture = Fixture::start().await;
    let statuses = fixture
        .send(
            "POST /v1/paid HTTP/1.1\nHost: x\nAuthorization: Bearer KEY\nContent-Length: 5\n\nhello\
             POST /v1/paid HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\nContent-Length: 3\r\n\
             Connection: close\r\n\r\nbye",
        )
        .await;
    assert_eq!(statuses, vec![200, 200]);
    let seen = fixture.vendor.seen();
    let bodies: Vec<&[u8]> = seen.iter().map(|w| w.body.as_slice()).collect();
    assert_eq!(bodies, vec![&b"hello"[..], &b"bye"[..]]);
    for wire in &seen {
        assert_eq!(wire.request_line(), "POST /v1/paid HTTP/1.1");
        assert_crlf_only(wire);
        assert_only_vendor_credentials(wire, &fixture.key);
    }
    // Two requests answered, two forwarded, two charged.
    assert_eq!(fixture.used().await, 14);
}

#[tokio::test]
async fn credentials_behind_a_bare_lf_are_credentials_and_never_forwarded() {
    let fixture = Fixture::start().await;
    for credentials in [
        "X-Hide: a\nAuthorization: Bearer KEY",
        "X-Hide: a\nX-Api-Key: KEY",
        "Authorization: Bearer KEY\r\nX-Hide: a\nCookie: session=KEY",
        "Authorization: Bearer KEY\r\nX-Hide: a\nProxy-Authorization: Basic KEY",
    ] {
        let statuses = fixture
            .send(&format!(
                "GET /v1/free HTTP/1.1\r\nHost: x\r\n{credentials}\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert_eq!(statuses, vec![200], "{credentials}");
    }
    let seen = fixture.vendor.seen();
    assert_eq!(seen.len(), 4);
    for wire in &seen {
        assert_crlf_only(wire);
        assert_only_vendor_credentials(wire, &fixture.key);
    }
}

#[tokio::test]
async fn injected_headers_cannot_be_replaced_or_stripped_through_a_bare_lf() {
    let fixture = Fixture::start().await;
    for attempt in [
        "X-Hide: a\nX-Vendor-Tenant: evil",
        "X-Hide: a\nAuthorization: Bearer evil-vendor-key\r\nX-Api-Key: KEY",
        // A `Connection` header naming an injected header must not remove it.
        "X-Hide: a\nConnection: X-Vendor-Tenant, Authorization",
        "X-Hide: a\nHost: evil.example",
        "X-Hide: a\nX-Forwarded-For: 203.0.113.9\nX-Forwarded-Host: evil.example",
    ] {
        let statuses = fixture
            .send(&format!(
                "GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n{attempt}\r\n\
                 Connection: close\r\n\r\n"
            ))
            .await;
        // One answer; a second `Authorization` is an ambiguous credential
        // the gateway may refuse — either way nothing of it is forwarded.
        assert_eq!(statuses.len(), 1, "{attempt}: {statuses:?}");
    }
    let seen = fixture.vendor.seen();
    assert!(seen.len() >= 4, "{} forwarded", seen.len());
    for wire in &seen {
        assert_crlf_only(wire);
        assert_only_vendor_credentials(wire, &fixture.key);
        assert!(!wire.head.contains("evil"), "{:?}", wire.head);
        assert!(!wire.head.contains("203.0.113.9"), "{:?}", wire.head);
        assert_eq!(wire.all("host"), vec![fixture.vendor.addr.to_string()]);
    }
}

#[tokio::test]
async fn framing_headers_behind_a_bare_lf_frame_the_request_for_gateway_and_vendor_alike() {
    let fixture = Fixture::start().await;
    let smuggled = "GET /v1/smuggled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n\r\n";
    let smuggled_len = smuggled.replace("KEY", &fixture.key).len();
    let canary = "GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\nConnection: close\r\n\r\n";
    let body = smuggled.replace("KEY", &fixture.key).into_bytes();
    // (case, raw bytes, the body the vendor gets for the POST, or None when
    // the POST is refused).
    let cases: [(&str, String, Option<&[u8]>); 5] = [
        // A Content-Length on a bare-LF line frames the body: the text that
        // looks like a request is body data for the gateway and the vendor.
        (
            "content-length",
            format!(
                "POST /v1/paid HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n\
                 X-Hide: a\nContent-Length: {smuggled_len}\r\n\r\n{smuggled}{canary}"
            ),
            Some(&body),
        ),
        (
            "transfer-encoding",
            format!(
                "POST /v1/paid HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n\
                 X-Hide: a\nTransfer-Encoding: chunked\r\n\r\n\
                 {smuggled_len:x}\r\n{smuggled}\r\n0\r\n\r\n{canary}"
            ),
            Some(&body),
        ),
        // Both framing headers, one behind a bare LF: chunked wins (RFC 9112
        // §6.3), the body is empty, and the connection closes after the
        // answer, so what follows is never read as a request.
        (
            "content-length + hidden transfer-encoding",
            format!(
                "POST /v1/paid HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n\
                 Content-Length: 4\r\nX-Hide: a\nTransfer-Encoding: chunked\r\n\r\n\
                 0\r\n\r\n{smuggled}{canary}"
            ),
            Some(b""),
        ),
        // Two different lengths, one behind a bare LF: refused.
        (
            "conflicting content-lengths",
            format!(
                "POST /v1/paid HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n\
                 Content-Length: 0\r\nX-Hide: a\nContent-Length: {smuggled_len}\r\n\r\n{smuggled}{canary}"
            ),
            None,
        ),
        // The end of the head spelled with bare LFs.
        (
            "bare-lf end of head",
            format!(
                "POST /v1/paid HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n\
                 Content-Length: {smuggled_len}\n\n{smuggled}{canary}"
            ),
            Some(&body),
        ),
    ];
    let mut answered = 0;
    for (name, raw, expected_body) in &cases {
        let before = fixture.vendor.seen().len();
        let statuses = fixture.send(raw).await;
        let seen = fixture.vendor.seen();
        let forwarded = &seen[before..];
        eprintln!(
            "{name}: answered {statuses:?}; the vendor got {:?}",
            forwarded.iter().map(Wire::request_line).collect::<Vec<_>>()
        );
        answered += statuses.len();
        match expected_body {
            Some(expected) => {
                assert_eq!(statuses.first(), Some(&200), "{name}: {statuses:?}");
                let post = forwarded
                    .iter()
                    .find(|w| w.request_line().starts_with("POST /v1/paid"))
                    .unwrap_or_else(|| panic!("{name}: the POST was not forwarded"));
                assert_eq!(
                    post.body, *expected,
                    "{name}: the body as the gateway framed it"
                );
            }
            None => {
                assert_eq!(statuses, vec![400], "{name}");
                assert!(forwarded.is_empty(), "{name}: forwarded {forwarded:?}");
            }
        }
        // Whatever follows the POST is the canary or nothing at all.
        for wire in forwarded
            .iter()
            .filter(|w| !w.request_line().starts_with("POST"))
        {
            assert_eq!(wire.request_line(), "GET /v1/free HTTP/1.1", "{name}");
        }
        assert_eq!(
            forwarded.len(),
            statuses.iter().filter(|s| **s == 200).count(),
            "{name}"
        );
    }
    let seen = fixture.vendor.seen();
    for wire in &seen {
        assert_crlf_only(wire);
        assert_only_vendor_credentials(wire, &fixture.key);
        assert!(
            !wire.request_line().contains("smuggled"),
            "a smuggled request reached the vendor: {:?}",
            wire.head
        );
        assert!(
            wire.all("content-length").is_empty() || wire.all("transfer-encoding").is_empty(),
            "both framing headers forwarded: {:?}",
            wire.head
        );
        if let Some(length) = wire.all("content-length").first() {
            assert_eq!(
                length.parse::<usize>().ok(),
                Some(wire.body.len()),
                "{:?}",
                wire.head
            );
        }
    }
    // Every request the vendor saw is one the gateway answered, and every
    // POST it saw was charged.
    assert!(
        seen.len() <= answered,
        "{} forwarded, {answered} answered",
        seen.len()
    );
    let paid = seen
        .iter()
        .filter(|w| w.request_line().starts_with("POST /v1/paid"))
        .count();
    assert_eq!(fixture.used().await, 7 * paid as u64);
}

#[tokio::test]
async fn a_lone_cr_is_never_a_line_ending() {
    let fixture = Fixture::start().await;
    let statuses = fixture
        .send(
            "GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n\
             X-Hide: a\rInjected: b\r\n\r\n",
        )
        .await;
    assert_eq!(statuses, vec![400]);
    let folded = fixture
        .send(
            "GET /v1/free HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\r\n\
             X-Folded: a\n Injected: b\r\n\r\n",
        )
        .await;
    assert_eq!(folded, vec![400], "obsolete line folding is refused");
    assert!(fixture.vendor.seen().is_empty());
}
