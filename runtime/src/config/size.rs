//! Byte sizes with units: `512` (bytes), `64KiB`, `1MiB`, `1GiB`, `1TiB`
//! (powers of 1024) and `64kB`, `1MB`, `1GB`, `1TB` (powers of 1000); the
//! unit's case does not matter and a space may stand before it. A flag or
//! variable is such a string; a TOML key is a string or an integer (bytes).

use std::fmt;

/// A size that could not be read; names what was given and what is
/// expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a size: {why}; expected a size like 64KiB, 1MiB, 1GiB or 512 (bytes)")]
pub struct SizeError {
    /// What was given.
    pub given: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The units, lowercase, and their factors.
const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Reads a size (see the module's doc) as a number of bytes.
pub fn parse_size(s: &str) -> Result<usize, SizeError> {
    let error = |why| SizeError {
        given: s.to_owned(),
        why,
    };
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(error("it does not start with a whole number"));
    }
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| error("the number is too large"))?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let Some(&(_, factor)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(error(
            "unknown unit (B, KiB, MiB, GiB, TiB, or kB, MB, GB, TB)",
        ));
    };
    number
        .checked_mul(factor)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| error("it is too large"))
}

/// Writes a size the way [`parse_size`] reads it, in the largest binary
/// unit that divides it (`65536` is `64KiB`), for `wavecast genconfig`.
pub fn format_size(bytes: usize) -> String {
    for (unit, factor) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        let b = bytes as u64;
        if b >= factor && b.is_multiple_of(factor) {
            return format!("{}{unit}", b / factor);
        }
    }
    bytes.to_string()
}

/// serde for an optional size in the file: an integer (bytes) or a string
/// with a unit.
pub(super) mod opt_size {
    use super::*;
    use serde::de::{self, Deserializer, Visitor};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_any(SizeVisitor).map(Some)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = usize;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a size like 64KiB, 1MiB or 512 (bytes), as a string or an integer")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom(format!("{v} is not a size: it is negative; expected a size like 64KiB, 1MiB or 512 (bytes)")))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom(format!("{v} is too large a size")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
            parse_size(v).map_err(E::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        for (s, n) in [
            ("512", 512),
            ("0", 0),
            ("512B", 512),
            ("64KiB", 65536),
            ("64kib", 65536),
            ("64 KiB", 65536),
            ("1MiB", 1 << 20),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("64kB", 64_000),
            ("64KB", 64_000),
            ("1MB", 1_000_000),
            (" 3GB ", 3_000_000_000),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
    }

    #[test]
    fn bad_sizes_say_what_is_expected() {
        for s in [
            "",
            "KiB",
            "-1",
            "1.5MiB",
            "64KiBs",
            "64 parsecs",
            "99999999999999999999",
        ] {
            let e = parse_size(s).unwrap_err();
            assert!(
                e.to_string().contains("expected a size like 64KiB"),
                "{s}: {e}"
            );
        }
        assert!(parse_size("20000000TiB").is_err());
    }

    #[test]
    fn formatted_sizes_read_back() {
        for n in [
            0,
            1,
            1000,
            1024,
            65536,
            1 << 20,
            256 << 20,
            3 << 30,
            1 << 40,
            1234567,
        ] {
            assert_eq!(parse_size(&format_size(n)), Ok(n), "{n}");
        }
        assert_eq!(format_size(65536), "64KiB");
        assert_eq!(format_size(1000), "1000");
    }
}
