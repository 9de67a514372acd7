//! A publication's data, the same ASCII text for every target:
//! `~SEQ:SENT_NS:` padded with `x` to the payload size. The publisher
//! writes it ([`write_payload`]); readers find it inside the target's
//! envelope ([`parse_marker`]).

/// Writes a publication's data: `~SEQ:SENT_NS:` padded with `x` to `size`
/// bytes (longer if `size` is too small for the two numbers).
pub fn write_payload(out: &mut Vec<u8>, seq: u64, sent_ns: u64, size: usize) {
    use std::io::Write;
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "~{seq}:{sent_ns}:");
    let written = out.len() - start;
    out.resize(start + written.max(size), b'x');
}

/// Finds the `~SEQ:SENT_NS:` marker in a message and parses it.
pub fn parse_marker(msg: &[u8]) -> Option<(u64, u64)> {
    let start = msg.iter().position(|&b| b == b'~')?;
    let rest = msg.get(start + 1..)?;
    let (seq, rest) = parse_decimal(rest)?;
    let rest = rest.strip_prefix(b":")?;
    let (sent, rest) = parse_decimal(rest)?;
    rest.strip_prefix(b":")?;
    Some((seq, sent))
}

fn parse_decimal(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in s.get(..digits)? {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((v, s.get(digits..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_size_and_parses_back() {
        let mut p = Vec::new();
        write_payload(&mut p, 42, 123_456_789, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(parse_marker(&p), Some((42, 123_456_789)));
        // Too small a size: the numbers still fit.
        let mut p = Vec::new();
        write_payload(&mut p, 7, 8, 1);
        assert_eq!(p, b"~7:8:");
    }

    #[test]
    fn broken_markers_are_not_publications() {
        for bad in [
            &b"~"[..],
            b"~1",
            b"~1:",
            b"~1:2",
            b"~a:2:",
            b"~99999999999999999999999:1:",
            b"no marker",
        ] {
            assert_eq!(
                parse_marker(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
