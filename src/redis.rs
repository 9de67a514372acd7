//! A throwaway `redis-server` for tests of the Redis backbone: on
//! 127.0.0.1 and a free port, without persistence (or with the settings
//! given to [`Redis::start_with`]), in its own directory,
//! stopped by the PID it was started with when dropped. (`tests/cluster.rs`
//! keeps a fuller one beside its tests: restarts, persistence, pub/sub
//! counts.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not on the PATH (scripts/test installs it) or
    /// does not answer within 20 s.
    pub fn start() -> Redis {
        Redis::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts redis-server with `settings` (e.g. `--appendonly yes`) after
    /// its port, address and directory; the directory is its own, so an
    /// append-only file or a snapshot stays there.
    ///
    /// # Panics
    ///
    /// As [`Redis::start`].
    pub fn start_with(settings: &[&str]) -> Redis {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            l.local_addr().expect("local addr").port()
        };
        let dir =
            std::env::temp_dir().join(format!("wavecast-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(settings)
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (scripts/test does)")
            });
        let redis = Redis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !redis.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// The URL for `--redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
