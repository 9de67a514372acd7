//! Who may read the status page: HTTP Basic authentication (so a browser
//! asks for the password itself), any user name, the password being
//! `status_password` or, without one, the API key; and a throttle on
//! failed attempts by client address.
//!
//! The throttle counts an address's failures (requests with wrong or
//! malformed credentials; one without any is answered 401 but not
//! counted, as a browser's first request has none) in a window of
//! [`WINDOW`]; at [`MAX_FAILURES`] the address gets 429 with
//! `Retry-After` until the window ends, even with the right password (or
//! guessing would just go on). The table of addresses is bounded at
//! [`MAX_TRACKED`]: when it is full of addresses whose windows are still
//! open, an address not in it is refused (429) rather than tracked. That
//! fails closed: a flood of failing addresses can keep a new one out for
//! at most a window, but can never make guessing free.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Failed attempts of one address allowed within [`WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window over which failures are counted.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most client addresses the throttle tracks at once.
pub const MAX_TRACKED: usize = 4096;

/// What a request's credentials come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The right password: serve the page.
    Allowed,
    /// Missing or wrong credentials: 401 with a Basic challenge.
    Denied,
    /// Too many failures from this address: 429, retry after this long.
    Throttled(Duration),
}

/// Failed attempts by client address (see the module comment).
#[derive(Debug)]
pub struct Throttle {
    capacity: usize,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::with_capacity(MAX_TRACKED)
    }
}

impl Throttle {
    /// A throttle tracking `capacity` addresses at most.
    pub fn with_capacity(capacity: usize) -> Self {
        Throttle {
            capacity,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        // A panic elsewhere while holding it leaves only counts behind.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Judges one request from `peer` at `now`, whose `Authorization`
    /// header is `header`, against `password`.
    pub fn check(
        &self,
        now: Instant,
        peer: IpAddr,
        header: Option<&str>,
        password: &str,
    ) -> Verdict {
        let mut map = self.lock();
        if let Some(&(start, n)) = map.get(&peer) {
            let end = start + WINDOW;
            if now >= end {
                map.remove(&peer);
            } else if n >= MAX_FAILURES {
                return Verdict::Throttled(end - now);
            }
        }
        if basic_password(header)
            .is_some_and(|p| constant_time_eq(p.as_bytes(), password.as_bytes()))
        {
            return Verdict::Allowed;
        }
        // No credentials at all is not a guess: a browser's first request
        // never has any (it asks the user after the 401). Counting those
        // would throttle an operator who merely opened the page a few times.
        if header.is_none() {
            return Verdict::Denied;
        }
        if !map.contains_key(&peer) && map.len() >= self.capacity {
            map.retain(|_, (start, _)| now < *start + WINDOW);
            if map.len() >= self.capacity {
                // Full of open windows: refuse rather than forget one.
                return Verdict::Throttled(WINDOW);
            }
        }
        let entry = map.entry(peer).or_insert((now, 0));
        entry.1 += 1;
        Verdict::Denied
    }
}

/// The password of an `Authorization: Basic ...` header (user name
/// ignored); `None` if there is none or it is malformed.
fn basic_password(header: Option<&str>) -> Option<String> {
    let (scheme, rest) = header?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(password: &str) -> String {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("ops:{password}"));
        format!("Basic {b}")
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn the_password_is_checked() {
        let t = Throttle::default();
        let now = Instant::now();
        assert_eq!(
            t.check(now, ip(1), Some(&basic("s3cret")), "s3cret"),
            Verdict::Allowed
        );
        assert_eq!(
            t.check(now, ip(1), Some(&basic("wrong")), "s3cret"),
            Verdict::Denied
        );
        assert_eq!(t.check(now, ip(1), None, "s3cret"), Verdict::Denied);
        assert_eq!(
            t.check(now, ip(1), Some("Bearer x"), "s3cret"),
            Verdict::Denied
        );
        assert_eq!(
            t.check(now, ip(1), Some("Basic !!!"), "s3cret"),
            Verdict::Denied
        );
    }

    #[test]
    fn a_request_without_credentials_is_not_a_failure() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..(2 * MAX_FAILURES) {
            assert_eq!(t.check(now, ip(1), None, "pw"), Verdict::Denied);
        }
        assert_eq!(t.tracked(), 0);
        assert_eq!(
            t.check(now, ip(1), Some(&basic("pw")), "pw"),
            Verdict::Allowed
        );
    }

    #[test]
    fn failures_throttle_an_address_for_the_window() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                t.check(now, ip(1), Some(&basic("x")), "pw"),
                Verdict::Denied
            );
        }
        // Even the right password waits out the window.
        let later = now + Duration::from_secs(10);
        assert_eq!(
            t.check(later, ip(1), Some(&basic("pw")), "pw"),
            Verdict::Throttled(Duration::from_secs(50))
        );
        // Another address is not affected.
        assert_eq!(
            t.check(later, ip(2), Some(&basic("pw")), "pw"),
            Verdict::Allowed
        );
        // After the window, the address may try again.
        assert_eq!(
            t.check(now + WINDOW, ip(1), Some(&basic("pw")), "pw"),
            Verdict::Allowed
        );
    }

    #[test]
    fn the_table_of_addresses_is_bounded() {
        let t = Throttle::with_capacity(3);
        let now = Instant::now();
        for n in 0..3 {
            assert_eq!(
                t.check(now, ip(n), Some(&basic("x")), "pw"),
                Verdict::Denied
            );
        }
        assert_eq!(t.tracked(), 3);
        // Full of open windows: a new address is refused, not tracked,
        // even with the right password.
        assert_eq!(
            t.check(now, ip(9), Some(&basic("pw")), "pw"),
            Verdict::Allowed
        );
        assert_eq!(
            t.check(now, ip(9), Some(&basic("x")), "pw"),
            Verdict::Throttled(WINDOW)
        );
        assert_eq!(t.tracked(), 3);
        // Once their windows are over, the old entries make room.
        assert_eq!(
            t.check(now + WINDOW, ip(9), Some(&basic("x")), "pw"),
            Verdict::Denied
        );
        assert_eq!(t.tracked(), 1);
    }
}
