//! HTTP versions, TLS, slow clients and graceful shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::CertificateDer;

use crate::support::gateway::{config_toml, Setup, TestGateway};
use crate::support::http::{h2c_get, raw_exchange_until_closed, GENEROUS};
use crate::support::upstream::{Behavior, Gate, RecordingUpstream};
use crate::support::wait::wait_until;

#[tokio::test]
async fn http2_cleartext_prior_knowledge_is_served() {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start(&Setup::new(&upstream.url())).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let response = h2c_get(
        &gateway.url("/v1/free"),
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        upstream.requests()[0].header("host"),
        Some(upstream.addr().to_string().as_str())
    );
}

/// Sends one request over TLS, negotiating `alpn`, and returns (status, negotiated version).
async fn tls_request(
    addr: std::net::SocketAddr,
    root: CertificateDer<'static>,
    alpn: &[u8],
    key: &str,
) -> (u16, http::Version) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let request = http::Request::get("/v1/free")
        .header("authorization", format!("Bearer {key}"))
        .header("host", "localhost");
    if alpn == b"h2" {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = http::Request::get("https://localhost/v1/free")
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        (response.status().as_u16(), response.version())
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let response = sender
            .send_request(request.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let version = response.version();
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        (status, version)
    }
}

#[tokio::test]
async fn tls_serves_http1_and_http2_via_alpn() {
    let upstream = RecordingUpstream::start().await;
    let dir = std::env::temp_dir().join(format!("creditgate-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    let toml = config_toml(&Setup::new(&upstream.url())).replace(
        "max_body_bytes",
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}\nmax_body_bytes",
            cert_path.display(),
            key_path.display()
        ),
    );
    let gateway = TestGateway::start_toml(&toml).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let root = certified.cert.der().clone();
    let addr = gateway.running().data_addr;
    let (status, version) = tls_request(addr, root.clone(), b"http/1.1", &key).await;
    assert_eq!((status, version), (200, http::Version::HTTP_11));
    let (status, version) = tls_request(addr, root, b"h2", &key).await;
    assert_eq!((status, version), (200, http::Version::HTTP_2));
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_closed_after_header_read_timeout() {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start(&Setup::new(&upstream.url())).await;
    let started = Instant::now();
    // header_read_timeout is 2 s in the test config; the head never ends.
    // Closed, not hung (raw_exchange_until_closed fails on a hang), and not
    // before the timeout (a lower bound: load only makes it later).
    let answer = raw_exchange_until_closed(
        gateway.running().data_addr,
        b"GET /v1/free HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n",
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "closed too early {elapsed:?}"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(upstream.reached(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_connections() {
    let upstream = RecordingUpstream::start().await;
    // The vendor holds its answer until the test has seen the listener close.
    let vendor_answers = Gate::new();
    upstream.set_behavior(Behavior::Gated(
        vendor_answers.clone(),
        Box::new(Behavior::Ok),
    ));
    // A drain longer than the test waits for the listener to close: the
    // listener must close when the drain starts, not when it times out.
    let toml = config_toml(&Setup::new(&upstream.url()))
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"120s\"");
    let gateway = TestGateway::start_toml(&toml).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let addr = gateway.running().data_addr;
    let admin = gateway.admin_url("");
    let url = gateway.url("/v1/paid");
    let client = crate::support::http::TestClient::new();
    let in_flight = tokio::spawn(async move { client.post_as(&key, &url, "x").await });
    upstream.wait_for(1, GENEROUS).await;
    let shutdown = tokio::spawn(gateway.shutdown());
    // Refused, not queued: a listener that stops accepting but stays open
    // lets connects into its backlog until it fills.
    wait_until("the data listener to refuse connections", async || {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_secs(1), connect).await {
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            Ok(Ok(_)) => Err("connected".into()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        !in_flight.is_finished(),
        "the request ended before its vendor answered: {:?}",
        in_flight.await
    );

    vendor_answers.open();
    let response = in_flight.await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-credits-cost"), Some("7"));
    tokio::time::timeout(GENEROUS, shutdown)
        .await
        .expect("the drain ends once the in-flight request is done")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(admin.trim_start_matches("http://"))
            .await
            .is_err(),
        "the admin listener is closed after shutdown"
    );
}
