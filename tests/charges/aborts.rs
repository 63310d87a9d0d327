//! Clients that leave at random moments after sending a priced request —
//! HTTP/1 by reset and by FIN 0–5 ms after, HTTP/2 by resetting the stream
//! 0–10 ms after —
//! on every ledger backend. Some send the whole request first, some only
//! part of the body (which the vendor must then never be charged for).
//!
//! Afterwards, exactly: `used == 7 × (distinct request ids the vendor
//! received whole)`, the debits that stand are those requests, and every
//! debit has one access line.

use http::Request;

use super::{audit, Backend, Fixture, Options};
use crate::support::abort::{
    h2_connect, h2_send_then_reset, http1_post, http1_send_then_leave, never_ending, random_pause,
    whole, Leave,
};
use crate::support::cluster::redis_cli_available;
use crate::support::upstream::RecordingUpstream;

/// Requests per way of leaving (HTTP/1 reset, HTTP/1 FIN, HTTP/2 reset).
const PER_KIND: usize = 120;
/// Clients leaving at once.
const WAVE: usize = 20;
const COST: u64 = 7;
static BODY: [u8; 512] = [b'x'; 512];

async fn http1_storm(fixture: &Fixture, leave: Leave, tag: &str) {
    let addr = format!("127.0.0.1:{}", fixture.gateway.data_port)
        .parse()
        .unwrap();
    let auth = fixture.auth();
    for wave in 0..PER_KIND / WAVE {
        let mut clients = Vec::new();
        for i in 0..WAVE {
            let n = wave * WAVE + i;
            let id = format!("{tag}-{n}");
            let request = http1_post(
                "/v1/paid",
                &[("authorization", &auth), ("x-request-id", &id)],
                &BODY,
            );
            let head_and_half = request.len() - BODY.len() / 2;
            clients.push(tokio::spawn(async move {
                match n % 3 {
                    // The whole request, then gone.
                    0 => {
                        http1_send_then_leave(addr, &request, request.len(), random_pause(5), leave)
                            .await
                    }
                    // Half the body, then gone: never delivered.
                    1 => {
                        http1_send_then_leave(addr, &request, head_and_half, random_pause(5), leave)
                            .await
                    }
                    // Half the body, a pause, the rest, then gone.
                    _ => {
                        let (first, rest) = request.split_at(head_and_half);
                        let pause = random_pause(5);
                        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                        use tokio::io::AsyncWriteExt;
                        let _ = stream.write_all(first).await;
                        tokio::time::sleep(pause).await;
                        let _ = stream.write_all(rest).await;
                        tokio::time::sleep(random_pause(5)).await;
                        if leave == Leave::Rst {
                            let _ = stream.set_zero_linger();
                        } else {
                            let _ = stream.shutdown().await;
                        }
                    }
                }
            }));
        }
        for client in clients {
            client.await.unwrap();
        }
    }
}

async fn h2_storm(fixture: &Fixture, tag: &str) {
    let addr = format!("127.0.0.1:{}", fixture.gateway.data_port)
        .parse()
        .unwrap();
    let url = fixture.gateway.url("/v1/paid");
    let auth = fixture.auth();
    for wave in 0..PER_KIND / WAVE {
        let sender = h2_connect(addr).await;
        let mut streams = Vec::new();
        for i in 0..WAVE {
            let n = wave * WAVE + i;
            let body = if n.is_multiple_of(2) {
                whole(&BODY)
            } else {
                never_ending(&BODY[..256])
            };
            let request = Request::post(&url)
                .header("authorization", &auth)
                .header("x-request-id", format!("{tag}-{n}"))
                .header("content-length", BODY.len())
                .body(body)
                .unwrap();
            let mut sender = sender.clone();
            streams.push(tokio::spawn(async move {
                h2_send_then_reset(&mut sender, request, random_pause(10)).await
            }));
        }
        for stream in streams {
            stream.await.unwrap();
        }
        // Dropping the last sender closes the connection.
    }
}

async fn clients_leave(backend: Backend) {
    let upstream = RecordingUpstream::start().await;
    let fixture = Fixture::start(Options::new(backend, upstream.url())).await;
    tokio::join!(
        http1_storm(&fixture, Leave::Rst, "rst"),
        http1_storm(&fixture, Leave::Fin, "fin"),
        h2_storm(&fixture, "h2"),
    );
    let audit = audit(&fixture, COST, &upstream).await;
    let received = &audit.received;
    for tag in ["rst", "fin", "h2"] {
        let prefix = format!("{tag}-");
        let debits = fixture
            .history()
            .await
            .into_iter()
            .filter(|item| item["request_id"].as_str().unwrap().starts_with(&prefix))
            .collect::<Vec<_>>();
        let refunds = debits
            .iter()
            .filter(|item| item["refunded"] == true)
            .count();
        let hits = received.iter().filter(|id| id.starts_with(&prefix)).count();
        eprintln!(
            "{backend:?} {tag}: {} requests, {} debits, {hits} vendor hits, {refunds} refunds",
            PER_KIND,
            debits.len()
        );
    }
    eprintln!(
        "{backend:?} total: {} debits, {} vendor hits, {} refunds, {} bodies the vendor saw break off",
        audit.debits,
        received.len(),
        audit.refunded,
        upstream.aborted()
    );
    // How many were charged or refunded depends on the machine's load; that
    // some were admitted at all is what makes the audit above mean anything.
    assert!(audit.debits > 0, "no request was admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_are_charged_only_for_what_the_vendor_received_memory() {
    clients_leave(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_are_charged_only_for_what_the_vendor_received_redis() {
    clients_leave(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_are_charged_only_for_what_the_vendor_received_cluster() {
    assert!(
        redis_cli_available(),
        "redis-cli is needed to build the cluster"
    );
    clients_leave(Backend::Cluster).await;
}

/// hyper reports a stream reset with `NO_ERROR` as a clean end of the body
/// (an early-response signal); mid-body, it is still a body that broke off,
/// refunded whatever the route's `refund_on_failure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_reset_with_no_error_mid_body_is_refunded() {
    let upstream = RecordingUpstream::start().await;
    let mut options = Options::new(Backend::Memory, upstream.url());
    options.extra = r#"
[[routes]]
name = "kept"
method = "POST"
path = "/v1/kept"
upstream = "vendor"
cost = 7
refund_on_failure = false
"#
    .to_owned();
    let fixture = Fixture::start(options).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", fixture.gateway.data_port))
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = Request::post(fixture.gateway.url("/v1/kept"))
        .header("authorization", fixture.auth())
        .header("x-request-id", "no-error-reset")
        .header("content-length", "512")
        .body(())
        .unwrap();
    let (_response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(bytes::Bytes::from_static(&BODY[..100]), false)
        .unwrap();
    // Wait until the request is debited and forwarded (the upstream waits
    // for the rest of the body), then reset.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while upstream.connections() == 0 || fixture.used().await == 0 {
        assert!(std::time::Instant::now() < deadline, "never forwarded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    body.send_reset(h2::Reason::NO_ERROR);
    // Closing the connection lets the gateway settle.
    drop((client, _response, body));
    let audit = audit(&fixture, COST, &upstream).await;
    assert_eq!(audit.debits, 1);
    assert_eq!(audit.refunded, 1, "the upstream never had the whole body");
    assert_eq!(upstream.count(), 0);
}
