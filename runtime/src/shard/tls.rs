//! TLS on the port (`tls_cert`, `tls_key`).
//!
//! Before an upgrade a connection is a tokio stream ([`Stream`]): the
//! accept task runs the handshake with tokio-rustls ([`handshake`]), under
//! `tls_handshake_timeout` and with at most `tls_max_handshakes` of them
//! in progress per shard (a connection beyond that is closed at once, so a
//! reconnect storm or a slow-handshake attack costs a bounded number of
//! handshake states), and the HTTP side and the head reading work on the
//! decrypted stream. Each handshake takes the configuration in force when
//! it starts, so a reloaded certificate is served to new connections while
//! open ones keep their session.
//!
//! An upgraded socket (WebSocket, SSE) leaves tokio with its rustls
//! `ServerConnection` ([`into_parts`]) and the shard drives that directly:
//! [`read`] takes TLS records from the socket, decrypts them and hands the
//! plaintext to the node through the shard's scratch buffer; [`write`]
//! encrypts what the node queued (one `write_vectored` of the queue's
//! slices into rustls) and sends the records with one vectored write of
//! the socket, waiting for writability when the kernel refuses, as a plain
//! socket does. What rustls must send on its own (an alert, a key update's
//! answer) goes out after the read that caused it.

use std::cell::Cell;
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::ServerConnection;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use wavecast_core::node::{ConnId, Node};
use wavecast_core::queue::MAX_SLICES;
use wavecast_core::Timestamp;

use super::{ConnIo, Shard};

/// A connection before it is upgraded: plain TCP or TLS over it.
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
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
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    let timeout = config.tls_handshake_timeout;
    drop(config);
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
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

/// A stream taken out of tokio for the epoll set: the socket, and its
/// rustls connection over TLS with any plaintext rustls had already
/// decrypted or received (appended to `leftover`, which goes to the node
/// first).
pub(super) fn into_parts(
    stream: Stream,
    leftover: &mut Vec<u8>,
) -> (TcpStream, Option<Box<ServerConnection>>) {
    match stream {
        Stream::Plain(s) => (s, None),
        Stream::Tls(s) => {
            let (tcp, mut conn) = s.into_inner();
            // Records already read but not yet decrypted; an error here is
            // found again by the shard's first read.
            let _ = conn.process_new_packets();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = conn.reader().read(&mut chunk) {
                if n == 0 {
                    break;
                }
                leftover.extend_from_slice(&chunk[..n]);
            }
            (tcp, Some(Box::new(conn)))
        }
    }
}

/// The socket as `io::Write`/`io::Read` for rustls.
struct Sock<'a>(&'a std::net::TcpStream);

impl Read for Sock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Sock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self.0).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What one read of a TLS socket came to.
pub(super) enum ReadOutcome {
    /// Nothing to read now.
    Nothing,
    /// Records read (plaintext, if any, handed over).
    Some,
    /// End of stream: the peer closed (with or without close_notify), or
    /// sent what is not TLS (rustls's alert has been sent).
    End,
}

/// Reads the socket once (as a plain socket is read once per readiness),
/// decrypts, and hands the plaintext to `deliver` through `scratch`.
pub(super) fn read(
    io: &mut ConnIo,
    scratch: &mut [u8],
    mut deliver: impl FnMut(&[u8]),
) -> ReadOutcome {
    let Some(conn) = io.tls.as_mut() else {
        return ReadOutcome::End;
    };
    let mut end = match conn.read_tls(&mut Sock(&io.stream)) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
            return ReadOutcome::Nothing;
        }
        Err(_) => true,
    };
    if let Err(e) = conn.process_new_packets() {
        tracing::debug!(error = %e, "TLS connection failed");
        // The alert rustls queued for the peer, if the socket takes it.
        let _ = conn.write_tls(&mut Sock(&io.stream));
        return ReadOutcome::End;
    }
    loop {
        match conn.reader().read(scratch) {
            Ok(0) => {
                end = true; // close_notify
                break;
            }
            Ok(n) => deliver(&scratch[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => {
                end = true;
                break;
            }
        }
    }
    if end {
        ReadOutcome::End
    } else {
        ReadOutcome::Some
    }
}

/// Writes a TLS connection: encrypts the node's queue into rustls (as far
/// as rustls's buffer limit takes it) and sends the records, until both
/// are empty or the kernel refuses. The caller has checked `io` is
/// watched and not waiting for writability.
pub(super) fn write(shard: &Shard, now: Timestamp, id: ConnId, io: &mut ConnIo, node: &mut Node) {
    loop {
        let Some(conn) = io.tls.as_mut() else { return };
        let mut queued = false;
        if let Some(queue) = node.queue(id) {
            if !queue.is_empty() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let mut n = 0;
                for s in queue.slices() {
                    slices[n] = IoSlice::new(s);
                    n += 1;
                }
                match conn.writer().write_vectored(&slices[..n]) {
                    Ok(0) if !conn.wants_write() => {
                        // Nothing taken and nothing to send: rustls will
                        // take no more (the connection is closing).
                        shard.unwatch(io);
                        node.handle_eof(now, id);
                        return;
                    }
                    Ok(0) => {}
                    Ok(taken) => node.handle_written(now, id, taken),
                    Err(_) => {
                        shard.unwatch(io);
                        node.handle_eof(now, id);
                        return;
                    }
                }
                queued = node.queue(id).is_some_and(|q| !q.is_empty());
            }
        }
        if !conn.wants_write() {
            if queued {
                continue;
            }
            return;
        }
        match conn.write_tls(&mut Sock(&io.stream)) {
            Ok(0) => {
                shard.unwatch(io);
                node.handle_eof(now, id);
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                shard.write_blocked(now, id, io, node);
                return;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                shard.unwatch(io);
                node.handle_eof(now, id);
                return;
            }
        }
    }
}

/// A finished TLS connection's last words: a close_notify, if the socket
/// takes it now (the socket is closed right after, either way).
pub(super) fn close(io: &mut ConnIo) {
    if let Some(conn) = io.tls.as_mut() {
        conn.send_close_notify();
        let _ = conn.write_tls(&mut Sock(&io.stream));
    }
}
