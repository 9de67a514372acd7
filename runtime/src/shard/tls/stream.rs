//! A TLS connection before its upgrade, as a tokio stream: the handshake,
//! then the request head and the HTTP side read and write through it. It
//! drives the same [`Session`] the shard drives after the upgrade, so the
//! session leaves tokio as it is ([`TlsStream::into_parts`]), with no
//! buffer to carry over but the few bytes in flight.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::session::{Session, TlsError, MAX_FRAGMENT};

/// Bytes read from the socket at once (a whole record and a bit).
const READ_CHUNK: usize = 17 * 1024;
/// Records kept unsent before a write waits for the socket.
const MAX_UNSENT: usize = 64 * 1024;

/// TLS over a tokio socket (see the module's top).
pub(crate) struct TlsStream {
    tcp: TcpStream,
    session: Box<Session>,
    /// Plaintext decrypted and not yet read, from `plain_at` on.
    plain: Vec<u8>,
    plain_at: usize,
    /// The socket's end of stream (or the peer's close_notify) was seen.
    eof: bool,
}

impl TlsStream {
    /// Runs the handshake on `tcp` with `config`. On an error rustls's
    /// alert is sent if the socket takes it at once.
    pub(crate) async fn accept(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<TlsStream, TlsError> {
        let mut stream = TlsStream {
            tcp,
            session: Box::new(Session::new(config)?),
            plain: Vec::new(),
            plain_at: 0,
            eof: false,
        };
        loop {
            std::future::poll_fn(|cx| stream.poll_send(cx))
                .await
                .map_err(closed)?;
            if stream.session.is_ready() {
                return Ok(stream);
            }
            if stream.eof {
                return Err(closed(io::ErrorKind::UnexpectedEof.into()));
            }
            if let Err(e) = std::future::poll_fn(|cx| stream.poll_fill(cx)).await {
                // The alert, if the socket takes it now.
                let _ = stream.tcp.try_write(stream.session.outgoing());
                return Err(match e.into_inner() {
                    Some(e) => match e.downcast::<TlsError>() {
                        Ok(e) => *e,
                        Err(e) => closed(io::Error::other(e)),
                    },
                    None => closed(io::ErrorKind::BrokenPipe.into()),
                });
            }
        }
    }

    /// The TCP socket underneath.
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The socket and the session, for the shard; plaintext already
    /// decrypted and not read is appended to `leftover`.
    pub(crate) fn into_parts(self, leftover: &mut Vec<u8>) -> (TcpStream, Box<Session>) {
        leftover.extend_from_slice(&self.plain[self.plain_at..]);
        (self.tcp, self.session)
    }

    /// Sends the session's outgoing records until none is left.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.session.wants_write() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, self.session.outgoing()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.session.sent(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Reads the socket once and processes what came: plaintext into
    /// `plain`, answers into the outgoing records, `eof` at the end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut buf = self.session.take_incoming();
        let at = buf.len();
        buf.resize(at + READ_CHUNK, 0);
        let mut read = ReadBuf::new(&mut buf[at..]);
        let polled = Pin::new(&mut self.tcp).poll_read(cx, &mut read);
        let n = read.filled().len();
        buf.truncate(at + n);
        let result = match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                if n == 0 {
                    self.eof = true;
                }
                let plain = &mut self.plain;
                match self
                    .session
                    .process(&mut buf, |p| plain.extend_from_slice(p))
                {
                    Ok(done) => {
                        buf.drain(..done);
                        if self.session.peer_closed() {
                            self.eof = true;
                        }
                        Poll::Ready(Ok(()))
                    }
                    Err(e) => {
                        buf.clear();
                        self.eof = true;
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)))
                    }
                }
            }
        };
        self.session.keep_incoming(&buf);
        result
    }
}

/// A handshake that ended with the socket.
fn closed(e: io::Error) -> TlsError {
    TlsError::Protocol(rustls::Error::General(format!("connection closed: {e}")))
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_at);
                buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                if this.plain_at == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // What rustls must answer on its own goes out while waiting
            // for the peer (a refusal to take it is found by the writes).
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            ready!(this.poll_fill(cx))?;
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.session.outgoing().len() >= MAX_UNSENT {
            ready!(this.poll_send(cx))?;
        }
        let n = buf.len().min(4 * MAX_FRAGMENT);
        this.session
            .encrypt_queued(&buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.session.close_notify();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
