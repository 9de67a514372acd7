//! The HTTP client every outbound request goes through: hyper-util's
//! pooled client over HTTP/1.1, https by rustls (the ring provider, the
//! Mozilla roots compiled in), plain http where a URL says so. Each request
//! has a deadline for the whole exchange (connect, TLS, request, the
//! complete body) and its body is read up to a bound; past either it is a
//! failure, never a partial answer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long an idle pooled connection to a backend is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle pooled connections kept per backend host.
const POOL_PER_HOST: usize = 64;

/// A cloneable handle to one connection pool.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A complete answer.
#[derive(Debug)]
pub struct Response {
    /// Its status.
    pub status: StatusCode,
    /// Its whole body (within the bound asked for).
    pub body: Bytes,
}

/// Why a request gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The whole exchange did not finish within its deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection, a TLS failure, or a broken HTTP exchange.
    #[error("{0}")]
    Request(String),
    /// The body is longer than the bound.
    #[error("answer longer than {0} bytes")]
    TooLarge(usize),
    /// The body could not be read to its end.
    #[error("reading the answer: {0}")]
    Body(String),
}

impl HttpClient {
    /// A client with its own (empty) pool. Its connections are driven by
    /// tasks of the runtime that makes the requests.
    pub fn new() -> HttpClient {
        let mut http = HttpConnector::new();
        // The scheme is the TLS layer's business (it takes http:// too).
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("the ring provider supports rustls' default protocol versions")
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_PER_HOST)
            .build(https);
        HttpClient { inner }
    }

    /// Sends `request` and reads the whole answer: at most `max_body`
    /// bytes of body, everything within `timeout`.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, FetchError> {
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| FetchError::Request(chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        FetchError::TooLarge(max_body)
                    } else {
                        FetchError::Body(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

/// An error and its causes on one line (hyper-util's own message is only
/// "client error (Connect)"; the cause says "connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
