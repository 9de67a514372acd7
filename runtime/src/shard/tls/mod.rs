//! TLS on the port (`tls_cert`, `tls_key`), with rustls's unbuffered
//! server connection so that an idle connection keeps no TLS buffer.
//!
//! [`session`] is one connection's TLS state and the bytes in flight; the
//! same session serves the connection's whole life. Before an upgrade a
//! connection is a tokio stream ([`Stream`], over [`stream::TlsStream`]):
//! the accept task runs the handshake ([`handshake`]) under
//! `tls_handshake_timeout` and with at most `tls_max_handshakes` of them in
//! progress per shard (a connection beyond that is closed at once, so a
//! reconnect storm or a slow-handshake attack costs a bounded number of
//! handshake states), and the HTTP side and the head reading work on the
//! decrypted stream. Each handshake takes the configuration in force when
//! it starts, so a reloaded certificate is served to new connections while
//! open ones keep their session.
//!
//! An upgraded socket (WebSocket, SSE) leaves tokio with its session
//! ([`into_parts`]) and the shard drives it ([`socket`]): records are read
//! into the shard's scratch buffer and decrypted from there, a batch's
//! queue is encrypted into the shard's write scratch and sent with one
//! write, and only what the socket did not take stays with the
//! connection.

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::Shard;

mod session;
mod socket;
mod stream;
#[cfg(test)]
mod tests;

pub(super) use session::Session;
pub(super) use socket::{close, read, write, ReadOutcome};
use stream::TlsStream;

/// A connection before it is upgraded: plain TCP or TLS over it.
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, handshake done.
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The TCP socket underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.tcp(),
        }
    }

    /// Sends `bytes` (a complete response) and, over TLS, everything
    /// rustls holds.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        self.flush().await
    }

    /// Sends a last response and ends the stream: over TLS with a
    /// close_notify, so the client can tell the end from a truncation.
    pub(crate) async fn send_last(&mut self, bytes: &[u8]) {
        if self.send(bytes).await.is_ok() {
            if let Stream::Tls(_) = self {
                let _ = self.shutdown().await;
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A handshake in progress, counted against the shard's bound until it
/// drops.
struct InProgress<'a>(&'a Cell<usize>);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Makes a new connection's stream: `tcp` itself without TLS, else the
/// TLS stream once the handshake is done. `None`: the connection is to be
/// closed (the shard is at `tls_max_handshakes`, the handshake failed or
/// took longer than `tls_handshake_timeout`); rustls has sent the client
/// its alert where there is one.
pub(super) async fn handshake(shard: &Shard, tcp: TcpStream) -> Option<Stream> {
    let config = shard.shared.config.get();
    let Some(tls) = &config.tls else {
        return Some(Stream::Plain(tcp));
    };
    let outcome = |o: &'static str| {
        *shard
            .metrics
            .borrow_mut()
            .tls_handshakes
            .entry(o)
            .or_default() += 1;
    };
    let count = &shard.tls_handshakes;
    if count.get() >= config.tls_max_handshakes {
        outcome("refused");
        tracing::debug!(
            shard = shard.index,
            "TLS handshake refused: {} in progress (tls_max_handshakes)",
            count.get()
        );
        return None;
    }
    count.set(count.get() + 1);
    let _in_progress = InProgress(count);
    let server = tls.server.clone();
    let timeout = config.tls_handshake_timeout;
    drop(config);
    match tokio::time::timeout(timeout, TlsStream::accept(tcp, server)).await {
        Ok(Ok(stream)) => {
            outcome("ok");
            Some(Stream::Tls(Box::new(stream)))
        }
        Ok(Err(e)) => {
            outcome("failed");
            tracing::debug!(shard = shard.index, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            outcome("timeout");
            tracing::debug!(
                shard = shard.index,
                "TLS handshake not done within {timeout:?}"
            );
            None
        }
    }
}

/// A stream taken out of tokio for the epoll set: the socket, and its TLS
/// session over TLS, with any plaintext already decrypted appended to
/// `leftover` (which goes to the node first).
pub(super) fn into_parts(
    stream: Stream,
    leftover: &mut Vec<u8>,
) -> (TcpStream, Option<Box<Session>>) {
    match stream {
        Stream::Plain(s) => (s, None),
        Stream::Tls(s) => {
            let (tcp, session) = s.into_parts(leftover);
            (tcp, Some(session))
        }
    }
}
