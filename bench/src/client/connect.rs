//! Opening a connection: TCP from a chosen source address, then the
//! WebSocket opening handshake (`wavecast_core::handshake::ClientHandshake`:
//! the request and the RFC 6455 checks of the answer), the same for every
//! target.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wavecast_core::handshake::{ClientHandshake, ClientHandshakeError};

use super::READ_CHUNK;
use crate::{BenchError, BenchUrl};

/// Opens a TCP connection to `addr`, from `source` if given. Binding with
/// `IP_BIND_ADDRESS_NO_PORT` lets the kernel choose the port at connect
/// time for the whole 4-tuple, so each (source address, server) pair has
/// its own port range: a run spread over several servers needs no more
/// source addresses than one against a single server.
pub async fn open_tcp(addr: SocketAddr, source: Option<Ipv4Addr>) -> Result<TcpStream, BenchError> {
    let socket = TcpSocket::new_v4().map_err(|e| BenchError::io("socket", e))?;
    if let Some(ip) = source {
        set_bind_address_no_port(&socket)
            .map_err(|e| BenchError::io("IP_BIND_ADDRESS_NO_PORT", e))?;
        socket
            .bind(SocketAddr::V4(SocketAddrV4::new(ip, 0)))
            .map_err(|e| BenchError::io(format!("bind {ip}"), e))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| BenchError::io(format!("connect {addr}"), e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| BenchError::io("TCP_NODELAY", e))?;
    Ok(stream)
}

fn set_bind_address_no_port(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the fd is the open socket `socket` owns; the option value
    // points at a live c_int whose size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A handshake nonce unique within the process: a counter stepped by the
/// golden ratio, each half mixed (splitmix64's finalizer). Servers only
/// echo the key back transformed; it has no security role for a load tool,
/// so no randomness is spent on it.
fn nonce() -> [u8; 16] {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0x5eed);
    let n = COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&mix(n).to_le_bytes());
    out[8..].copy_from_slice(&mix(!n).to_le_bytes());
    out
}

/// Sends the upgrade request (offering permessage-deflate with `deflate`)
/// and reads the response head; returns the bytes that followed the head
/// (the first frames, if the server was quick) and whether the server
/// accepted the compression offer.
pub async fn websocket_handshake(
    stream: &mut TcpStream,
    url: &BenchUrl,
    deflate: bool,
) -> Result<(BytesMut, bool), BenchError> {
    let mut handshake = ClientHandshake::new(nonce(), &url.host, &url.path, &[]);
    if deflate {
        handshake = handshake.offering_deflate();
    }
    stream
        .write_all(handshake.request())
        .await
        .map_err(|e| BenchError::io("sending the upgrade request", e))?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let accepted = loop {
        match handshake.read_response(&buf) {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => {}
            Err(ClientHandshakeError::Refused { head_len, .. }) => {
                let status_line = buf[..head_len]
                    .split(|&b| b == b'\r')
                    .next()
                    .map(|l| String::from_utf8_lossy(l).into_owned())
                    .unwrap_or_default();
                return Err(BenchError::Server(format!(
                    "refused the upgrade: {status_line}"
                )));
            }
            Err(e) => return Err(BenchError::Server(format!("upgrade: {e}"))),
        }
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| BenchError::io("reading the upgrade response", e))?;
        if n == 0 {
            return Err(BenchError::Server(
                "closed the connection during the handshake".into(),
            ));
        }
    };
    buf.advance(accepted.head_len);
    Ok((buf, accepted.deflate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wavecast_core::handshake::{accept, parse_request, HandshakeConfig};

    #[test]
    fn websocket_keys_are_well_formed_and_differ() {
        let keys: Vec<String> = (0..1000)
            .map(|_| {
                ClientHandshake::new(nonce(), "h", "/ws", &[])
                    .key()
                    .to_owned()
            })
            .collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len());
        for k in &keys {
            // The base64 of 16 bytes.
            assert_eq!(k.len(), 24, "{k}");
            assert!(k.ends_with("=="), "{k}");
            assert!(k[..22]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
        }
    }

    /// A listener that answers one upgrade the way the server does (its
    /// own handshake code), followed by `extra`.
    async fn answering(extra: &'static [u8]) -> (BenchUrl, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            loop {
                let mut chunk = [0u8; 1024];
                let n = s.read(&mut chunk).await.unwrap();
                req.extend_from_slice(&chunk[..n]);
                if let Some(head) = parse_request(&req, 8192).unwrap() {
                    let mut answer = accept(&head, &HandshakeConfig::default()).unwrap().response;
                    answer.extend_from_slice(extra);
                    s.write_all(&answer).await.unwrap();
                    return req;
                }
            }
        });
        let url = BenchUrl::parse(&format!("ws://{addr}/ws"), crate::Target::Wavecast).unwrap();
        (url, task)
    }

    #[tokio::test]
    async fn the_handshake_is_accepted_and_keeps_the_first_frames() {
        let (url, server) = answering(b"\x81\x02hi").await;
        let mut stream = open_tcp(url.addr, None).await.unwrap();
        let (rest, deflate) = websocket_handshake(&mut stream, &url, false).await.unwrap();
        assert_eq!(&rest[..], b"\x81\x02hi");
        assert!(!deflate);
        let request = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(request.starts_with("GET /ws HTTP/1.1\r\n"), "{request}");
        assert!(
            request.contains(&format!("\r\nHost: {}\r\n", url.host)),
            "{request}"
        );
    }
}
