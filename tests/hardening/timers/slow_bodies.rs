//! A request whose body stops arriving is in progress, so neither the idle
//! nor the stalled-response timer applies: `server.body_read_timeout`
//! bounds it — on the admin listener too, whose handlers read small JSON
//! bodies whole.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{timers_toml, EARLY, SLACK};
use crate::support::gateway::{TestGateway, ADMIN_TOKEN};
use crate::support::upstream::RecordingUpstream;

const BODY_READ: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_body_that_stops_arriving_is_a_408_after_body_read_timeout() {
    let upstream = RecordingUpstream::start().await;
    let toml = timers_toml(
        &upstream.url(),
        "1s",
        "2s",
        "body_read_timeout = \"2s\"",
        "",
    );
    let gateway = TestGateway::start_toml(&toml).await;
    for path in [
        "/admin/v1/accounts/site-1",
        "/admin/v1/accounts/site-1/refunds",
    ] {
        let mut stream = tokio::net::TcpStream::connect(gateway.running().admin_addr)
            .await
            .unwrap();
        let method = if path.ends_with("refunds") {
            "POST"
        } else {
            "PUT"
        };
        let sent = Instant::now();
        stream
            .write_all(
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
                     Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"plan\":"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        // The answer, then the close: the rest of the body is never read.
        let mut answer = Vec::new();
        let read = tokio::time::timeout(BODY_READ + SLACK, stream.read_to_end(&mut answer)).await;
        let closed = read.is_ok().then(|| sent.elapsed());
        let text = String::from_utf8_lossy(&answer);
        eprintln!(
            "{method} {path} with a stalled body: closed {closed:?} after the head, answered {:?}",
            text.lines().next()
        );
        let closed =
            closed.unwrap_or_else(|| panic!("{path}: the stalled body kept the connection open"));
        assert!(
            closed + EARLY >= BODY_READ,
            "{path}: answered after {closed:?}"
        );
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(
            text.contains("\"code\":\"request_timeout\""),
            "{path}: {text}"
        );
    }
    assert!(
        gateway
            .running()
            .gateway
            .ledger
            .get_account("site-1")
            .await
            .unwrap()
            .is_none(),
        "nothing was created from a body that never arrived"
    );
}
