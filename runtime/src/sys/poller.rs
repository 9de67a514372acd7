//! One epoll instance per shard for the sockets of its WebSocket
//! connections.
//!
//! Why not one tokio task and registration per socket: tokio keeps a
//! cache-line-aligned `ScheduledIo` per registered socket and the task
//! keeps its own header and future, together about 500 B per idle
//! connection, more than the rest of the connection's state. Here a socket
//! costs only its kernel entry in this epoll set and a small slot in the
//! shard. The epoll fd itself is registered with the shard's tokio runtime
//! (an epoll fd is readable while any socket in it is ready), so the shard
//! still waits for sockets, timers and its inbox in one place.
//!
//! Sockets are registered level-triggered: a socket that still has bytes
//! after one read is reported again by the next `wait`, so one busy
//! connection cannot starve the others of reads.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What to be told about a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Readable (or closed, or in error).
    Read,
    /// Readable or writable: the kernel refused bytes and the shard waits
    /// for room in the send buffer.
    ReadWrite,
    /// Writable only: the socket is not read for now (backpressure) but
    /// waits for room in its send buffer.
    Write,
    /// Nothing but errors and hang-ups (which epoll always reports): the
    /// socket is not read for now and has nothing to write.
    Nothing,
}

impl Interest {
    fn bits(self) -> u32 {
        match self {
            Interest::Read => (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            Interest::ReadWrite => (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP) as u32,
            Interest::Write => libc::EPOLLOUT as u32,
            Interest::Nothing => 0,
        }
    }
}

/// One socket's readiness, as `wait` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The key the socket was registered with.
    pub key: u64,
    /// Bytes (or end of stream, or an error) can be read.
    pub readable: bool,
    /// Bytes can be written (or the socket is in error, which a write
    /// reports).
    pub writable: bool,
}

/// An epoll instance.
#[derive(Debug)]
pub struct Poller {
    fd: OwnedFd,
}

/// Room for readiness reports from one `wait`.
pub struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    /// Room for up to `capacity` reports per `wait`.
    pub fn with_capacity(capacity: usize) -> Events {
        Events {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
            len: 0,
        }
    }

    /// True when the last `wait` filled every slot: more may be ready.
    pub fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// The reports of the last `wait`.
    pub fn iter(&self) -> impl Iterator<Item = Readiness> + '_ {
        self.buf[..self.len].iter().map(|e| {
            // Copies out of the (packed on x86_64) kernel struct.
            let (bits, key) = (e.events, e.u64);
            let error = (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;
            Readiness {
                key,
                readable: bits & (libc::EPOLLIN as u32 | error) != 0,
                writable: bits & (libc::EPOLLOUT as u32 | error) != 0,
            }
        })
    }
}

impl Poller {
    /// A new, empty epoll instance (close-on-exec).
    pub fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Poller {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Starts watching `socket`; readiness reports carry `key`.
    pub fn add(&self, socket: RawFd, key: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, socket, key, interest)
    }

    /// Changes what `socket` is watched for.
    pub fn modify(&self, socket: RawFd, key: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, socket, key, interest)
    }

    /// Stops watching `socket` (before it is closed, so that no report for
    /// it is pending when its slot is reused).
    pub fn delete(&self, socket: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` outlives the call (kernels before 2.6.9 required a
        // non-null pointer even for DEL).
        let rc =
            unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, socket, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn ctl(&self, op: libc::c_int, socket: RawFd, key: u64, interest: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest.bits(),
            u64: key,
        };
        // SAFETY: `ev` is a valid epoll_event that outlives the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, socket, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Collects what is ready now, without blocking (the shard blocks in
    /// tokio, on this poller's own fd).
    pub fn wait(&self, events: &mut Events) -> io::Result<()> {
        let cap = events.buf.len().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: the buffer has room for `cap` events and outlives the call.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.buf.as_mut_ptr(), cap, 0) };
        if n < 0 {
            events.len = 0;
            return Err(io::Error::last_os_error());
        }
        events.len = n as usize;
        Ok(())
    }
}

impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn keys(p: &Poller, ev: &mut Events) -> Vec<Readiness> {
        p.wait(ev).unwrap();
        ev.iter().collect()
    }

    /// Waits (up to 5 s: loopback delivery is not instant) for a report.
    fn until_ready(p: &Poller, ev: &mut Events) -> Vec<Readiness> {
        for _ in 0..500 {
            let r = keys(p, ev);
            if !r.is_empty() {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("nothing became ready");
    }

    #[test]
    fn reports_readable_sockets_by_key_and_again_until_read() {
        let p = Poller::new().unwrap();
        let (mut a, b) = pair();
        let (_c, d) = pair();
        p.add(b.as_raw_fd(), 7, Interest::Read).unwrap();
        p.add(d.as_raw_fd(), 9, Interest::Read).unwrap();
        let mut ev = Events::with_capacity(8);
        assert!(keys(&p, &mut ev).is_empty(), "nothing sent yet");
        a.write_all(b"x").unwrap();
        let r = until_ready(&p, &mut ev);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].key, r[0].readable, r[0].writable), (7, true, false));
        // Level-triggered: still reported while unread.
        assert_eq!(keys(&p, &mut ev).len(), 1);
        let mut buf = [0u8; 4];
        assert_eq!(std::io::Read::read(&mut &b, &mut buf).unwrap(), 1);
        assert!(keys(&p, &mut ev).is_empty(), "read: no longer ready");
    }

    #[test]
    fn write_interest_and_delete() {
        let p = Poller::new().unwrap();
        let (a, b) = pair();
        p.add(b.as_raw_fd(), 1, Interest::Read).unwrap();
        let mut ev = Events::with_capacity(8);
        assert!(keys(&p, &mut ev).is_empty());
        p.modify(b.as_raw_fd(), 1, Interest::ReadWrite).unwrap();
        let r = keys(&p, &mut ev);
        assert_eq!((r.len(), r[0].writable), (1, true), "room to write");
        p.delete(b.as_raw_fd()).unwrap();
        // The peer closes: b would be readable, but is no longer watched
        // (a second, watched socket shows when the close has arrived).
        let (c, d) = pair();
        p.add(d.as_raw_fd(), 2, Interest::Read).unwrap();
        drop(a);
        drop(c);
        let r = until_ready(&p, &mut ev);
        assert_eq!(r.iter().map(|r| r.key).collect::<Vec<_>>(), vec![2]);
        assert!(p.delete(b.as_raw_fd()).is_err(), "not watched any more");
    }

    #[test]
    fn peer_close_is_readable() {
        let p = Poller::new().unwrap();
        let (a, b) = pair();
        p.add(b.as_raw_fd(), 3, Interest::Read).unwrap();
        drop(a);
        let mut ev = Events::with_capacity(1);
        let r = until_ready(&p, &mut ev);
        assert_eq!((r[0].key, r[0].readable), (3, true));
        assert!(ev.is_full());
    }
}
