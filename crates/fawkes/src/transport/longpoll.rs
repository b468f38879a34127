//! The long-poll transport, as Phoenix serves it: every answer is HTTP 200
//! with the protocol status in a JSON body; a GET without a live session
//! opens one (`410` and a token), a GET with one polls (`200` with messages,
//! or `204` after the window), a POST sends newline-delimited frames.
//!
//! A session is a task like a WebSocket connection's, over the same
//! [`Driver`]; what it would write to a WebSocket it keeps in a bounded
//! buffer until the next poll.
//!
//! Sessions need no sticky routing: a token names the node that holds its
//! session (`<node>.<id>`, the id 128 random bits), and a request that
//! reaches another node is carried there over PubSub (a direct broadcast to
//! the session's private topic `phx:lp:<token>`, answered on a reply topic).
//! No answer within a poll window is a session that is gone, which Phoenix
//! answers by opening a new one (GET) or with `410` (POST).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use fawkes_protocol::{Frame, Opcode, Vsn};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tracing::Instrument;

use super::driver::{Close, Driver};
use crate::conn::{ConnState, SocketShared};
use crate::{ConnectInfo, Params, Socket};
use fawkes_protocol::{Broadcast, Payload};
use fawkes_pubsub::{Delivery, FrameCache, Subscriber, Subscription};

use fawkes_protocol::longpoll::MAX_BATCH;

/// The long-poll sessions of one mounted socket on this node.
#[derive(Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<String, Arc<LpSession>>>,
}

/// What the HTTP handlers share with a session's task.
pub(crate) struct LpSession {
    token: String,
    frames_in: mpsc::Sender<(Frame, oneshot::Sender<bool>)>,
    out: Mutex<Buffered>,
    ready: Notify,
    killed: Notify,
    last_poll: Mutex<Instant>,
}

#[derive(Default)]
struct Buffered {
    messages: Vec<Bytes>,
    bytes: usize,
    closed: bool,
}

fn body(v: Value) -> Response {
    let mut res = (StatusCode::OK, axum::Json(v)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No system randomness: refuse to mint guessable tokens.
        return String::new();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn token_of(headers: &HeaderMap, params: &Params) -> Option<String> {
    headers
        .get("x-phoenix-longpoll-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| params.get_str("token").map(str::to_owned))
        .filter(|t| !t.is_empty())
}

pub(crate) async fn handle<S: Socket>(State(shared): State<Arc<SocketShared<S>>>, req: Request) -> Response {
    let params = Params::from_query(req.uri().query().unwrap_or(""));
    let method = req.method().clone();
    if method == Method::OPTIONS {
        return options(&shared, &req);
    }
    if method != Method::GET && method != Method::POST {
        return StatusCode::BAD_REQUEST.into_response();
    }
    if !crate::origin::request_allowed(&shared.config, &req) {
        shared.endpoint.metrics().refused();
        return body(json!({"status": 403}));
    }
    let token = token_of(req.headers(), &params);
    let local = token.as_ref().and_then(|t| shared.longpoll.sessions.lock().get(t).cloned());
    let is_get = method == Method::GET;
    if let Some(session) = local {
        return if is_get { poll(&shared, session, params, req).await } else { publish(&shared, session, req).await };
    }
    // A session of another node: carried there over PubSub.
    if let Some((token, node)) = token
        .and_then(|t| owner_of(&t).map(|n| (t, n)))
        .filter(|(_, n)| shared.endpoint.pubsub().is_distributed() && n != shared.endpoint.pubsub().node_name())
    {
        let relayed = if is_get {
            relay(&shared, &token, &node, "poll", json!({})).await
        } else {
            match read_body(&shared, req).await {
                Ok((ndjson, data)) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
                    return body(
                        relay(&shared, &token, &node, "publish", json!({"ndjson": ndjson, "body": b64}))
                            .await
                            .unwrap_or_else(|| json!({"status": 410})),
                    );
                }
                Err(res) => return res,
            }
        };
        return match relayed {
            Some(v) => body(v),
            None => open(&shared, params, req).await,
        };
    }
    if is_get {
        open(&shared, params, req).await
    } else {
        body(json!({"status": 410}))
    }
}

/// The node named in a token (`<node, base64url>.<id>`).
fn owner_of(token: &str) -> Option<String> {
    let (node, _) = token.split_once('.')?;
    String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(node).ok()?).ok()
}

/// Asks the node holding a session to run a poll or a publish, and waits for
/// its answer (a poll window and a margin at most). `None` when no answer
/// came, or the session is gone.
async fn relay<S: Socket>(
    shared: &Arc<SocketShared<S>>,
    token: &str,
    node: &str,
    event: &str,
    mut payload: Value,
) -> Option<Value> {
    let pubsub = shared.endpoint.pubsub();
    let reply_to = format!("phx:lp:reply:{}", random_id());
    let (tx, rx) = oneshot::channel::<Payload>();
    let tx = Mutex::new(Some(tx));
    let _sub = pubsub.subscribe_fn(&reply_to, move |b| {
        if let Some(tx) = tx.lock().take() {
            let _ = tx.send(b.payload.clone());
        }
    });
    payload["reply_to"] = Value::String(reply_to);
    // the answer comes straight to this node: with sharded fan-out, a
    // broadcast to the fresh reply topic could beat its subscription
    payload["reply_node"] = Value::String(pubsub.node_name().to_owned());
    let request = Broadcast::new(format!("phx:lp:{token}"), event, Payload::from(payload));
    if pubsub.direct_broadcast(node, request).is_err() {
        return None;
    }
    let wait = shared.config.longpoll_window + Duration::from_secs(2);
    let answer = tokio::time::timeout(wait, rx).await.ok()?.ok()?.to_value().ok()?;
    (answer.get("gone") != Some(&Value::Bool(true))).then_some(answer)
}

/// Runs relayed requests for one local session.
struct RelaySubscriber<S: Socket> {
    shared: std::sync::Weak<SocketShared<S>>,
    session: Arc<LpSession>,
}

impl<S: Socket> Subscriber for RelaySubscriber<S> {
    fn deliver(&self, msg: &Broadcast, _: &mut FrameCache<'_>) -> Delivery {
        let Some(shared) = self.shared.upgrade() else { return Delivery::Gone };
        let Ok(req) = msg.payload.to_value() else { return Delivery::Ignored };
        let Some(reply_to) = req.get("reply_to").and_then(Value::as_str).map(str::to_owned) else {
            return Delivery::Ignored;
        };
        let session = self.session.clone();
        let event = msg.event.clone();
        tokio::spawn(async move {
            let answer = match event.as_str() {
                "poll" => poll_core(&shared, &session).await.unwrap_or_else(|| json!({"gone": true})),
                "publish" => {
                    let ndjson = req.get("ndjson").and_then(Value::as_bool).unwrap_or(false);
                    match req
                        .get("body")
                        .and_then(Value::as_str)
                        .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
                    {
                        Some(Ok(data)) => publish_core(&shared, &session, ndjson, Bytes::from(data)).await,
                        _ => json!({"status": 408}),
                    }
                }
                _ => return,
            };
            let reply = Broadcast::new(reply_to, "reply", Payload::from(answer));
            let pubsub = shared.endpoint.pubsub();
            let _ = match req.get("reply_node").and_then(Value::as_str) {
                Some(node) => pubsub.direct_broadcast(node, reply),
                None => pubsub.broadcast(reply).map(drop),
            };
        });
        Delivery::Delivered
    }
}

fn options<S: Socket>(shared: &SocketShared<S>, req: &Request) -> Response {
    if !crate::origin::request_allowed(&shared.config, req) {
        return body(json!({"status": 403}));
    }
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    let requested: Vec<&str> =
        req.headers().get_all(header::ACCESS_CONTROL_REQUEST_HEADERS).iter().filter_map(|v| v.to_str().ok()).collect();
    if let Ok(v) = HeaderValue::from_str(&requested.join(", ")) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("get, post, options"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("3600"));
    res
}

/// A GET with no live session: connect, and answer 410 with the new token.
async fn open<S: Socket>(shared: &Arc<SocketShared<S>>, params: Params, req: Request) -> Response {
    let Ok(vsn) = Vsn::negotiate(params.get_str("vsn")) else {
        shared.endpoint.metrics().refused();
        return body(json!({"status": 403}));
    };
    if shared.longpoll.sessions.lock().len() >= shared.config.longpoll_max_sessions {
        tracing::warn!("refusing a long-poll session: at the session limit");
        shared.endpoint.metrics().refused();
        return body(json!({"status": 403}));
    }
    let peer = req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0);
    let info = ConnectInfo::new(peer, req.uri().clone(), req.headers());
    let Ok(conn) = crate::handler::connect(shared, &params, &info, vsn, "longpoll", false).await else {
        return body(json!({"status": 403}));
    };
    let id = random_id();
    if id.is_empty() {
        return body(json!({"status": 500}));
    }
    let token = format!(
        "{}.{id}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(shared.endpoint.pubsub().node_name())
    );
    let (tx, rx) = mpsc::channel(MAX_BATCH);
    let session = Arc::new(LpSession {
        token: token.clone(),
        frames_in: tx,
        out: Mutex::new(Buffered::default()),
        ready: Notify::new(),
        killed: Notify::new(),
        last_poll: Mutex::new(Instant::now()),
    });
    shared.longpoll.sessions.lock().insert(token.clone(), session.clone());
    shared.endpoint.metrics().longpoll_opened();
    let relay_sub = shared.endpoint.pubsub().subscribe(
        &format!("phx:lp:{token}"),
        Arc::new(RelaySubscriber { shared: Arc::downgrade(shared), session: session.clone() }),
    );
    let span = tracing::info_span!("socket", transport = "longpoll", vsn = vsn.as_str());
    crate::telemetry::continue_trace(&span, &conn.trace);
    tokio::spawn(run(shared.clone(), conn, session, rx, relay_sub).instrument(span));
    body(json!({"status": 410, "token": token, "messages": []}))
}

fn take_messages(session: &LpSession) -> Option<Result<Vec<Value>, ()>> {
    let mut out = session.out.lock();
    if !out.messages.is_empty() {
        out.bytes = 0;
        let msgs = std::mem::take(&mut out.messages);
        return Some(Ok(msgs
            .into_iter()
            .filter_map(|m| String::from_utf8(m.to_vec()).ok().map(Value::String))
            .collect()));
    }
    if out.closed {
        return Some(Err(()));
    }
    None
}

/// A GET with a live session: everything buffered at once, or wait up to
/// the window. A session that ended meanwhile: a new one, as Phoenix's GET
/// for a gone session.
async fn poll<S: Socket>(
    shared: &Arc<SocketShared<S>>,
    session: Arc<LpSession>,
    params: Params,
    req: Request,
) -> Response {
    match poll_core(shared, &session).await {
        Some(v) => body(v),
        None => open(shared, params, req).await,
    }
}

/// The body of a poll's answer; `None` when the session is gone.
async fn poll_core<S: Socket>(shared: &SocketShared<S>, session: &LpSession) -> Option<Value> {
    *session.last_poll.lock() = Instant::now();
    let deadline = Instant::now() + shared.config.longpoll_window;
    loop {
        let ready = session.ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        match take_messages(session) {
            Some(Ok(messages)) => return Some(json!({"status": 200, "token": session.token, "messages": messages})),
            Some(Err(())) => return None,
            None => {}
        }
        if tokio::time::timeout_at(deadline, ready).await.is_err() {
            *session.last_poll.lock() = Instant::now();
            return Some(json!({"status": 204, "token": session.token, "messages": []}));
        }
    }
}

/// The body of a POST, and whether it is ndjson; an HTTP 413 when too large.
async fn read_body<S: Socket>(shared: &SocketShared<S>, req: Request) -> Result<(bool, Bytes), Response> {
    let ndjson = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-ndjson"));
    match to_bytes(req.into_body(), shared.config.longpoll_max_body).await {
        Ok(d) => Ok((ndjson, d)),
        Err(_) => Err((StatusCode::PAYLOAD_TOO_LARGE, axum::Json(json!({"status": 413, "error": "body too large"})))
            .into_response()),
    }
}

/// A POST: hand each frame to the session in order, each acknowledged.
async fn publish<S: Socket>(shared: &Arc<SocketShared<S>>, session: Arc<LpSession>, req: Request) -> Response {
    match read_body(shared, req).await {
        Ok((ndjson, data)) => body(publish_core(shared, &session, ndjson, data).await),
        Err(res) => res,
    }
}

async fn publish_core<S: Socket>(shared: &SocketShared<S>, session: &LpSession, ndjson: bool, data: Bytes) -> Value {
    let Ok(frames) = fawkes_protocol::longpoll::decode_body(ndjson, &data) else {
        // a line that is neither a JSON frame nor base64: the session dies
        // as on any frame it cannot decode
        shared.longpoll.remove(&session.token);
        session.close_now();
        return json!({"status": 408});
    };
    let window = shared.config.longpoll_window;
    for frame in frames {
        let (ack, acked) = oneshot::channel();
        if session.frames_in.send((frame, ack)).await.is_err() {
            return json!({"status": 410});
        }
        match tokio::time::timeout(window, acked).await {
            Ok(Ok(true)) => {}
            _ => return json!({"status": 408}),
        }
    }
    json!({"status": 200})
}

impl LpSession {
    fn close_now(&self) {
        self.out.lock().closed = true;
        self.ready.notify_waiters();
        self.killed.notify_one();
    }
}

impl Registry {
    fn remove(&self, token: &str) {
        self.sessions.lock().remove(token);
    }
}

/// Buffers a frame for the next poll; [`Close::SlowConsumer`] when the
/// buffer is over its limits (the client is not polling).
fn buffer<S: Socket>(conn: &ConnState<S>, session: &LpSession, frame: Frame) -> Result<(), Close> {
    if frame.opcode == Opcode::Binary {
        // JSON bodies cannot carry binary frames (Phoenix fails the same way).
        tracing::warn!("dropping a binary frame: long polling cannot carry it");
        return Ok(());
    }
    let mut out = session.out.lock();
    let cfg = &conn.shared.config;
    if out.messages.len() >= cfg.outbox_frames || out.bytes + frame.data.len() > cfg.outbox_bytes {
        return Err(Close::SlowConsumer);
    }
    out.bytes += frame.data.len();
    out.messages.push(frame.data);
    Ok(())
}

/// A session's task: POSTed frames into the driver (each acknowledged once
/// taken), what the driver gives into the buffer the next poll takes. The
/// session ends when the client stops polling (no poll for one and a half
/// windows), on a close from the driver, or when a request kills it.
async fn run<S: Socket>(
    shared: Arc<SocketShared<S>>,
    conn: Arc<ConnState<S>>,
    session: Arc<LpSession>,
    mut frames_in: mpsc::Receiver<(Frame, oneshot::Sender<bool>)>,
    _relay: Subscription,
) {
    let mut driver = Driver::new(conn.clone());
    let window = shared.config.longpoll_window;
    let check_every = window.mul_f32(1.5).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + check_every, check_every);
    // the acknowledgement of a frame that waits for room in its channel
    let mut pending_ack: Option<oneshot::Sender<bool>> = None;
    let close = loop {
        tokio::select! {
            _ = session.killed.notified() => break Close::Gone,
            _ = ticker.tick() => {
                if session.last_poll.lock().elapsed() > check_every || session.out.lock().closed {
                    break Close::Gone;
                }
            }
            received = frames_in.recv(), if !driver.is_blocked() => {
                let Some((frame, ack)) = received else { break Close::Gone };
                match driver.handle_in(&frame) {
                    Ok(()) if driver.is_blocked() => pending_ack = Some(ack),
                    Ok(()) => { let _ = ack.send(true); }
                    Err(close) => {
                        let _ = ack.send(false);
                        break close;
                    }
                }
            }
            ready = driver.ready() => {
                if ready.unblocked && !driver.is_blocked() {
                    if let Some(ack) = pending_ack.take() {
                        let _ = ack.send(true);
                    }
                }
                if ready.outbound {
                    let mut any = false;
                    let drained = driver.handle_info(|push| {
                        any = true;
                        buffer(&conn, &session, push.frame)
                    });
                    if any {
                        session.ready.notify_waiters();
                    }
                    if let Err(close) = drained {
                        break close;
                    }
                }
            }
        }
    };
    // The client learns the session is gone only once its channels are
    // over, whatever ended it: one that stopped polling may come back.
    tracing::debug!(?close, "long-poll session ends");
    driver.end_channels().await;
    shared.longpoll.remove(&session.token);
    shared.endpoint.metrics().longpoll_closed();
    session.close_now();
    drop(driver);
}
