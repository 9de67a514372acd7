//! Port safety against the real binary: a second server on an address
//! another process listens on exits at once with a message naming the
//! address, instead of sharing the port through `SO_REUSEPORT` and
//! splitting clients between two servers that know nothing of each other;
//! the shards of one process still share their port (every other test
//! runs two shards on one).
//!
//! Needs the binary: `cargo build -p wavecast && cargo test -p
//! wavecast-tests --test ports`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wavecast_tests::{binary_path, Server};

/// Runs `wavecast serve --listen ADDR`, which must exit within 10 s;
/// returns its status code and stderr.
fn serve_exits(addr: &str) -> (Option<i32>, String) {
    let mut child = Command::new(binary_path())
        .args(["serve", "--listen", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wavecast serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second server on {addr} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("stderr");
    (
        status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_server_on_a_taken_port_refuses_to_start() {
    let first = Server::start(&[]);
    let addr = first.addr().to_string();
    let (code, stderr) = serve_exits(&addr);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&addr), "names the address: {stderr}");
    assert!(stderr.contains("already listening"), "{stderr}");
}

#[test]
fn a_port_held_by_any_other_listener_is_refused_too() {
    // Not a wavecast: a plain listener without SO_REUSEPORT.
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = other.local_addr().expect("addr").to_string();
    let (code, stderr) = serve_exits(&addr);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("already listening"), "{stderr}");
}
