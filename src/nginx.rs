//! nginx running deploy/nginx.conf, the example the project ships, with a
//! test's upstreams, ports and paths substituted into it (and, for TLS,
//! its commented TLS server block uncommented), on free loopback ports.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// nginx running deploy/nginx.conf with the test's ports and paths, on a
/// free port. Dropping it stops it (SIGTERM to the master, by its PID, which
/// stops the workers; SIGKILL if that fails).
pub struct Nginx {
    child: Option<Child>,
    port: u16,
    tls_port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in front of `upstreams`.
    pub fn start(upstreams: &[SocketAddr]) -> Nginx {
        Nginx::launch(upstreams, None)
    }

    /// Starts nginx in front of `upstreams` with the example's TLS server
    /// block uncommented, serving `cert` and `key` on its own free port
    /// ([`Nginx::tls_addr`]), beside the plain one.
    pub fn start_tls(upstreams: &[SocketAddr], cert: &Path, key: &Path) -> Nginx {
        Nginx::launch(upstreams, Some((cert, key)))
    }

    fn launch(upstreams: &[SocketAddr], tls: Option<(&Path, &Path)>) -> Nginx {
        let port = free_port();
        let tls_port = free_port();
        let dir =
            std::env::temp_dir().join(format!("wavecast-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create nginx prefix");
        let template = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
        )
        .expect("read deploy/nginx.conf");
        let d = dir.display();
        let mut out = String::new();
        let mut in_servers = false;
        // Inside the commented TLS server block (`# server {` to `# }`).
        let mut in_tls = false;
        for line in template.lines() {
            let uncommented = line
                .trim_start()
                .strip_prefix('#')
                .map(|l| l.strip_prefix(' ').unwrap_or(l));
            let line = match (tls.is_some(), uncommented) {
                (true, Some(u)) if u.trim_end() == "server {" && !in_tls => {
                    in_tls = true;
                    u
                }
                (true, Some(u)) if in_tls => {
                    if u == "}" {
                        in_tls = false;
                    }
                    u
                }
                _ => line,
            };
            let t = line.trim();
            if t.starts_with("# BEGIN upstream servers") {
                in_servers = true;
                for u in upstreams {
                    out.push_str(&format!(
                        "        server {u} max_fails=1 fail_timeout=2s;\n"
                    ));
                }
                continue;
            }
            if t.starts_with("# END upstream servers") {
                in_servers = false;
                continue;
            }
            if in_servers {
                continue;
            }
            let line = match t {
                "worker_processes auto;" => "worker_processes 1;".to_owned(),
                _ if t.starts_with("pid ") => format!("pid {d}/nginx.pid;\nerror_log {d}/error.log;"),
                "listen 8000;" => format!("listen 127.0.0.1:{port};"),
                "listen 443 ssl;" => format!("listen 127.0.0.1:{tls_port} ssl;"),
                _ if t.starts_with("ssl_certificate ") => {
                    format!("ssl_certificate {};", tls.expect("TLS block").0.display())
                }
                _ if t.starts_with("ssl_certificate_key ") => {
                    format!("ssl_certificate_key {};", tls.expect("TLS block").1.display())
                }
                "worker_connections 65536;" => "worker_connections 1024;".to_owned(),
                "http {" => format!(
                    "http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;"
                ),
                _ => line.to_owned(),
            };
            out.push_str(&line);
            out.push('\n');
        }
        assert!(
            out.contains(&format!("listen 127.0.0.1:{port};"))
                && !in_servers
                && !in_tls
                && (tls.is_none() || out.contains(&format!("listen 127.0.0.1:{tls_port} ssl;"))),
            "deploy/nginx.conf no longer has the lines this test substitutes"
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, out).expect("write nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nginx ({e}): install it (scripts/test does)"));
        let mut n = Nginx {
            child: Some(child),
            port,
            tls_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(c) = n.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    n.child = None;
                    panic!(
                        "nginx exited with {status}: {}",
                        std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }

    /// The plain HTTP server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The TLS server's address (started with [`Nginx::start_tls`]).
    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.tls_port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) takes no pointers; the child is not reaped
                // yet, so its PID still names it.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
