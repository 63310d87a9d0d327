//! Slow clients: many connections that never finish their request head are
//! closed by `header_read_timeout` while normal clients keep being served.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::gateway::{Setup, TestGateway};
use crate::support::http::GENEROUS;
use crate::support::upstream::RecordingUpstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_slow_heads_are_closed_and_normal_clients_are_served() {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start(&Setup::new(&upstream.url())).await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let addr = gateway.running().data_addr;
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..200 {
        slow.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(
                    format!("GET /v1/free HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: 1\r\n").as_bytes(),
                )
                .await
                .expect("write");
            // Never finish the head; wait for the gateway to hang up.
            let mut buf = [0u8; 256];
            let closed = tokio::time::timeout(GENEROUS, async {
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            closed.map(|()| started.elapsed())
        }));
    }
    // Meanwhile, normal requests succeed.
    for _ in 0..10 {
        let response = gateway.get_as(&key, "/v1/free").await;
        assert_eq!(response.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every one closed (none left open for GENEROUS), and none before the
    // timeout: a lower bound, which load can only make truer.
    let (mut closed, mut earliest) = (0, None::<Duration>);
    for task in slow {
        if let Ok(after) = task.await.unwrap() {
            closed += 1;
            earliest = Some(earliest.map_or(after, |e| e.min(after)));
        }
    }
    let elapsed = started.elapsed();
    eprintln!("slow clients: {closed}/200 closed by header_read_timeout (2 s) after {elapsed:?}");
    assert_eq!(closed, 200, "every slow connection was closed");
    assert!(
        earliest >= Some(Duration::from_millis(1500)),
        "closed before header_read_timeout: {earliest:?}"
    );
    assert_eq!(upstream.reached(), 10, "{}", upstream.summary());
}
