//! A listener filled to its connection cap with silent connections refuses
//! more, and serves again once `header_read_timeout` has closed them — on
//! the data plane (`server.max_connections`) and the admin plane (256).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use super::{closed_count, hold, spread, timers_toml, Held, EARLY, SLACK};
use crate::support::gateway::TestGateway;
use crate::support::http::TestClient;
use crate::support::upstream::RecordingUpstream;

/// Long enough that a full listener is still full when the test checks it.
const HEADER: Duration = Duration::from_secs(3);
const IDLE: Duration = Duration::from_secs(5);
const DATA_CAP: usize = 50;
const ADMIN_CAP: usize = 256;

fn open_connections(gateway: &TestGateway, listener: &str) -> usize {
    let series = format!("creditgate_open_connections{{listener=\"{listener}\"}} ");
    gateway
        .running()
        .gateway
        .metrics
        .render()
        .lines()
        .find_map(|line| {
            line.strip_prefix(&series)
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// The metrics, read in process: the admin listener may be the full one.
fn closed(gateway: &TestGateway, listener: &str, reason: &str) -> u64 {
    closed_count(
        &gateway.running().gateway.metrics.render(),
        listener,
        reason,
    )
}

async fn try_request(url: &str, auth: Option<&str>) -> Result<u16, String> {
    let mut request = http::Request::get(url);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    // A fresh client each time, so no pooled connection slips past the cap.
    TestClient::new()
        .try_send(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .map(|response| response.status)
}

/// Fills `listener` at `addr` up to `cap` with silent connections, checks a
/// request is refused, then that one is served once they have timed out.
async fn fill_then_recover(
    gateway: &TestGateway,
    listener: &str,
    addr: SocketAddr,
    cap: usize,
    url: &str,
    auth: Option<&str>,
) {
    // Keep-alive connections of earlier requests (the test's own pooled
    // client) close at idle_timeout; wait for them so only silent
    // connections fill the listener.
    let waiting = Instant::now();
    while open_connections(gateway, listener) > 0 {
        assert!(
            waiting.elapsed() < IDLE + SLACK,
            "{listener}: idle connections stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let silent = cap;
    let limit_before = closed(gateway, listener, "connection_limit");
    let timeouts_before = closed(gateway, listener, "header_timeout");
    let spawned = Instant::now();
    let held: Vec<_> = (0..silent)
        .map(|_| tokio::spawn(async move { hold(addr, b"", HEADER + SLACK).await }))
        .collect();
    let filling = Instant::now();
    while open_connections(gateway, listener) < cap {
        assert!(
            filling.elapsed() < SLACK,
            "{listener}: the silent connections were not accepted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let full_at = Instant::now();

    let refused = try_request(url, auth).await;
    assert!(
        refused.is_err(),
        "{listener}: a request on a full listener was answered: {refused:?}"
    );
    assert!(closed(gateway, listener, "connection_limit") > limit_before);

    let served_after = loop {
        if let Ok(200) = try_request(url, auth).await {
            break full_at.elapsed();
        }
        assert!(
            full_at.elapsed() < HEADER + SLACK * 2,
            "{listener}: never served again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut closed_after = Vec::new();
    for task in held {
        let Held {
            closed_after: after,
            ..
        } = task.await.unwrap();
        closed_after
            .push(after.unwrap_or_else(|| panic!("{listener}: a silent connection stayed open")));
    }
    let when = spread(&closed_after);
    eprintln!(
        "{listener} cap {cap}: {silent} silent connections opened, {} closed at {when} after open; \
         a request was refused while full and served {:.2} s after the listener filled",
        closed_after.len(),
        served_after.as_secs_f64()
    );
    // A slot frees only when a silent connection times out.
    assert!(served_after + (full_at - spawned) + EARLY >= HEADER);
    assert!(when.min + EARLY >= HEADER, "{listener}: closed at {when}");
    assert_eq!(
        closed(gateway, listener, "header_timeout") - timeouts_before,
        silent as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listener_serves_again_once_its_silent_connections_time_out() {
    let upstream = RecordingUpstream::start().await;
    let toml = timers_toml(
        &upstream.url(),
        "3s",
        "5s", // IDLE
        &format!("max_connections = {DATA_CAP}"),
        "",
    );
    let gateway = TestGateway::start_toml(&toml).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let auth = format!("Bearer {key}");
    let running = gateway.running();
    fill_then_recover(
        &gateway,
        "data",
        running.data_addr,
        DATA_CAP,
        &gateway.url("/v1/free"),
        Some(&auth),
    )
    .await;
    fill_then_recover(
        &gateway,
        "admin",
        running.admin_addr,
        ADMIN_CAP,
        &gateway.admin_url("/healthz"),
        None,
    )
    .await;
}
