//! A client's calls over HTTP, `POST /sse/{publish,history,presence}`
//! (docs/PROTOCOL.md "Calls over HTTP"): what a client on the SSE
//! transport sends instead of commands.
//!
//! The head is read by the core ([`wavecast_core::call::parse_call`]:
//! which call, the token, the origin), the body like the API's but bounded
//! by `max_message_size` (what a WebSocket client may send), and the
//! caller is admitted by this shard's node ([`Node::admit_call`]: its key
//! set and its rules). The call is then made on the backbone as the API's
//! are, and answered with the body of the WebSocket command's reply
//! (`{"offset": 7}` for a publish), or `{"error": {"code", "message"}}`
//! with the status of its code. Every answer to a request from an allowed
//! `Origin` names it (CORS), errors included, so a page can read why.
//!
//! [`Node::admit_call`]: wavecast_core::node::Node::admit_call

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN};
use hyper::{Request, Response, StatusCode};
use wavecast_core::admission::Action;
use wavecast_core::call::{parse_call, preflight, CallError, CallKind, CallRequest};
use wavecast_core::node::CallAdmitted;
use wavecast_core::protocol::{encode_reply_body, Encoding, ErrorCode, Reply};

use crate::api::{
    parse, payload, read_body, unavailable, ApiError, ChannelBody, HistoryBody, PublishBody,
};

use super::http::{head_of, raw_response};
use super::Shard;

/// Answers a request whose path is under [`wavecast_core::call::PATH_PREFIX`].
pub(super) async fn serve(shard: &Shard, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let head = head_of(&req);
    if head.method == "OPTIONS" && CallKind::from_path(&head.path).is_some() {
        return match preflight(&head, &shard.sse.borrow()) {
            Ok(answer) => raw_response(&answer),
            Err(e) => refused(&e),
        };
    }
    let call = match parse_call(&head, &shard.sse.borrow()) {
        Ok(call) => call,
        Err(e) => return refused(&e),
    };
    let origin = call.origin.clone();
    let mut answer = match run(shard, call, req.into_body()).await {
        Ok(answer) => answer,
        Err(e) => e.response(),
    };
    if let Some(value) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        let headers = answer.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(hyper::header::VARY, HeaderValue::from_static("Origin"));
    }
    answer
}

/// A call refused on its head.
fn refused(e: &CallError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut answer = ApiError::new(e.code(), e.to_string())
        .with_status(status)
        .response();
    if *e == CallError::Method {
        answer.headers_mut().insert(
            hyper::header::ALLOW,
            HeaderValue::from_static("POST, OPTIONS"),
        );
    }
    answer
}

async fn run(
    shard: &Shard,
    call: CallRequest,
    body: Incoming,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let shared = shard.shared();
    let body = read_body(shared, body, shared.config.get().max_message_size).await?;
    let token = call.token.as_deref();
    let backbone = &shared.backbone;
    let reply = match call.kind {
        CallKind::Publish => {
            let b: PublishBody = parse(&body)?;
            let ok = admit(shard, token, &b.channel, Action::Publish)?;
            let data = payload(b.data)?;
            let history = ok.admitted.options.history();
            let info = Some(Box::new(ok.caller));
            let at = backbone
                .publish(b.channel, data, info, history)
                .await
                .map_err(|_| unavailable())?;
            shard.node.borrow_mut().call_published();
            Reply::Publish { offset: at.offset }
        }
        CallKind::History => {
            let b: HistoryBody = parse(&body)?;
            let action = Action::History { limit: b.limit };
            let limit = admit(shard, token, &b.channel, action)?.admitted.limit;
            let page = backbone
                .history(b.channel, b.since, limit, b.reverse)
                .await
                .map_err(|_| unavailable())?;
            Reply::History {
                epoch: page.epoch,
                offset: page.top,
                publications: page.publications,
            }
        }
        CallKind::Presence => {
            let b: ChannelBody = parse(&body)?;
            admit(shard, token, &b.channel, Action::Presence)?;
            let clients = backbone
                .presence(b.channel)
                .await
                .map_err(|_| unavailable())?;
            Reply::Presence { clients }
        }
    };
    let mut answer = Response::new(Full::new(encode_reply_body(Encoding::Json, &reply)));
    answer.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(answer)
}

/// The node's decision on the caller; the node may have asked for the
/// key set (an unknown key id), which the shard's drive sends out.
fn admit(
    shard: &Shard,
    token: Option<&str>,
    channel: &str,
    action: Action,
) -> Result<CallAdmitted, ApiError> {
    let decided = shard
        .node
        .borrow_mut()
        .admit_call(shard.now(), token, channel, action);
    shard.drive();
    decided.map_err(|e| {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN);
        let code: ErrorCode = e.code();
        ApiError::new(code, e.to_string()).with_status(status)
    })
}
