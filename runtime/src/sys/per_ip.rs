//! The per-address connection limit shared by every shard:
//! `--max-connections-per-ip`.
//!
//! `SO_REUSEPORT` spreads one address's connections over the shards, so the
//! count is the process's: one map from address to connections held, under
//! one lock. It is touched only when a handshake reserves a slot and when a
//! connection gives it back, never on the data path. An address leaves the
//! map when its last connection ends, so the map holds at most one entry per
//! address with a connection (and so at most `max_connections` entries).
//! With the limit off (0) nothing is counted and the lock is never taken.
//!
//! Giving a slot back needs the connection's address: a shard keeps it in
//! a [`PeerTable`] by connection slot, while the limit is on (4 bytes a
//! connection from an IPv4 address).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::sync::{AtomicUsize, Mutex, Ordering};

/// Connections held per client address, at most `max` each.
#[derive(Debug)]
pub struct PerIpLimit {
    /// 0: off (whether it is on is fixed at start; the value between
    /// limits may change with a reload).
    max: AtomicUsize,
    held: Mutex<BTreeMap<Ipv6Addr, u32>>,
}

/// An address as the limit counts it: IPv6, with IPv4 (and IPv4 seen
/// through a dual-stack socket, `::ffff:a.b.c.d`) as IPv4-mapped, so one
/// client is one key however it arrived.
pub fn key(ip: IpAddr) -> Ipv6Addr {
    match ip.to_canonical() {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

impl PerIpLimit {
    /// At most `max` connections per address; 0 turns the limit off.
    pub fn new(max: usize) -> Self {
        PerIpLimit {
            // More than u32::MAX connections cannot be held at once anyway.
            max: AtomicUsize::new(max.min(u32::MAX as usize)),
            held: Mutex::new(BTreeMap::new()),
        }
    }

    /// True when connections are counted (`max` > 0).
    pub fn is_on(&self) -> bool {
        self.max() > 0
    }

    /// Changes a limit that is on to another (a reload); an address that
    /// holds more than the new limit keeps its connections and gets no new
    /// one. Turning the limit on or off is refused (false): only a restart
    /// does that, since shards keep addresses only while it is on.
    pub fn set_max(&self, max: usize) -> bool {
        if !self.is_on() || max == 0 {
            return false;
        }
        self.max
            .store(max.min(u32::MAX as usize), Ordering::Release);
        true
    }

    /// Takes a slot for a connection from `ip`; false when it holds `max`
    /// already. Always true (and nothing counted) when the limit is off.
    pub fn try_acquire(&self, ip: IpAddr) -> bool {
        if !self.is_on() {
            return true;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key(ip)).or_insert(0);
        if *n >= self.max() {
            // Only an address already at `max` (> 0) gets here: its entry
            // was there before, so nothing is left at zero.
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back a slot of `ip`. Must follow a successful `try_acquire`
    /// for the same address; nothing when the limit is off.
    pub fn release(&self, ip: IpAddr) {
        if !self.is_on() {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let k = key(ip);
        match held.get_mut(&k) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                held.remove(&k);
            }
            None => debug_assert!(false, "released a slot of {ip} that was not held"),
        }
    }

    /// Connections `ip` holds now (0 when the limit is off).
    pub fn held(&self, ip: IpAddr) -> u32 {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&key(ip)).copied().unwrap_or(0)
    }

    /// Addresses holding at least one connection (the map's size).
    pub fn addresses(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The limit; 0: off.
    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Acquire) as u32
    }
}

/// The client addresses of one shard's connections, by connection slot
/// (single-threaded: the shard's own). An IPv4 address, most clients', is
/// kept in 4 bytes of a `Vec` by slot; an IPv6 one in a side map, by slot.
#[derive(Debug, Default)]
pub struct PeerTable {
    /// By slot: the IPv4 address as a `u32`; 0 (0.0.0.0, never a peer's
    /// address): none here (none at all, or IPv6 in `v6`).
    v4: Vec<u32>,
    /// IPv6 addresses, by slot.
    v6: BTreeMap<usize, Ipv6Addr>,
}

impl PeerTable {
    /// Keeps `ip` for the connection in `slot` (replacing what was kept).
    pub fn insert(&mut self, slot: usize, ip: IpAddr) {
        let v4 = match key(ip).to_ipv4_mapped() {
            Some(a) if !a.is_unspecified() => u32::from(a),
            _ => 0,
        };
        if self.v4.len() <= slot {
            self.v4.resize(slot + 1, 0);
        }
        self.v4[slot] = v4;
        if v4 == 0 {
            self.v6.insert(slot, key(ip));
        } else {
            self.v6.remove(&slot);
        }
    }

    /// The address kept for `slot`, forgotten: once per `insert`.
    pub fn take(&mut self, slot: usize) -> Option<IpAddr> {
        let v4 = self.v4.get_mut(slot).map_or(0, std::mem::take);
        if v4 != 0 {
            return Some(IpAddr::V4(Ipv4Addr::from(v4)));
        }
        self.v6.remove(&slot).map(IpAddr::V6)
    }
}

#[cfg(all(test, not(wavecast_loom)))]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_each_address_up_to_max_and_forgets_it_at_zero() {
        let limit = PerIpLimit::new(2);
        let (a, b) = (ip("127.0.0.1"), ip("127.0.0.2"));
        assert!(limit.try_acquire(a));
        assert!(limit.try_acquire(a));
        assert!(!limit.try_acquire(a), "a third from the same address");
        assert!(limit.try_acquire(b), "another address has its own count");
        assert_eq!((limit.held(a), limit.held(b), limit.addresses()), (2, 1, 2));
        limit.release(a);
        assert!(limit.try_acquire(a), "a released slot comes back");
        limit.release(a);
        limit.release(a);
        limit.release(b);
        assert_eq!(limit.addresses(), 0, "no entry left at zero");
        assert_eq!(limit.held(a), 0);
    }

    #[test]
    fn ipv4_and_its_mapped_form_are_one_address() {
        let limit = PerIpLimit::new(1);
        assert!(limit.try_acquire(ip("10.1.2.3")));
        assert!(!limit.try_acquire(ip("::ffff:10.1.2.3")));
        limit.release(ip("::ffff:10.1.2.3"));
        assert_eq!(limit.addresses(), 0);
        assert!(limit.try_acquire(ip("2001:db8::1")));
        assert!(limit.try_acquire(ip("2001:db8::2")));
        assert_eq!(
            key(ip("2001:db8::1")),
            "2001:db8::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(key(IpAddr::V6(key(ip("10.1.2.3")))), key(ip("10.1.2.3")));
    }

    #[test]
    fn peer_table_gives_each_address_back_once() {
        let mut t = PeerTable::default();
        t.insert(3, ip("127.0.0.2"));
        t.insert(0, ip("2001:db8::7"));
        t.insert(1, ip("::ffff:10.0.0.1"));
        assert_eq!(t.take(3), Some(ip("127.0.0.2")));
        assert_eq!(t.take(3), None, "taken once");
        assert_eq!(t.take(0), Some(ip("2001:db8::7")));
        assert_eq!(t.take(0), None);
        assert_eq!(t.take(1), Some(ip("10.0.0.1")), "IPv4-mapped kept as IPv4");
        assert_eq!(t.take(2), None, "never kept");
        assert_eq!(t.take(99), None);
        // A slot reused by another family replaces what it held.
        t.insert(5, ip("2001:db8::1"));
        t.insert(5, ip("127.0.0.1"));
        assert_eq!(t.take(5), Some(ip("127.0.0.1")));
        assert_eq!(t.take(5), None);
        t.insert(6, ip("0.0.0.0"));
        assert_eq!(t.take(6).map(key), Some(key(ip("0.0.0.0"))));
        assert!(t.v6.is_empty());
    }

    #[test]
    fn off_counts_nothing() {
        let limit = PerIpLimit::new(0);
        assert!(!limit.is_on());
        for _ in 0..10 {
            assert!(limit.try_acquire(ip("127.0.0.1")));
        }
        limit.release(ip("127.0.0.1"));
        assert_eq!(limit.addresses(), 0);
    }
}
