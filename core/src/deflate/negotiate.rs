//! The permessage-deflate offer and answer (RFC 7692 sections 5 and 7.1),
//! over the `Sec-WebSocket-Extensions` grammar of RFC 6455 section 9.1:
//!
//! ```text
//! extension-list  = 1#extension
//! extension       = extension-token *( ";" extension-param )
//! extension-param = token [ "=" (token | quoted-string) ]
//! ```
//!
//! The server accepts the first offer, in the client's order, that it can
//! honour, and always answers `server_no_context_takeover;
//! client_no_context_takeover` (sections 7.1.1.1 and 7.1.1.2 let the server
//! add both to an offer without them). An offer is declined (section 7,
//! "the server MUST decline") when it has an unknown parameter, a parameter
//! twice, or a parameter with an invalid value; and when it asks for
//! `server_max_window_bits` below 15, a window the deflater (set up with a
//! 32 KiB window, once per shard) does not keep to (section 7.1.2.1 allows declining).
//! `client_max_window_bits` needs no answer: the inflater takes any window
//! up to 32 KiB (section 7.1.2.2).

/// The answer to an accepted offer.
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The answer to an accepted offer that named `server_max_window_bits=15`
/// (section 7.1.2.1: accepting that parameter means answering it).
pub const RESPONSE_WINDOW_15: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15";

/// The extension name (section 5).
pub const NAME: &str = "permessage-deflate";

/// An accepted permessage-deflate offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Negotiated {
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub response: &'static str,
}

/// The permessage-deflate offer to accept among the client's
/// `Sec-WebSocket-Extensions` header values (several headers, comma lists),
/// or `None`: nothing offered, or nothing acceptable (the response then
/// carries no extension header, which declines every offer).
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Negotiated> {
    values
        .into_iter()
        .flat_map(|v| split_outside_quotes(v, b','))
        .find_map(accept_offer)
}

/// One extension of the list: `Some` if it is a permessage-deflate offer we
/// accept.
fn accept_offer(extension: &[u8]) -> Option<Negotiated> {
    let mut parts = split_outside_quotes(extension, b';').into_iter();
    let name = trim(parts.next()?);
    if !name.eq_ignore_ascii_case(NAME.as_bytes()) {
        return None;
    }
    let mut seen = [false; 4];
    let mut window_15 = false;
    for param in parts {
        let (key, value) = parse_param(param)?;
        let index = match key.to_ascii_lowercase().as_slice() {
            b"server_no_context_takeover" => 0,
            b"client_no_context_takeover" => 1,
            b"server_max_window_bits" => 2,
            b"client_max_window_bits" => 3,
            _ => return None,
        };
        let slot = seen.get_mut(index)?;
        if *slot {
            return None;
        }
        *slot = true;
        match index {
            // Sections 7.1.1.1 and 7.1.1.2: no value.
            0 | 1 if value.is_some() => return None,
            2 => {
                // Section 7.1.2.1: a value is required; only 15 is ours.
                if window_bits(value.as_deref()?)? != 15 {
                    return None;
                }
                window_15 = true;
            }
            // Section 7.1.2.2: the value may be left out.
            3 => {
                if let Some(v) = value.as_deref() {
                    window_bits(v)?;
                }
            }
            _ => {}
        }
    }
    Some(Negotiated {
        response: if window_15 {
            RESPONSE_WINDOW_15
        } else {
            RESPONSE
        },
    })
}

/// The offer a client makes when it wants no zlib state kept between
/// messages in either direction (what wavecast's server answers anyway):
/// the value of its `Sec-WebSocket-Extensions` request header.
pub const CLIENT_OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Why a server's `Sec-WebSocket-Extensions` answer to [`CLIENT_OFFER`] is
/// not one the client may accept (RFC 7692 section 5: the client must then
/// fail the connection). The server is at fault in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientAnswerError {
    /// Not exactly one extension, or not permessage-deflate.
    #[error("the server answered with another extension than the permessage-deflate offered")]
    NotOffered,
    /// A parameter the offer did not allow, malformed, or given twice
    /// (sections 7.1.1 and 7.1.2).
    #[error("the server's permessage-deflate answer has a bad parameter")]
    BadParameter,
    /// `server_no_context_takeover` left out: section 7.1.1.1 requires a
    /// server that accepts an offer with it to answer it.
    #[error("the server's permessage-deflate answer leaves out server_no_context_takeover")]
    ContextTakeover,
}

/// Checks a server's answer to [`CLIENT_OFFER`]: the extension elements of
/// its `Sec-WebSocket-Extensions` headers (the client's side of section 5).
/// `client_max_window_bits` may not appear (the offer did not name it,
/// section 7.1.2.2); `server_max_window_bits` may (any value: the client
/// inflates any window).
pub fn check_client_answer(elements: &[&[u8]]) -> Result<(), ClientAnswerError> {
    let [extension] = elements else {
        return Err(ClientAnswerError::NotOffered);
    };
    let mut parts = split_outside_quotes(extension, b';').into_iter();
    let name = trim(parts.next().unwrap_or(&[]));
    if !name.eq_ignore_ascii_case(NAME.as_bytes()) {
        return Err(ClientAnswerError::NotOffered);
    }
    let mut seen = [false; 3];
    for param in parts {
        let (key, value) = parse_param(param).ok_or(ClientAnswerError::BadParameter)?;
        let index = match key.to_ascii_lowercase().as_slice() {
            b"server_no_context_takeover" if value.is_none() => 0,
            b"client_no_context_takeover" if value.is_none() => 1,
            b"server_max_window_bits" => {
                window_bits(value.as_deref().unwrap_or(&[]))
                    .ok_or(ClientAnswerError::BadParameter)?;
                2
            }
            _ => return Err(ClientAnswerError::BadParameter),
        };
        let slot = seen.get_mut(index).ok_or(ClientAnswerError::BadParameter)?;
        if *slot {
            return Err(ClientAnswerError::BadParameter);
        }
        *slot = true;
    }
    if seen[0] {
        Ok(())
    } else {
        Err(ClientAnswerError::ContextTakeover)
    }
}

/// A window size value: `8` to `15`, decimal, no leading zero (section
/// 7.1.2.1's ABNF `%x38-39 / %x31 %x30-35`).
fn window_bits(v: &[u8]) -> Option<u8> {
    match v {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// `token [ "=" (token | quoted-string) ]`, surrounding whitespace removed;
/// the value unquoted (section 7: a quoted value must be a token once
/// unquoted). `None` if malformed.
fn parse_param(param: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let param = trim(param);
    let (key, value) = match param.iter().position(|&b| b == b'=') {
        Some(eq) => (trim(param.get(..eq)?), Some(trim(param.get(eq + 1..)?))),
        None => (param, None),
    };
    if !is_token(key) {
        return None;
    }
    let value = match value {
        None => None,
        Some([b'"', inner @ .., b'"']) => {
            let mut out = Vec::with_capacity(inner.len());
            let mut escaped = false;
            for &b in inner {
                match (escaped, b) {
                    (false, b'\\') => escaped = true,
                    (false, b'"') => return None,
                    _ => {
                        out.push(b);
                        escaped = false;
                    }
                }
            }
            if escaped || !is_token(&out) {
                return None;
            }
            Some(out)
        }
        Some(v) if is_token(v) => Some(v.to_vec()),
        Some(_) => return None,
    };
    Some((key.to_vec(), value))
}

/// RFC 7230 section 3.2.6 `token`: one or more tchar.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// Splits at `sep` where it is not inside a quoted string (a backslash
/// escapes the next byte inside quotes).
fn split_outside_quotes(s: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in s.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            parts.push(s.get(start..i).unwrap_or(&[]));
            start = i + 1;
        }
    }
    parts.push(s.get(start..).unwrap_or(&[]));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(values: &[&str]) -> Option<&'static str> {
        negotiate(values.iter().map(|v| v.as_bytes())).map(|n| n.response)
    }

    /// The client's side of section 5: the server's own answers pass; an
    /// answer that drops server_no_context_takeover (7.1.1.1), names a
    /// parameter not offered, or another extension, fails the connection.
    #[test]
    fn a_client_checks_the_answer_to_its_offer() {
        let check = |v: &str| {
            let elements: Vec<&[u8]> = v.split(',').map(str::as_bytes).collect();
            check_client_answer(&elements)
        };
        for good in [
            RESPONSE,
            RESPONSE_WINDOW_15,
            "permessage-deflate; server_no_context_takeover",
            "PERMESSAGE-DEFLATE;SERVER_NO_CONTEXT_TAKEOVER; server_max_window_bits=\"10\"",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
            // What the server answers to the client's offer is accepted.
            let answer = negotiate([CLIENT_OFFER.as_bytes()]).unwrap().response;
            assert_eq!(check(answer), Ok(()));
        }
        for (bad, why) in [
            ("permessage-deflate", ClientAnswerError::ContextTakeover),
            (
                "permessage-deflate; client_no_context_takeover",
                ClientAnswerError::ContextTakeover,
            ),
            ("x-webkit-deflate-frame", ClientAnswerError::NotOffered),
            (
                "permessage-deflate; server_no_context_takeover, permessage-deflate",
                ClientAnswerError::NotOffered,
            ),
            (
                "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
                ClientAnswerError::BadParameter,
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                ClientAnswerError::BadParameter,
            ),
            (
                "permessage-deflate; server_no_context_takeover=1",
                ClientAnswerError::BadParameter,
            ),
            (
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=16",
                ClientAnswerError::BadParameter,
            ),
            (
                "permessage-deflate; server_no_context_takeover; foo",
                ClientAnswerError::BadParameter,
            ),
        ] {
            assert_eq!(check(bad), Err(why), "{bad}");
        }
    }

    /// Section 5 / 7: the plain offer is accepted with both
    /// no_context_takeover parameters added (7.1.1.1, 7.1.1.2).
    #[test]
    fn plain_offer_gets_both_no_context_takeover() {
        assert_eq!(n(&["permessage-deflate"]), Some(RESPONSE));
        assert_eq!(n(&["Permessage-Deflate"]), Some(RESPONSE));
    }

    /// What browsers, Python websockets and Node ws offer (7.1.2.2: a
    /// `client_max_window_bits` without value needs no answer).
    #[test]
    fn real_client_offers() {
        assert_eq!(
            n(&["permessage-deflate; client_max_window_bits"]),
            Some(RESPONSE)
        );
        assert_eq!(
            n(&["permessage-deflate; server_max_window_bits=15; client_max_window_bits=15"]),
            Some(RESPONSE_WINDOW_15)
        );
        assert_eq!(
            n(&["permessage-deflate; client_no_context_takeover; server_no_context_takeover"]),
            Some(RESPONSE)
        );
    }

    /// Section 7.1.2.1: a window below 15 is declined; the next offer in
    /// the list is taken (section 5: "the server MAY accept ... any of
    /// them", in the client's preference order).
    #[test]
    fn small_server_window_declined_then_fallback() {
        assert_eq!(n(&["permessage-deflate; server_max_window_bits=10"]), None);
        assert_eq!(
            n(&["permessage-deflate; server_max_window_bits=10, permessage-deflate"]),
            Some(RESPONSE)
        );
        assert_eq!(
            n(&[
                "permessage-deflate; server_max_window_bits=10",
                "permessage-deflate"
            ]),
            Some(RESPONSE)
        );
    }

    /// Section 7: unknown parameters, duplicates and invalid values make
    /// the server decline the offer.
    #[test]
    fn invalid_offers_declined() {
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=yes",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=015",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=",
            "permessage-deflate; client_max_window_bits=15; client_max_window_bits",
            "permessage-deflate; =15",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(n(&[bad]), None, "{bad}");
        }
    }

    /// Section 7.1.2.2 with a quoted value (RFC 6455 9.1 allows a
    /// quoted-string; section 7 wants a token once unquoted).
    #[test]
    fn quoted_values() {
        assert_eq!(
            n(&["permessage-deflate; client_max_window_bits=\"10\""]),
            Some(RESPONSE)
        );
        assert_eq!(
            n(&["permessage-deflate; server_max_window_bits=\"15\""]),
            Some(RESPONSE_WINDOW_15)
        );
        assert_eq!(
            n(&["permessage-deflate; client_max_window_bits=\"1 0\""]),
            None
        );
        // A comma inside quotes does not split the list.
        assert_eq!(
            n(&["permessage-deflate; client_max_window_bits=\"1,0\""]),
            None
        );
    }

    /// Other extensions before ours are skipped, not a reason to decline.
    #[test]
    fn other_extensions_skipped() {
        assert_eq!(n(&["foo; bar=1, permessage-deflate"]), Some(RESPONSE));
        assert_eq!(
            n(&["foo", " permessage-deflate ; client_max_window_bits "]),
            Some(RESPONSE)
        );
    }
}
