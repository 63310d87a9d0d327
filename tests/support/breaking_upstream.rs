//! An upstream that dies mid-response: it reads each request whole, answers
//! with a chunked head and some chunks, then closes the connection without
//! the last chunk — a vendor crashing while it streams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct BreakingUpstream {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BreakingUpstream {
    /// Answers 200 with `content_type` and `chunks` (each after a short
    /// pause), then breaks off.
    pub async fn start(content_type: &'static str, chunks: Vec<&'static str>) -> BreakingUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                let chunks = chunks.clone();
                tokio::spawn(serve(stream, counter, content_type, chunks));
            }
        });
        BreakingUpstream {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received whole.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for BreakingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    received: Arc<AtomicUsize>,
    content_type: &str,
    chunks: Vec<&str>,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    received.fetch_add(1, Ordering::SeqCst);
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for data in chunks {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let framed = format!("{:x}\r\n{data}\r\n", data.len());
        if stream.write_all(framed.as_bytes()).await.is_err() {
            return;
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    // No terminating chunk: the response breaks off here.
    let _ = stream.set_zero_linger();
}
