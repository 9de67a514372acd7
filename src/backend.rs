//! A small HTTP backend for the tests of what the server asks outside
//! (`tests/proxy.rs`, `tests/jwks.rs`): hyper on `127.0.0.1:0`, on a
//! thread and runtime of its own (so it answers while a test blocks, e.g.
//! in [`crate::Server::start`]), answering every request with what the
//! test's handler says and recording every request it got.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::oneshot;

/// One request as the backend got it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The path (without the query).
    pub path: String,
    /// Every header, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// The body, as JSON (`Value::Null` if it is not JSON).
    pub body: Value,
}

impl Recorded {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the backend answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// This status with this body.
    Status(u16, String),
    /// No answer until this long has passed (then 200 `{}`): a backend
    /// that hangs.
    Hang(Duration),
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// A running backend; stopped when dropped.
pub struct Backend {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Backend {
    /// Starts a backend answering every request with `handler`.
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Backend {
        let handler: Arc<Handler> = Arc::new(handler);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a backend port");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("backend address");
        let (stop, stopped) = oneshot::channel::<()>();
        let recorded = requests.clone();
        std::thread::Builder::new()
            .name("test-backend".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("backend runtime");
                rt.block_on(serve(listener, handler, recorded, stopped));
            })
            .expect("backend thread");
        Backend {
            addr,
            requests,
            stop: Some(stop),
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests so far to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A port nothing listens on (bound, then closed): a backend that is down.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    l.local_addr().expect("address")
}

async fn serve(
    listener: std::net::TcpListener,
    handler: Arc<Handler>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let handler = handler.clone();
        let requests = requests.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                let requests = requests.clone();
                async move { Ok::<_, Infallible>(answer(req, &*handler, &requests).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    handler: &Handler,
    requests: &Mutex<Vec<Recorded>>,
) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let recorded = Recorded {
        method,
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    requests.lock().unwrap().push(recorded.clone());
    let (status, body) = match handler(&recorded) {
        Reply::Json(v) => (200, v.to_string()),
        Reply::Status(s, body) => (s, body),
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            (200, "{}".to_owned())
        }
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
