//! On a TLS listener the handshake counts against `header_read_timeout`:
//! a client that stalls in TLS, or finishes it and then sends nothing, is
//! closed at the same deadline from accept as a cleartext one.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncReadExt;

use super::{closed_count, hold, metrics, spread, timers_toml, EARLY, HEADER, SLACK};
use crate::support::gateway::TestGateway;
use crate::support::process::TempDir;
use crate::support::upstream::RecordingUpstream;

const EACH: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_counts_against_header_read_timeout() {
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("tls-timers");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.write("server.pem", &certified.cert.pem());
    let key = dir.write("server.key", &certified.key_pair.serialize_pem());
    let toml = timers_toml(&upstream.url(), "1s", "2s", "", "").replace(
        "max_body_bytes",
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}\nmax_body_bytes",
            cert.display(),
            key.display()
        ),
    );
    let gateway = TestGateway::start_toml(&toml).await;
    let addr = gateway.running().data_addr;
    let before = closed_count(&metrics(&gateway).await, "data", "header_timeout");

    // A TLS record header announcing a ClientHello that never follows.
    let partial_hello: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    let mut stalled = Vec::new();
    for _ in 0..EACH {
        stalled.push(tokio::spawn(hold(addr, b"", HEADER + SLACK)));
        stalled.push(tokio::spawn(hold(addr, partial_hello, HEADER + SLACK)));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut handshaken = Vec::new();
    for _ in 0..EACH {
        let connector = connector.clone();
        handshaken.push(tokio::spawn(async move {
            let opened = Instant::now();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.expect("tls handshake");
            // Complete TLS, then not one byte of HTTP.
            let mut buf = [0u8; 64];
            let ended = tokio::time::timeout(HEADER + SLACK, tls.read(&mut buf)).await;
            assert!(ended.is_ok(), "a TLS connection without HTTP stayed open");
            opened.elapsed()
        }));
    }

    let mut stalled_after = Vec::new();
    for task in stalled {
        let held = task.await.unwrap();
        stalled_after.push(
            held.closed_after
                .expect("a stalled TLS handshake stayed open"),
        );
    }
    let mut handshaken_after = Vec::new();
    for task in handshaken {
        handshaken_after.push(task.await.unwrap());
    }
    let stalled_when = spread(&stalled_after);
    let handshaken_when = spread(&handshaken_after);
    eprintln!(
        "TLS: {} stalled in the handshake closed at {stalled_when}; \
         {} handshaken without HTTP closed at {handshaken_when} (after open)",
        stalled_after.len(),
        handshaken_after.len()
    );
    for when in [stalled_when, handshaken_when] {
        assert!(when.min + EARLY >= HEADER, "closed at {when}");
        assert!(when.max <= HEADER + SLACK, "closed at {when}");
    }
    let after = closed_count(&metrics(&gateway).await, "data", "header_timeout");
    assert_eq!(after - before, 3 * EACH as u64);
    assert_eq!(upstream.count(), 0);
}
