//! The HTTP API: `POST /api/{publish,broadcast,presence,history,channels,
//! disconnect,info}` with JSON bodies, behind `Authorization: apikey KEY`,
//! and [`metrics`], the `/metrics` page. Both answer from [`Shared`] alone
//! (no shard's state), so any shard's HTTP side can serve them.
//!
//! Without a configured key every API request gets 403: the API can publish
//! to anyone and disconnect anyone, so it is never open by default. Errors
//! are JSON `{"error": {"code": N, "message": "..."}}` with the codes of the
//! WebSocket protocol and the HTTP status each code maps to
//! (docs/PROTOCOL.md, "HTTP API").
//!
//! A body is read whole before anything is done: over [`MAX_BODY`] is 413
//! (code 107; a `Content-Length` over it is refused unread), one that
//! cannot be read (malformed chunked encoding, the client gone mid-body)
//! is 400 (code 101), and one not whole within `http_timeout` is 408.
//!
//! Most methods go to the backbone, which is already cluster-wide. The two
//! that act on connections, `disconnect` and `channels`, ask this server's
//! shards; in a cluster (`--redis`) they also reach the other servers
//! through the backbone's control requests (see
//! [`crate::backbone::redis`], "control"): a disconnect goes to the
//! server whose instance id starts the client id, and `channels` sums the
//! counts of every server that answers within the bound (those that do not
//! are left out, so a server dying mid-request cannot hang the call).

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use wavecast_core::admission::{admit, Action, Admitted, Who};
use wavecast_core::protocol::{ClientInfo, ErrorCode, Payload, Publication, StreamPosition};

use crate::backbone::ControlError;
use crate::instance::instance_of;
use crate::mailbox::{ask_shards, disconnect_local, local_channels, Control, ShardInfo};
use crate::shared::Shared;
use crate::sys::proc::resident_bytes;

pub mod metrics;

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;

type Reply = Response<Full<Bytes>>;

/// An API failure (or a client call's, `crate::shard::call`), with whose
/// fault it is carried by its code.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
        }
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub(crate) fn response(&self) -> Reply {
        json_response(
            self.status,
            &json!({"error": {"code": self.code.code(), "message": self.message}}),
        )
    }
}

/// Answers one API request (`path` starts with `/api/`).
pub async fn handle(shared: &Shared, req: Request<Incoming>) -> Reply {
    match handle_inner(shared, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

async fn handle_inner(shared: &Shared, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let config = shared.config.get();
    let Some(key) = config.api_key.as_deref() else {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "the HTTP API is disabled: no api_key is configured",
        ));
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("apikey "))
        .map(str::trim);
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "missing or wrong API key (Authorization: apikey KEY)",
        )
        .with_status(StatusCode::UNAUTHORIZED));
    }
    if req.method() != Method::POST {
        return Err(ApiError::new(ErrorCode::BadRequest, "the API takes POST")
            .with_status(StatusCode::METHOD_NOT_ALLOWED));
    }
    let path = req.uri().path().to_string();
    let body = read_body(shared, req.into_body(), MAX_BODY).await?;
    match path.as_str() {
        "/api/publish" => publish(shared, &body).await,
        "/api/broadcast" => broadcast(shared, &body).await,
        "/api/presence" => presence(shared, &body).await,
        "/api/history" => history(shared, &body).await,
        "/api/channels" => channels(shared).await,
        "/api/disconnect" => disconnect(shared, &body).await,
        "/api/info" => info(shared).await,
        _ => Err(
            ApiError::new(ErrorCode::UnknownCommand, format!("no API method {path}"))
                .with_status(StatusCode::NOT_FOUND),
        ),
    }
}

/// Reads a request's body whole, at most `max` bytes: 413 (code 107)
/// over it (a `Content-Length` over it is refused unread), 400 (101) for
/// one that cannot be read, 408 for one not whole within `http_timeout`.
pub(crate) async fn read_body(
    shared: &Shared,
    body: Incoming,
    max: usize,
) -> Result<Bytes, ApiError> {
    if body.size_hint().lower() > max as u64 {
        // A Content-Length over the limit: refused before any of it is read.
        return Err(too_large(max));
    }
    // The body too must arrive within the head's deadline: hyper's header
    // timer stops at the end of the head, and a body trickling in would
    // hold the connection forever.
    let timeout = shared.config.get().http_timeout;
    Ok(
        tokio::time::timeout(timeout, Limited::new(body, max).collect())
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("request body not received within {timeout:?}"),
                )
                .with_status(StatusCode::REQUEST_TIMEOUT)
            })?
            .map_err(|e| body_error(e, max))?
            .to_bytes(),
    )
}

/// A body that could not be read whole: 413 only if it is over
/// `max` (`Limited` says so with `LengthLimitError`); anything else
/// (bad chunked encoding, the client gone mid-body) is the client's broken
/// request, 400.
fn body_error(e: Box<dyn std::error::Error + Send + Sync>, max: usize) -> ApiError {
    if e.downcast_ref::<LengthLimitError>().is_some() {
        too_large(max)
    } else {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("malformed or incomplete request body: {e}"),
        )
    }
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::LimitExceeded,
        format!("request body over {max} bytes"),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON body (an empty one is `{}`); 400 (101) if it is not `T`.
pub(crate) fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("bad JSON body: {e}")))
}

/// Admits an API request for `action` on `channel` by the rule WebSocket
/// commands get too ([`admit`], as [`Who::Api`]).
fn admit_api(shared: &Shared, channel: &str, action: Action) -> Result<Admitted, ApiError> {
    admit(&shared.config.get().namespaces, channel, action, Who::Api)
        .map_err(|r| ApiError::new(r.code(), r.to_string()))
}

/// Publication data from its JSON text.
pub(crate) fn payload(data: &RawValue) -> Result<Payload, ApiError> {
    Payload::from_json(data.get().as_bytes())
        .map_err(|e| ApiError::new(e.error_code(), e.to_string()))
}

/// The backbone could not serve it: 503 (code 100).
pub(crate) fn unavailable() -> ApiError {
    ApiError::new(ErrorCode::NotAvailable, "backbone unavailable")
        .with_status(StatusCode::SERVICE_UNAVAILABLE)
}

/// The body of a publication (the API's and a client call's).
#[derive(Deserialize)]
pub(crate) struct PublishBody<'a> {
    pub(crate) channel: String,
    #[serde(borrow)]
    pub(crate) data: &'a RawValue,
}

async fn publish(shared: &Shared, body: &[u8]) -> Result<Reply, ApiError> {
    let b: PublishBody = parse(body)?;
    let options = admit_api(shared, &b.channel, Action::Publish)?.options;
    let data = payload(b.data)?;
    let started = std::time::Instant::now();
    let pos = shared
        .backbone
        .publish(b.channel, data, None, options.history())
        .await
        .map_err(|_| unavailable())?;
    shared.api_metrics.published(started.elapsed());
    Ok(json_response(
        StatusCode::OK,
        &json!({"epoch": pos.epoch, "offset": pos.offset}),
    ))
}

#[derive(Deserialize)]
struct BroadcastBody<'a> {
    channels: Vec<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

async fn broadcast(shared: &Shared, body: &[u8]) -> Result<Reply, ApiError> {
    let b: BroadcastBody = parse(body)?;
    if b.channels.is_empty() || b.channels.len() > 1000 {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "channels must list 1 to 1000 channels",
        ));
    }
    let data = payload(b.data)?;
    // Check every channel first: a broadcast with a bad channel publishes
    // nowhere, rather than to some.
    let mut checked = Vec::with_capacity(b.channels.len());
    for c in b.channels {
        let o = admit_api(shared, &c, Action::Publish)?.options;
        checked.push((c, o));
    }
    let mut results = Vec::with_capacity(checked.len());
    for (channel, options) in checked {
        let started = std::time::Instant::now();
        let pos = shared
            .backbone
            .publish(channel.clone(), data.clone(), None, options.history())
            .await
            .map_err(|_| unavailable())?;
        shared.api_metrics.published(started.elapsed());
        results.push(json!({"channel": channel, "epoch": pos.epoch, "offset": pos.offset}));
    }
    Ok(json_response(StatusCode::OK, &json!({"results": results})))
}

/// A body that names a channel only (presence).
#[derive(Deserialize)]
pub(crate) struct ChannelBody {
    pub(crate) channel: String,
}

async fn presence(shared: &Shared, body: &[u8]) -> Result<Reply, ApiError> {
    let b: ChannelBody = parse(body)?;
    admit_api(shared, &b.channel, Action::Presence)?;
    let clients = shared
        .backbone
        .presence(b.channel)
        .await
        .map_err(|_| unavailable())?;
    let map: BTreeMap<&str, ClientOut<'_>> = clients
        .iter()
        .map(|c| (c.client.as_str(), client_out(c)))
        .collect();
    Ok(json_response(StatusCode::OK, &PresenceOut { clients: map }))
}

/// The presence answer, serialised directly, so that the clients' infos
/// keep their JSON text (as the WebSocket presence reply does).
#[derive(serde::Serialize)]
struct PresenceOut<'a> {
    clients: BTreeMap<&'a str, ClientOut<'a>>,
}

/// A client as presence shows it: `conn_info` and `chan_info` only when
/// it has them.
#[derive(serde::Serialize)]
struct ClientOut<'a> {
    client: &'a str,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    conn_info: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chan_info: Option<&'a RawValue>,
}

fn client_out(c: &ClientInfo) -> ClientOut<'_> {
    ClientOut {
        client: &c.client,
        user: &c.user,
        conn_info: c.conn_info.as_ref().map(|p| raw_json(p.as_json())),
        chan_info: c.chan_info.as_ref().map(|p| raw_json(p.as_json())),
    }
}

/// The body of a history read.
#[derive(Deserialize)]
pub(crate) struct HistoryBody {
    pub(crate) channel: String,
    pub(crate) since: Option<StreamPosition>,
    pub(crate) limit: Option<usize>,
    #[serde(default)]
    pub(crate) reverse: bool,
}

async fn history(shared: &Shared, body: &[u8]) -> Result<Reply, ApiError> {
    let b: HistoryBody = parse(body)?;
    let limit = admit_api(shared, &b.channel, Action::History { limit: b.limit })?.limit;
    let page = shared
        .backbone
        .history(b.channel, b.since, limit, b.reverse)
        .await
        .map_err(|_| unavailable())?;
    let out = HistoryOut {
        epoch: &page.epoch,
        offset: page.top,
        complete: page.complete,
        publications: page.publications.iter().map(publication_out).collect(),
    };
    Ok(json_response(StatusCode::OK, &out))
}

/// The history answer, serialised directly (a `serde_json::Value` would
/// parse the spliced data back into maps).
#[derive(serde::Serialize)]
struct HistoryOut<'a> {
    epoch: &'a str,
    offset: u64,
    complete: bool,
    publications: Vec<PublicationOut<'a>>,
}

/// A publication as history answers it: the data spliced in byte for byte,
/// as WebSocket pushes carry it (not re-serialised, which would reorder
/// object keys and reformat numbers).
#[derive(serde::Serialize)]
struct PublicationOut<'a> {
    offset: u64,
    data: &'a RawValue,
}

fn publication_out(p: &Publication) -> PublicationOut<'_> {
    PublicationOut {
        offset: p.offset,
        data: raw_json(p.data.as_json()),
    }
}

/// A payload's JSON text as a raw value. Payloads are validated JSON;
/// `null` only if a stored stream held something else.
fn raw_json(json: &[u8]) -> &RawValue {
    serde_json::from_slice::<&RawValue>(json).unwrap_or_else(|_| null_raw())
}

fn null_raw() -> &'static RawValue {
    // A literal that always parses.
    serde_json::from_str("null").expect("null is JSON")
}

async fn channels(shared: &Shared) -> Result<Reply, ApiError> {
    let backbone = &shared.backbone;
    let counts = if backbone.is_cluster() {
        // Every server answers, this one included (over Redis too, so
        // that all counts are taken the same way).
        backbone
            .cluster_channels()
            .await
            .map_err(|_| unavailable())?
            .counts
    } else {
        local_channels(&shared.shards).await
    };
    let map: BTreeMap<String, Value> = counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| (c, json!({"subscribers": n})))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"channels": map})))
}

#[derive(Deserialize)]
struct DisconnectBody {
    client: String,
    #[serde(default = "yes")]
    reconnect: bool,
}

fn yes() -> bool {
    true
}

async fn disconnect(shared: &Shared, body: &[u8]) -> Result<Reply, ApiError> {
    let b: DisconnectBody = parse(body)?;
    let client = b.client;
    let cluster = shared.backbone.is_cluster();
    // Another server's client (by the instance id its id starts with) is
    // its server's to close. A client id that is not one of ours is
    // looked for here, which finds nothing, as it always did.
    let remote = instance_of(&client)
        .filter(|i| cluster && *i != shared.instance)
        .map(str::to_owned);
    let found = match remote {
        Some(instance) => shared
            .backbone
            .disconnect_remote(instance, client.clone(), b.reconnect)
            .await
            .map_err(control_error)?,
        None => {
            let code = Control::disconnect_code(b.reconnect);
            disconnect_local(&shared.shards, &client, code).await
        }
    };
    if found {
        Ok(json_response(
            StatusCode::OK,
            &json!({"disconnected": client}),
        ))
    } else {
        let place = if cluster {
            "in the cluster"
        } else {
            "on this server"
        };
        Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("no client {client:?} {place}"),
        )
        .with_status(StatusCode::NOT_FOUND))
    }
}

/// A failed request to another server: 503 either way, with the reason.
fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::Unavailable => unavailable(),
        ControlError::NoReply { .. } => ApiError::new(
            ErrorCode::NotAvailable,
            format!("{e}; whether the client was disconnected is unknown, retry"),
        )
        .with_status(StatusCode::SERVICE_UNAVAILABLE),
    }
}

async fn info(shared: &Shared) -> Result<Reply, ApiError> {
    let infos: Vec<ShardInfo> = ask_shards(&shared.shards, Control::Info).await;
    let connections: usize = infos.iter().map(|i| i.connections).sum();
    let queued: usize = infos.iter().map(|i| i.queued_bytes).sum();
    let hub = shared
        .backbone
        .channels()
        .await
        .map_err(|_| unavailable())?;
    let rss = resident_bytes();
    // The in-memory hub's history against its budget; null with Redis,
    // which holds the history itself.
    let history = shared.backbone.history_usage();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "instance": shared.instance,
            "workers": infos.len(),
            "connections": connections,
            "channels": hub.len(),
            "queued_bytes": queued,
            // Commands waiting for the sequencer, and events waiting in
            // the shards' inboxes: both bounded by `backbone_queue`.
            "backbone_queue": shared.backbone.backlog().waiting(),
            "inbox": shared.shards.iter().map(|s| s.len()).sum::<usize>(),
            "history_bytes": history.map(|h| h.bytes),
            "history_channels": history.map(|h| h.channels),
            "max_history_bytes": history.map(|h| h.budget.max_bytes),
            "max_history_channels": history.map(|h| h.budget.max_channels),
            "memory": {"resident_bytes": rss},
            "uptime_seconds": shared.clock.elapsed().as_secs(),
        }),
    ))
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Reply {
    // Serialising our own types and values cannot fail (string keys only).
    let text = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_shows_infos_verbatim_and_only_when_present() {
        let json = |t: &str| Some(Payload::from_json(t.as_bytes()).expect("valid JSON"));
        let clients = [
            ClientInfo {
                client: "a-1.0".into(),
                user: "42".into(),
                conn_info: json(r#"{"name": "Ann", "n": 1.50}"#),
                chan_info: json("null"),
            },
            ClientInfo {
                client: "b-2.0".into(),
                user: String::new(),
                conn_info: None,
                chan_info: None,
            },
        ];
        let out = PresenceOut {
            clients: clients
                .iter()
                .map(|c| (c.client.as_str(), client_out(c)))
                .collect(),
        };
        assert_eq!(
            serde_json::to_string(&out).expect("serialises"),
            r#"{"clients":{"a-1.0":{"client":"a-1.0","user":"42","conn_info":{"name": "Ann", "n": 1.50},"chan_info":null},"b-2.0":{"client":"b-2.0","user":""}}}"#
        );
    }
}
