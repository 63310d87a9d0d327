//! The accepted stream (or its TLS session), observed: which protocol its
//! first bytes speak, when the HTTP/2 handshake is complete, when bytes
//! start a new HTTP/1 head, and whether writes are blocked because the
//! client stopped reading.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::{Activity, Protocol};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const SETTINGS_FRAME: u8 = 0x4;

/// How far the HTTP/2 handshake has come: the client's preface, then the
/// header of its first frame (which must be SETTINGS), then that frame's
/// payload. hyper-util's auto builder sniffs the same 24 bytes to choose
/// HTTP/1 or HTTP/2, so both always agree.
#[derive(Debug)]
enum Handshake {
    Preface {
        matched: usize,
    },
    FrameHeader {
        header: [u8; FRAME_HEADER_LEN],
        seen: usize,
    },
    SettingsPayload {
        remaining: usize,
    },
    /// HTTP/1, a complete HTTP/2 handshake, or a broken one h2 refuses.
    Over,
}

pub struct ObservedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    handshake: Handshake,
}

impl<T> ObservedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> ObservedIo<T> {
        ObservedIo {
            inner,
            activity,
            handshake: Handshake::Preface { matched: 0 },
        }
    }

    fn observe_read(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.handshake {
                Handshake::Preface { matched } => {
                    let take = bytes.len().min(H2_PREFACE.len() - *matched);
                    if bytes[..take] != H2_PREFACE[*matched..*matched + take] {
                        self.activity.set_protocol(Protocol::Http1);
                        self.handshake = Handshake::Over;
                        break;
                    }
                    *matched += take;
                    bytes = &bytes[take..];
                    if *matched == H2_PREFACE.len() {
                        self.activity.set_protocol(Protocol::Http2);
                        self.handshake = Handshake::FrameHeader {
                            header: [0; FRAME_HEADER_LEN],
                            seen: 0,
                        };
                    }
                }
                Handshake::FrameHeader { header, seen } => {
                    let take = bytes.len().min(FRAME_HEADER_LEN - *seen);
                    header[*seen..*seen + take].copy_from_slice(&bytes[..take]);
                    *seen += take;
                    bytes = &bytes[take..];
                    if *seen == FRAME_HEADER_LEN {
                        let length = usize::from(header[0]) << 16
                            | usize::from(header[1]) << 8
                            | usize::from(header[2]);
                        if header[3] != SETTINGS_FRAME {
                            // h2 answers a PROTOCOL_ERROR; the connection
                            // never counts as started.
                            self.handshake = Handshake::Over;
                        } else {
                            self.handshake = Handshake::SettingsPayload { remaining: length };
                            self.settings_progress(0);
                        }
                    }
                }
                Handshake::SettingsPayload { remaining } => {
                    let take = bytes.len().min(*remaining);
                    bytes = &bytes[take..];
                    self.settings_progress(take);
                }
                Handshake::Over => break,
            }
        }
    }

    fn settings_progress(&mut self, read: usize) {
        if let Handshake::SettingsPayload { remaining } = &mut self.handshake {
            *remaining -= read;
            if *remaining == 0 {
                self.handshake = Handshake::Over;
                self.activity.http2_handshake_done();
            }
        }
    }

    /// A write or flush that returns `Pending` blocks; one that completes is
    /// progress. (hyper and h2 flush only once every queued byte has been
    /// written, so a completed flush is never a plain-TCP no-op hiding a
    /// blocked write.)
    fn observe_write<R>(&self, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match &polled {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(Ok(_)) => self.activity.write_progressed(),
            Poll::Ready(Err(_)) => {}
        }
        polled
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ObservedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if buf.filled().len() > before {
                if !matches!(this.handshake, Handshake::Over) {
                    this.observe_read(&buf.filled()[before..]);
                }
                this.activity.bytes_read();
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ObservedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.observe_write(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.observe_write(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.observe_write(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.observe_write(polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn feed(chunks: &[&[u8]]) -> Arc<Activity> {
        let activity = Arc::new(Activity::new(tokio::time::Instant::now()));
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut observed = ObservedIo::new(server, activity.clone());
        let mut client = client;
        for chunk in chunks {
            client.write_all(chunk).await.unwrap();
            let mut buf = vec![0u8; chunk.len()];
            observed.read_exact(&mut buf).await.unwrap();
        }
        activity
    }

    fn settings(payload_len: usize) -> Vec<u8> {
        let mut frame = vec![0, 0, payload_len as u8, SETTINGS_FRAME, 0, 0, 0, 0, 0];
        frame.extend(std::iter::repeat_n(0u8, payload_len));
        frame
    }

    #[tokio::test]
    async fn http1_is_told_by_the_first_byte() {
        let activity = feed(&[b"G"]).await;
        assert_eq!(activity.protocol(), Protocol::Http1);
        assert!(!activity.started(), "a head starts with its request");
    }

    #[tokio::test]
    async fn half_a_preface_is_not_a_handshake() {
        let activity = feed(&[&H2_PREFACE[..12]]).await;
        assert_eq!(activity.protocol(), Protocol::Unknown);
        assert!(!activity.started());
    }

    #[tokio::test]
    async fn the_preface_alone_is_not_a_handshake() {
        let activity = feed(&[H2_PREFACE]).await;
        assert_eq!(activity.protocol(), Protocol::Http2);
        assert!(!activity.started());
    }

    #[tokio::test]
    async fn preface_and_settings_complete_the_handshake_in_any_split() {
        let mut whole = H2_PREFACE.to_vec();
        whole.extend(settings(12));
        for split in 1..whole.len() {
            let activity = feed(&[&whole[..split], &whole[split..]]).await;
            assert!(activity.started(), "split at {split}");
        }
        let byte_by_byte: Vec<&[u8]> = whole.chunks(1).collect();
        assert!(feed(&byte_by_byte).await.started());
        let mut short = H2_PREFACE.to_vec();
        short.extend(&settings(12)[..FRAME_HEADER_LEN + 11]);
        assert!(!feed(&[&short]).await.started());
    }

    #[tokio::test]
    async fn an_empty_settings_frame_completes_the_handshake() {
        let mut whole = H2_PREFACE.to_vec();
        whole.extend(settings(0));
        assert!(feed(&[&whole]).await.started());
    }

    #[tokio::test]
    async fn another_first_frame_never_starts_the_connection() {
        let mut whole = H2_PREFACE.to_vec();
        whole.extend([0, 0, 8, 0x6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(!feed(&[&whole]).await.started());
    }
}
