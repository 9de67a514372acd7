//! The kernel's floor for fan-out on this machine: how long it takes to
//! send one small message to each of N loopback TCP connections whose
//! reader (another process, waiting in epoll, like a real client) is idle,
//! with no server logic at all. wavecast's time to the last subscriber at a
//! low publication rate can be compared with it (docs/BENCHMARKS.md).
//!
//! ```sh
//! cargo run --release -p wavecast --example loopback_floor -- 10000 20 64
//! ```
//!
//! Arguments: connections (default 10,000), rounds (20), payload bytes (64).
//! Prints, per round, the time the sender spent in its write loop and the
//! time until the reader had every message; then their medians and the
//! cost per message. Only loopback is used.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wavecast::sys::poller::{Events, Interest, Poller};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--reader") {
        let port: u16 = args[1].parse().expect("port");
        let n: usize = args[2].parse().expect("connections");
        let payload: usize = args[3].parse().expect("payload");
        reader(port, n, payload);
        return;
    }
    let n: usize = args
        .first()
        .map_or(10_000, |a| a.parse().expect("connections"));
    let rounds: usize = args.get(1).map_or(20, |a| a.parse().expect("rounds"));
    let payload: usize = args.get(2).map_or(64, |a| a.parse().expect("payload"));
    sender(n, rounds, payload);
}

fn sender(n: usize, rounds: usize, payload: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "--reader",
            &port.to_string(),
            &n.to_string(),
            &payload.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the reader");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        let (s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        socks.push(s);
    }
    assert_eq!(lines.next().expect("ready").expect("ready"), "ready");
    let msg = vec![b'x'; payload];
    let (mut sends, mut alls) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Let the reader go back to sleep in epoll, as a client between
        // publications would.
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        for s in &mut socks {
            s.write_all(&msg).expect("write");
        }
        let send = t0.elapsed();
        assert_eq!(lines.next().expect("got").expect("got"), "got");
        let all = t0.elapsed();
        println!(
            "round {round}: write loop {:.1} ms, last message read after {:.1} ms",
            ms(send),
            ms(all)
        );
        sends.push(send);
        alls.push(all);
    }
    let (send, all) = (median(sends), median(alls));
    println!(
        "{n} connections, {payload} B: median write loop {:.1} ms ({:.2} us per message), \
         median until the last message was read {:.1} ms ({:.2} us per message)",
        ms(send),
        send.as_secs_f64() * 1e6 / n as f64,
        ms(all),
        all.as_secs_f64() * 1e6 / n as f64
    );
    drop(socks);
    let _ = child.wait();
}

fn reader(port: u16, n: usize, payload: usize) {
    let poller = Poller::new().expect("epoll");
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_nonblocking(true).expect("nonblocking");
        poller
            .add(s.as_raw_fd(), i as u64, Interest::Read)
            .expect("watch");
        socks.push(s);
    }
    let mut out = std::io::stdout();
    writeln!(out, "ready")
        .and_then(|_| out.flush())
        .expect("stdout");
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut got, round_bytes) = (0usize, n * payload);
    loop {
        let mut pfd = libc::pollfd {
            fd: poller.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
            continue; // EINTR
        }
        poller.wait(&mut events).expect("epoll_wait");
        for ready in events.iter() {
            match (&socks[ready.key as usize]).read(&mut buf) {
                Ok(0) => return, // the sender is done
                Ok(k) => got += k,
                Err(_) => {}
            }
        }
        if got >= round_bytes {
            got -= round_bytes;
            writeln!(out, "got")
                .and_then(|_| out.flush())
                .expect("stdout");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
