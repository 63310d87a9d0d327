//! A TCP relay on 127.0.0.1:0 in front of a real server, which can hold the
//! server's replies back: a slow network in one direction, so a request
//! reaches Redis at once and its reply arrives after the gateway gave up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub struct ReplyDelayRelay {
    port: u16,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplyDelayRelay {
    /// Relays every connection to `127.0.0.1:target_port`, replies undelayed.
    pub async fn start(target_port: u16) -> ReplyDelayRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let delay = delay.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await {
                        relay(client, server, delay).await;
                    }
                });
            }
        });
        ReplyDelayRelay {
            port,
            delay_ms,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Holds each reply chunk back this long from when the server sent it.
    pub fn delay_replies(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for ReplyDelayRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, delay_ms: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upward = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    // Replies are stamped when read and written when their time comes, so
    // the delay is the same for every chunk instead of adding up.
    let (held, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = server_read.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            let at = Instant::now() + Duration::from_millis(delay_ms.load(Ordering::SeqCst));
            if held.send((at, buffer[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    while let Some((at, chunk)) = due.recv().await {
        tokio::time::sleep_until(at).await;
        if client_write.write_all(&chunk).await.is_err() {
            break;
        }
    }
    upward.abort();
    reader.abort();
}
