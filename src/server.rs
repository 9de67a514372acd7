//! Starting the real `wavecast` binary on a free port, waiting for its
//! listening line, and stopping it by the PID it was started with; reading
//! its resident memory and signal handlers from `/proc`; [`TempFile`] for
//! its stderr and for the config files tests pass it.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The line the server prints on stdout once it accepts connections; the
/// address follows it.
pub const LISTENING_PREFIX: &str = "wavecast listening on ";

/// How long a server may take to print its listening line. Generous: the
/// machine is shared and a debug binary starts slowly under load.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the `wavecast` binary of the current build profile is:
/// `target/<profile>/wavecast`, the parent of the `deps/` directory that
/// holds the running test or bench executable.
pub fn binary_path() -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is not inside target/<profile>/deps");
    profile_dir.join(format!("wavecast{}", std::env::consts::EXE_SUFFIX))
}

/// A file with a unique path in the temp directory, removed on drop.
///
/// Tests run in parallel threads and processes, so the PID, a counter and
/// the clock all go into the name.
#[derive(Debug)]
pub struct TempFile(PathBuf);

impl TempFile {
    /// Writes `contents` to a fresh, unique file whose name ends in `.ext`.
    ///
    /// # Panics
    ///
    /// If the file cannot be written.
    pub fn new(ext: &str, contents: &str) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "wavecast-test-{}-{n}-{nanos}.{ext}",
            std::process::id()
        ));
        fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    /// The file's path as a string (for a command line).
    pub fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    /// The file's path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A running `wavecast serve` process on `127.0.0.1` and a free port.
///
/// Dropping it kills the process (by the PID it was started with, never by
/// name) and reaps it. If the test is panicking, the server's stderr is
/// printed so the failure shows what the server logged.
#[derive(Debug)]
pub struct Server {
    child: Child,
    addr: SocketAddr,
    /// The server's stderr, removed once the server is dropped.
    stderr: TempFile,
    /// Set once the process has been reaped; after that its PID may belong
    /// to another process and must not be signalled.
    status: Option<ExitStatus>,
}

impl Server {
    /// Starts `wavecast serve --listen 127.0.0.1:0 ARGS...` and waits until
    /// it prints its listening line.
    ///
    /// `WAVECAST_*` variables of the test's environment are not passed on,
    /// so the server runs with exactly the flags given here.
    ///
    /// # Panics
    ///
    /// If the binary is missing (run `cargo build -p wavecast`), or the
    /// server exits or stays silent before listening; the panic message
    /// holds its stderr.
    pub fn start(args: &[&str]) -> Server {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Server::start_exactly(&all)
    }

    /// Starts `wavecast serve ARGS...` (no `--listen` added: the arguments
    /// or the config file must pick a free port) and waits until it
    /// prints its listening line; otherwise as [`Server::start`].
    pub fn start_exactly(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// [`Server::start_exactly`] with these `WAVECAST_*` (or other)
    /// variables set for the server, after the test's own `WAVECAST_*`
    /// were removed.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let bin = binary_path();
        assert!(
            bin.is_file(),
            "{} not found: run `cargo build -p wavecast` first (the integration tests run the real binary)",
            bin.display()
        );
        let stderr_file = TempFile::new("stderr", "");
        let stderr =
            File::create(stderr_file.as_path()).expect("cannot create the server's stderr file");
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WAVECAST_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));

        // A thread reads stdout for the whole life of the process, so the
        // server can never block on a full pipe; the first line we want
        // comes back over the channel.
        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The receiver is gone once the address is known: keep
                // draining anyway.
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix(LISTENING_PREFIX) {
                        match rest.parse::<SocketAddr>() {
                            Ok(addr) => break addr,
                            Err(e) => fail_start(
                                child,
                                stderr_file,
                                &format!("bad listening line {line:?}: {e}"),
                            ),
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => fail_start(
                    child,
                    stderr_file,
                    &format!("no listening line within {START_TIMEOUT:?}"),
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    fail_start(child, stderr_file, "server closed stdout before listening")
                }
            }
        };
        Server {
            child,
            addr,
            stderr: stderr_file,
            status: None,
        }
    }

    /// `wavecast serve --echo ARGS...`: the `/echo` endpoint is on.
    pub fn echo(args: &[&str]) -> Server {
        let mut all = vec!["--echo"];
        all.extend_from_slice(args);
        Server::start(&all)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket URL of `path` (which starts with `/`) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server process's resident memory in bytes (`VmRSS` of
    /// `/proc/PID/status`, for the PID it was started with).
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("cannot read the server's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// Sends signal `sig` (e.g. `libc::SIGTERM`) to the server process.
    ///
    /// # Panics
    ///
    /// If the process has already been reaped (its PID may have been reused
    /// by then) or `kill(2)` fails.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(
            self.status.is_none(),
            "the server has exited already; not signalling a PID that may be reused"
        );
        let pid = libc::pid_t::try_from(self.child.id()).expect("PID fits pid_t");
        // SAFETY: kill(2) takes no pointers; `pid` is our own child, not yet
        // reaped, so it still names that process.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            io::Error::last_os_error()
        );
    }

    /// True once the server process has a handler installed for `sig`
    /// (Linux: the `SigCgt` mask in `/proc/PID/status`).
    ///
    /// A signal sent before the handler exists takes its default action
    /// (for SIGTERM and SIGINT: death by signal, not a graceful shutdown),
    /// so a test about graceful shutdown checks this first.
    pub fn catches_signal(&self, sig: libc::c_int) -> bool {
        let Ok(bit) = u32::try_from(sig - 1) else {
            return false;
        };
        let Ok(status) = fs::read_to_string(format!("/proc/{}/status", self.child.id())) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|mask| bit < 64 && mask & (1 << bit) != 0)
    }

    /// Waits up to `timeout` until [`Server::catches_signal`] holds for
    /// `sig`.
    ///
    /// # Panics
    ///
    /// If it does not within `timeout`.
    pub fn wait_catches_signal(&self, sig: libc::c_int, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.catches_signal(sig) {
            assert!(
                Instant::now() < deadline,
                "the server installed no handler for signal {sig} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None`
    /// if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status if the process has exited (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
            }
        }
        self.status
    }

    /// What the server wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.stderr.as_path()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            // Child::kill sends SIGKILL to this child's PID, which cannot
            // have been reused: we have not reaped it yet.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- wavecast server {} stderr ----\n{}---- end of server stderr ----",
                self.addr,
                self.stderr()
            );
        }
        // The stderr file goes with the `stderr` field.
    }
}

/// Kills a server that failed to start and panics with its stderr.
fn fail_start(mut child: Child, stderr_file: TempFile, why: &str) -> ! {
    let _ = child.kill();
    let status = child.wait();
    let stderr = fs::read_to_string(stderr_file.as_path()).unwrap_or_default();
    drop(stderr_file);
    panic!("wavecast server failed to start: {why} (exit: {status:?})\nstderr:\n{stderr}");
}

/// `wavecast serve ARGS`, which must exit at once with status 2 and a
/// message containing every one of `words`.
pub fn refuses_to_start(args: &[&str], words: &[&str]) {
    let mut child = Command::new(binary_path())
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wavecast serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wavecast serve {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    for w in words {
        assert!(stderr.contains(w), "{args:?}: {w:?} not in {stderr}");
    }
}
