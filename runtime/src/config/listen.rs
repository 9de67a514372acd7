//! The listen address: `ADDRESS:PORT` (`0.0.0.0:8000`, `[::1]:8000`) or
//! `HOST:PORT`. `localhost` is 127.0.0.1 without asking the resolver (it
//! may answer `::1` first, or both); any other name is resolved once, at
//! load, and must resolve to exactly one address: a server listens on one
//! address, and picking one of several would pick differently from one
//! start to the next.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Reads a listen address (see the module's doc).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let expected = "expected ADDRESS:PORT or HOST:PORT, like 127.0.0.1:8000 or localhost:8000";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} has no port: {expected}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port (0 to 65535): {expected}"))?;
    if host.is_empty() || host.contains([':', '[', ']', '/', ' ']) {
        return Err(format!("{s:?} is not an address: {expected}"));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    let found: BTreeSet<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    let mut found = found.into_iter();
    match (found.next(), found.next()) {
        (Some(addr), None) => Ok(addr),
        (None, _) => Err(format!("{host:?} resolves to no address")),
        (Some(a), Some(b)) => {
            let rest: Vec<String> = [a, b]
                .into_iter()
                .chain(found)
                .map(|a| a.ip().to_string())
                .collect();
            Err(format!(
                "{host:?} resolves to several addresses ({}): give the one to listen on",
                rest.join(", ")
            ))
        }
    }
}

/// serde for the optional listen address in the file.
pub(super) mod opt_listen {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| super::parse_listen(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_localhost() {
        assert_eq!(
            parse_listen("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(parse_listen("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(
            parse_listen("localhost:8000").unwrap(),
            "127.0.0.1:8000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("LocalHost:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
    }

    #[test]
    fn bad_listen_addresses_say_why() {
        for (s, word) in [
            ("localhost", "no port"),
            ("localhost:http", "not a port"),
            ("localhost:70000", "not a port"),
            (":8000", "not an address"),
            ("no-such-host.invalid:8000", "cannot resolve"),
        ] {
            let e = parse_listen(s).unwrap_err();
            assert!(e.contains(word), "{s}: {e}");
        }
    }
}
