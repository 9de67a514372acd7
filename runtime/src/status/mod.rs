//! The status page: `GET /status`, one self-contained HTML page (inline
//! CSS and script, an inline SVG chart, nothing fetched from elsewhere)
//! that polls `GET /status/data` every few seconds while it is visible.
//!
//! Off unless `status` is set (404 then, as for any unknown path), and
//! never open: every request needs HTTP Basic credentials whose password
//! is `status_password` or, without one, the API key (the configuration
//! refuses `status` with neither), with failed attempts throttled by
//! client address ([`auth`]). Read-only: it only answers GET.
//!
//! Each server answers for itself ([`data`]); in a cluster (`redis`) the
//! server asked gathers every server's summary through the backbone's
//! control requests, with the same bound as `/api/channels`, and the page
//! shows each server in turn (those that did not answer are counted as
//! missing).

pub mod auth;
pub mod data;

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::shared::Shared;
use auth::Verdict;

/// The page (served as is: no build step).
const PAGE: &str = include_str!("status.html");

/// The page's own script and style are inline; nothing else may load,
/// and no other site may frame it.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; frame-ancestors 'none'";

type Reply = Response<Full<Bytes>>;

/// True if `path` is one of the page's.
pub fn is_status_path(path: &str) -> bool {
    path == "/status" || path == "/status/data"
}

/// Answers a request for `/status` or `/status/data` from `peer`.
pub async fn handle<B>(shared: &Shared, req: Request<B>, peer: IpAddr) -> Reply {
    let config = shared.config.get();
    if !config.status {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    // `validate` refuses `status` without a credential; should one still
    // be missing, nothing is served.
    let Some(password) = config
        .status_password
        .as_deref()
        .or(config.api_key.as_deref())
    else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match shared
        .status_throttle
        .check(Instant::now(), peer, header, password)
    {
        Verdict::Allowed => {}
        Verdict::Denied => {
            let mut r = plain(StatusCode::UNAUTHORIZED, "credentials required\n");
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"wavecast status\", charset=\"UTF-8\""),
            );
            return r;
        }
        Verdict::Throttled(wait) => {
            let mut r = plain(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed logins from this address; try again later\n",
            );
            let secs = wait.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    if req.method() != Method::GET {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the status page is read-only: use GET\n",
        );
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let mut r = if req.uri().path() == "/status" {
        let mut r = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    } else {
        let body = data_of(shared).await;
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    let h = r.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `/status/data`'s answer: `{"servers": [...], "asked": N, "missing": M,
/// "error": null}`. A lone server lists itself. In a cluster every server
/// is asked over the backbone (this one too, the same way) and answers
/// with its own summary within the control bound; those that do not are
/// counted in `missing`. With the backbone down, only this server is
/// listed and `error` says why.
async fn data_of(shared: &Shared) -> serde_json::Value {
    if shared.backbone.is_cluster() {
        if let Ok(mut cluster) = shared.backbone.cluster_status().await {
            cluster
                .servers
                .sort_by(|a, b| a["instance"].as_str().cmp(&b["instance"].as_str()));
            return serde_json::json!({
                "servers": cluster.servers,
                "asked": cluster.asked,
                "missing": cluster.asked.saturating_sub(cluster.answered),
                "error": null,
            });
        }
        let status = data::server_status(shared).await;
        return serde_json::json!({
            "servers": [status],
            "asked": 1,
            "missing": 0,
            "error": "the backbone is unavailable: only this server is shown",
        });
    }
    let status = data::server_status(shared).await;
    serde_json::json!({ "servers": [status], "asked": 1, "missing": 0, "error": null })
}

fn plain(status: StatusCode, body: &'static str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
