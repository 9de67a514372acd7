//! Low-level writers for the encoders: JSON string literals and numbers,
//! and MessagePack integers, lengths, strings and values, appended to a
//! `Vec<u8>` without going through serde.

/// Writes `s` as a JSON string literal: escapes `"`, `\` and the control
/// characters below 0x20, nothing else (JSON allows every other character).
pub(super) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut rest = s.as_bytes();
    while let Some(i) = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
    {
        let (plain, tail) = rest.split_at(i);
        out.extend_from_slice(plain);
        let Some((&b, tail)) = tail.split_first() else {
            break;
        };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        rest = tail;
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

pub(super) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

pub(super) fn mp_uint(out: &mut Vec<u8>, n: u64) {
    if n < 0x80 {
        out.push(n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[0xcc, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xcd);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(n) {
        out.push(0xce);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn mp_int(out: &mut Vec<u8>, n: i64) {
    if let Ok(n) = u64::try_from(n) {
        mp_uint(out, n);
    } else if n >= -32 {
        // Negative fixint: the two's-complement byte itself.
        out.push(n as u8);
    } else if let Ok(n) = i8::try_from(n) {
        out.push(0xd0);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = i16::try_from(n) {
        out.push(0xd1);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = i32::try_from(n) {
        out.push(0xd2);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Writes a length-prefixed header: `fix` holds lengths below `fix_limit`
/// in its low bits, then 16- and 32-bit lengths follow markers `m16`/`m32`.
/// Lengths over u32::MAX cannot occur (every input is bounded by the
/// message size limit); they are clamped so the writer never panics.
fn mp_len(out: &mut Vec<u8>, len: usize, fix: u8, fix_limit: usize, m16: u8, m32: u8) {
    if len < fix_limit {
        out.push(fix | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(m16);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(m32);
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    }
}

pub(super) fn mp_map_len(out: &mut Vec<u8>, len: usize) {
    mp_len(out, len, 0x80, 16, 0xde, 0xdf);
}

pub(super) fn mp_array_len(out: &mut Vec<u8>, len: usize) {
    mp_len(out, len, 0x90, 16, 0xdc, 0xdd);
}

pub(super) fn mp_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, len]);
    } else {
        mp_len(out, len, 0, 0, 0xda, 0xdb);
    }
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn mp_value(out: &mut Vec<u8>, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                mp_uint(out, n);
            } else if let Some(n) = n.as_i64() {
                mp_int(out, n);
            } else if let Some(f) = n.as_f64() {
                out.push(0xcb);
                out.extend_from_slice(&f.to_be_bytes());
            } else {
                out.push(0xc0);
            }
        }
        Value::String(s) => mp_str(out, s),
        Value::Array(items) => {
            mp_array_len(out, items.len());
            for item in items {
                mp_value(out, item);
            }
        }
        Value::Object(map) => {
            mp_map_len(out, map.len());
            for (key, item) in map {
                mp_str(out, key);
                mp_value(out, item);
            }
        }
    }
}
