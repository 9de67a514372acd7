//! The client side of the opening handshake (RFC 6455 section 4.1): the
//! upgrade request a client sends ([`ClientHandshake::new`]) and the checks
//! a client must make of the server's answer
//! ([`ClientHandshake::read_response`]). Pure functions over bytes, like the
//! server side; the 16-byte nonce is passed in (randomness is the caller's).

use base64::Engine as _;

use super::{accept_key, list_elements, MAX_HEADERS};

/// Largest response head a client reads before giving up (a server's 101
/// is about 150 bytes; an error page's head is a few hundred).
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// One opening handshake in progress: the request it sent and what the
/// answer must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    request: Vec<u8>,
    key: String,
    subprotocols: Vec<String>,
    /// permessage-deflate was offered ([`ClientHandshake::offering_deflate`]).
    deflate: bool,
}

/// A server's `101 Switching Protocols` that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAccepted {
    /// Length of the response head, including the final CRLFCRLF; the bytes
    /// after it are the server's first frames.
    pub head_len: usize,
    /// The subprotocol the server chose (one the client offered), if any.
    pub subprotocol: Option<String>,
    /// The server accepted the permessage-deflate offer (with no context
    /// takeover in either direction): messages may arrive compressed.
    pub deflate: bool,
}

/// Why the server's answer is not a valid acceptance. `Refused` is the
/// server's decision (the status says why); the others are the server
/// breaking RFC 6455 section 4.1, after which the client must fail the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientHandshakeError {
    /// The head did not end within [`MAX_RESPONSE_HEAD`] bytes.
    #[error("response head longer than {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    /// Not an HTTP/1.1 response head.
    #[error("malformed response head: {0}")]
    Malformed(String),
    /// The server answered with another status than 101.
    #[error("the server refused the upgrade with status {status}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Length of the response head (the body follows).
        head_len: usize,
    },
    /// `Upgrade: websocket` is missing.
    #[error("101 without Upgrade: websocket")]
    MissingUpgrade,
    /// `Connection: Upgrade` is missing.
    #[error("101 without Connection: Upgrade")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Accept` is missing or does not match the key sent.
    #[error("Sec-WebSocket-Accept does not match the key")]
    BadAccept,
    /// The server chose a subprotocol the client did not offer.
    #[error("the server chose subprotocol {0:?}, which was not offered")]
    UnofferedSubprotocol(String),
    /// The server answered with an extension the client did not ask for.
    #[error("the server used extension {0:?}, which was not asked for")]
    UnaskedExtension(String),
    /// The server's answer to the permessage-deflate offer breaks RFC 7692.
    #[error(transparent)]
    BadDeflateAnswer(#[from] crate::deflate::ClientAnswerError),
}

impl ClientHandshake {
    /// The upgrade request for `path` on `host` (`host[:port]`), offering
    /// `subprotocols` in preference order. `nonce` must be fresh random bytes
    /// per handshake (RFC 6455 section 4.1); the key is its base64.
    pub fn new(nonce: [u8; 16], host: &str, path: &str, subprotocols: &[&str]) -> ClientHandshake {
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        if !subprotocols.is_empty() {
            request.push_str("Sec-WebSocket-Protocol: ");
            request.push_str(&subprotocols.join(", "));
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        ClientHandshake {
            request: request.into_bytes(),
            key,
            subprotocols: subprotocols.iter().map(|s| (*s).to_owned()).collect(),
            deflate: false,
        }
    }

    /// The same request offering permessage-deflate with no context
    /// takeover either way ([`crate::deflate::CLIENT_OFFER`]), so the
    /// client needs no zlib state between messages.
    pub fn offering_deflate(mut self) -> ClientHandshake {
        if !self.deflate {
            // Before the blank line that ends the head.
            self.request.truncate(self.request.len() - 2);
            self.request.extend_from_slice(
                format!(
                    "Sec-WebSocket-Extensions: {}\r\n\r\n",
                    crate::deflate::CLIENT_OFFER
                )
                .as_bytes(),
            );
            self.deflate = true;
        }
        self
    }

    /// The bytes to send.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Checks the response at the front of `buf`. `Ok(None)` while the head
    /// is incomplete (read more and call again).
    pub fn read_response(
        &self,
        buf: &[u8],
    ) -> Result<Option<ClientAccepted>, ClientHandshakeError> {
        let offered: Vec<&str> = self.subprotocols.iter().map(String::as_str).collect();
        check_response(buf, &self.key, &offered, self.deflate)
    }
}

/// Checks a server's answer to an upgrade request sent with
/// `Sec-WebSocket-Key: key` offering `subprotocols` (for clients that write
/// their own request, such as tests of odd requests): the checks of
/// RFC 6455 section 4.1 that a client must make. `Ok(None)` while the head
/// is incomplete.
pub fn read_response(
    buf: &[u8],
    key: &str,
    subprotocols: &[&str],
) -> Result<Option<ClientAccepted>, ClientHandshakeError> {
    check_response(buf, key, subprotocols, false)
}

/// [`read_response`] for a request that offered permessage-deflate
/// (`deflate`) or no extension.
fn check_response(
    buf: &[u8],
    key: &str,
    subprotocols: &[&str],
    deflate: bool,
) -> Result<Option<ClientAccepted>, ClientHandshakeError> {
    let window = buf.get(..MAX_RESPONSE_HEAD).unwrap_or(buf);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(ClientHandshakeError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientHandshakeError::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Err(ClientHandshakeError::Refused { status, head_len });
    }
    let values = |name: &'static str| {
        resp.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &'static str, token: &str| {
        values(name)
            .flat_map(list_elements)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    };
    if !has_token("upgrade", "websocket") {
        return Err(ClientHandshakeError::MissingUpgrade);
    }
    if !has_token("connection", "upgrade") {
        return Err(ClientHandshakeError::MissingConnectionUpgrade);
    }
    let expected = accept_key(key.as_bytes());
    let mut accepts = values("sec-websocket-accept");
    match (accepts.next(), accepts.next()) {
        (Some(v), None) if super::trim_ows(v) == expected.as_bytes() => {}
        _ => return Err(ClientHandshakeError::BadAccept),
    }
    let extensions: Vec<&[u8]> = values("sec-websocket-extensions")
        .flat_map(list_elements)
        .collect();
    let deflate = match extensions.first() {
        None => false,
        Some(_) if deflate => {
            crate::deflate::check_client_answer(&extensions)?;
            true
        }
        Some(ext) => {
            return Err(ClientHandshakeError::UnaskedExtension(
                String::from_utf8_lossy(ext).into_owned(),
            ))
        }
    };
    let mut chosen = values("sec-websocket-protocol").flat_map(list_elements);
    let subprotocol = match (chosen.next(), chosen.next()) {
        (None, _) => None,
        (Some(p), None) => {
            let p = String::from_utf8_lossy(p).into_owned();
            if !subprotocols.contains(&p.as_str()) {
                return Err(ClientHandshakeError::UnofferedSubprotocol(p));
            }
            Some(p)
        }
        (Some(_), Some(_)) => {
            return Err(ClientHandshakeError::UnofferedSubprotocol(
                "more than one".to_owned(),
            ))
        }
    };
    Ok(Some(ClientAccepted {
        head_len,
        subprotocol,
        deflate,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{accept, parse_request, HandshakeConfig};

    const NONCE: [u8; 16] = *b"the sample nonce";

    #[test]
    fn the_request_is_accepted_by_the_server_side_and_its_answer_by_the_client() {
        let hs = ClientHandshake::new(NONCE, "127.0.0.1:8000", "/ws", &["wavecast.msgpack"]);
        // RFC 6455 section 1.3's sample nonce.
        assert_eq!(hs.key(), "dGhlIHNhbXBsZSBub25jZQ==");
        let head = parse_request(hs.request(), 8192).unwrap().unwrap();
        let accepted = accept(&head, &HandshakeConfig::default()).unwrap();
        let mut answer = accepted.response.clone();
        answer.extend_from_slice(b"\x81\x00");
        // Byte by byte, the head is incomplete until its last byte.
        let len = accepted.response.len();
        for n in 0..len {
            assert_eq!(hs.read_response(&answer[..n]), Ok(None), "at {n}");
        }
        assert_eq!(
            hs.read_response(&answer),
            Ok(Some(ClientAccepted {
                head_len: len,
                subprotocol: Some("wavecast.msgpack".into()),
                deflate: false,
            }))
        );
    }

    /// With the offer, the server side accepts permessage-deflate and the
    /// client side accepts its answer; without compression configured the
    /// server declines and the client goes on uncompressed.
    #[test]
    fn a_deflate_offer_is_accepted_by_the_server_side_or_declined() {
        let hs = ClientHandshake::new(NONCE, "h", "/ws", &[]).offering_deflate();
        let request = String::from_utf8(hs.request().to_vec()).unwrap();
        assert!(request.ends_with(&format!(
            "\r\nSec-WebSocket-Extensions: {}\r\n\r\n",
            crate::deflate::CLIENT_OFFER
        )));
        let head = parse_request(hs.request(), 8192).unwrap().unwrap();
        for (compression, deflate) in [(true, true), (false, false)] {
            let config = HandshakeConfig {
                compression,
                ..HandshakeConfig::default()
            };
            let accepted = accept(&head, &config).unwrap();
            let got = hs.read_response(&accepted.response).unwrap().unwrap();
            assert_eq!(got.deflate, deflate, "compression {compression}");
        }
        // An answer the offer does not allow fails the connection.
        let good = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
        assert!(matches!(
            hs.read_response(&answer(&format!(
                "{good}Sec-WebSocket-Extensions: permessage-deflate\r\n"
            ))),
            Err(ClientHandshakeError::BadDeflateAnswer(_))
        ));
    }

    fn answer(extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_response_that_breaks_the_rfc_fails_the_connection() {
        let hs = ClientHandshake::new(NONCE, "h", "/ws", &["wavecast.json"]);
        let good = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
        assert!(matches!(hs.read_response(&answer(good)), Ok(Some(_))));
        let cases: [(Vec<u8>, ClientHandshakeError); 6] = [
            (
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
                ClientHandshakeError::Refused {
                    status: 403,
                    head_len: 45,
                },
            ),
            (
                format!("HTTP/1.1 101 OK\r\nConnection: Upgrade\r\n{good}\r\n").into_bytes(),
                ClientHandshakeError::MissingUpgrade,
            ),
            (
                answer("Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"),
                ClientHandshakeError::BadAccept,
            ),
            (answer(""), ClientHandshakeError::BadAccept),
            (
                answer(&format!("{good}Sec-WebSocket-Protocol: other\r\n")),
                ClientHandshakeError::UnofferedSubprotocol("other".into()),
            ),
            (
                answer(&format!(
                    "{good}Sec-WebSocket-Extensions: permessage-deflate\r\n"
                )),
                ClientHandshakeError::UnaskedExtension("permessage-deflate".into()),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                hs.read_response(&bytes),
                Err(expected),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert!(matches!(
            hs.read_response(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ClientHandshakeError::Malformed(_))
        ));
        let mut endless = b"HTTP/1.1 101 Switching Protocols\r\nX-Filler: ".to_vec();
        endless.resize(MAX_RESPONSE_HEAD + 1, b'a');
        assert_eq!(
            hs.read_response(&endless),
            Err(ClientHandshakeError::HeadTooLarge)
        );
    }
}
