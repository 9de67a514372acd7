//! A publication's data, the same ASCII text for every target:
//! `~SEQ:SENT_NS:` padded with `x` to the payload size, or (`--json-data`)
//! a JSON object of that size that starts with the marker. The publisher
//! writes it ([`write_payload`], [`write_json_payload`]); readers find it
//! inside the target's envelope ([`parse_marker`]).

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

/// Tickers of the JSON rows.
const SYMBOLS: [&str; 16] = [
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "BRK.B", "JPM", "V", "XOM", "UNH",
    "BTC-USD", "ETH-USD", "EUR-USD", "GBP-JPY",
];

/// Writes a publication's data as a JSON object of `size` bytes (more if
/// `size` is below the smallest such object): the marker, then rows of
/// trades, like a trading screen's update:
/// `{"m":"~SEQ:SENT_NS:","rows":[{"s":"NVDA","p":912.35,"q":300,"side":"buy","t":1733...},...],"pad":"..."}`.
/// Values come from a generator seeded by `seq`, so publications differ and
/// compress the way real ones do (deflate takes them to about a third),
/// unlike a run of one letter. No `~` but the marker's, no `"` inside a
/// value, no backslash: the text is also a valid JSON string body once
/// its quotes are escaped.
pub fn write_json_payload(out: &mut Vec<u8>, seq: u64, sent_ns: u64, size: usize) {
    use std::io::Write;
    let start = out.len();
    let _ = write!(out, "{{\"m\":\"~{seq}:{sent_ns}:\",\"rows\":[");
    // The tail written after the rows: `],"pad":"` ... `"}`.
    const TAIL: usize = 11;
    // Longest row: the keys, quotes and separators (34), then symbol 7,
    // price 8, size 5, side 4 and time 20 at most.
    const ROW_MAX: usize = 34 + 7 + 8 + 5 + 4 + 20;
    let mut rng = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        // xorshift64*: enough for data that looks varied.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut first = true;
    let mut time_us = sent_ns / 1000;
    while out.len() - start + ROW_MAX + TAIL <= size {
        let r = next();
        let symbol_index = usize::try_from(r % SYMBOLS.len() as u64).unwrap_or(0);
        let symbol = SYMBOLS.get(symbol_index).copied().unwrap_or("AAPL");
        let price = 10 + (symbol_index as u64 * 37) % 900;
        let cents = (r >> 8) % 100;
        let qty = ((r >> 16) % 50 + 1) * 100;
        let side = if (r >> 24) & 1 == 0 { "buy" } else { "sell" };
        time_us += (r >> 32) % 5000;
        let _ = write!(
            out,
            "{}{{\"s\":\"{symbol}\",\"p\":{price}.{cents:02},\"q\":{qty},\"side\":\"{side}\",\"t\":{time_us}}}",
            if first { "" } else { "," }
        );
        first = false;
    }
    out.extend_from_slice(b"],\"pad\":\"");
    let pad = size.saturating_sub(out.len() - start + 2);
    for _ in 0..pad {
        let letter = b'a' + u8::try_from(next() % 26).unwrap_or(0);
        out.push(letter);
    }
    out.extend_from_slice(b"\"}");
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
    fn json_payload_is_json_of_the_asked_size_and_parses_back() {
        for size in [0, 64, 100, 1024, 1025, 4096, 65536] {
            for seq in [0, 1, 77, u64::MAX] {
                let mut p = b"before".to_vec();
                write_json_payload(&mut p, seq, 1_733_212_345_678_901_234, size);
                let p = &p[6..];
                // The smallest object (the marker, no rows, no pad) is
                // under 80 bytes with the largest numbers.
                if size >= 80 {
                    assert_eq!(p.len(), size, "size {size}");
                } else {
                    assert!(p.len() < 80, "size {size}: {}", p.len());
                }
                let v: serde_json::Value = serde_json::from_slice(p).unwrap();
                assert!(v["rows"].is_array());
                assert_eq!(parse_marker(p), Some((seq, 1_733_212_345_678_901_234)));
                assert_eq!(p.iter().filter(|&&b| b == b'~').count(), 1);
                assert!(!p.contains(&b'\\'));
            }
        }
        // Publications differ, and are not a run of one letter: deflate
        // takes them to between a fifth and a half.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_json_payload(&mut a, 1, 5, 4096);
        write_json_payload(&mut b, 2, 5, 4096);
        assert_ne!(a, b);
        let compressed = wavecast_core::deflate::Codec::new(1)
            .compress(&a)
            .unwrap()
            .len();
        assert!(
            compressed > a.len() / 5 && compressed < a.len() / 2,
            "{compressed}"
        );
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
