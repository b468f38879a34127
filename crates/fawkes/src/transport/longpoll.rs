//! The long-poll transport, as Phoenix serves it: every answer is HTTP 200
//! with the protocol status in a JSON body; a GET without a live session
//! opens one (`410` and a token), a GET with one polls (`200` with messages,
//! or `204` after the window), a POST sends newline-delimited frames.
//!
//! A session is a task like a WebSocket connection's, holding the same
//! socket session; what it would write to a WebSocket it keeps in a bounded
//! buffer until the next poll.
//!
//! Tokens name the node that holds the session (`<node>.<id>`, the id 128
//! random bits), so that a cluster can carry a request to that node over
//! PubSub; a token of another node is, for now, a session that cannot be
//! reached, which Phoenix answers as a session that is gone.

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

use crate::conn::{ConnState, SocketShared};
use crate::session::{Action, Blocked, Session};
use crate::{ConnectInfo, Params, Socket};

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
        return options(&shared, req.headers());
    }
    if method != Method::GET && method != Method::POST {
        return StatusCode::BAD_REQUEST.into_response();
    }
    if !super::websocket::origin_allowed(&shared.config.check_origin, req.headers()) {
        shared.endpoint.metrics().refused();
        return body(json!({"status": 403}));
    }
    let registry = &shared.longpoll;
    let session = token_of(req.headers(), &params).and_then(|t| registry.sessions.lock().get(&t).cloned());
    match (method, session) {
        (Method::GET, Some(session)) => poll(&shared, session, req).await,
        (Method::GET, None) => open(&shared, params, req).await,
        (_, Some(session)) => publish(&shared, session, req).await,
        (_, None) => body(json!({"status": 410})),
    }
}

fn options<S: Socket>(shared: &SocketShared<S>, headers: &HeaderMap) -> Response {
    if !super::websocket::origin_allowed(&shared.config.check_origin, headers) {
        return body(json!({"status": 403}));
    }
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    let requested: Vec<&str> =
        headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS).iter().filter_map(|v| v.to_str().ok()).collect();
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
    let Ok(conn) = crate::handler::connect(shared, &params, &info, vsn, "longpoll").await else {
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
    let span = tracing::info_span!("socket", transport = "longpoll", vsn = vsn.as_str());
    tokio::spawn(run(shared.clone(), conn, session, rx).instrument(span));
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
/// the window.
async fn poll<S: Socket>(shared: &Arc<SocketShared<S>>, session: Arc<LpSession>, req: Request) -> Response {
    *session.last_poll.lock() = Instant::now();
    let deadline = Instant::now() + shared.config.longpoll_window;
    loop {
        let ready = session.ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        match take_messages(&session) {
            Some(Ok(messages)) => return body(json!({"status": 200, "token": session.token, "messages": messages})),
            // The session ended while we waited: a GET for a gone session
            // opens a new one, as Phoenix's does.
            Some(Err(())) => {
                let params = Params::from_query(req.uri().query().unwrap_or(""));
                return open(shared, params, req).await;
            }
            None => {}
        }
        if tokio::time::timeout_at(deadline, ready).await.is_err() {
            *session.last_poll.lock() = Instant::now();
            return body(json!({"status": 204, "token": session.token, "messages": []}));
        }
    }
}

/// A POST: hand each frame to the session in order, each acknowledged.
async fn publish<S: Socket>(shared: &Arc<SocketShared<S>>, session: Arc<LpSession>, req: Request) -> Response {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let data = match to_bytes(req.into_body(), shared.config.longpoll_max_body).await {
        Ok(d) => d,
        Err(_) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(json!({"status": 413, "error": "body too large"})))
                .into_response()
        }
    };
    let ndjson = content_type.as_deref().is_some_and(|c| c.starts_with("application/x-ndjson"));
    let Ok(frames) = fawkes_protocol::longpoll::decode_body(ndjson, &data) else {
        // a line that is neither a JSON frame nor base64: the session dies
        // as on any frame it cannot decode
        shared.longpoll.remove(&session.token);
        session.close_now();
        return body(json!({"status": 408}));
    };
    let window = shared.config.longpoll_window;
    for frame in frames {
        let (ack, acked) = oneshot::channel();
        if session.frames_in.send((frame, ack)).await.is_err() {
            return body(json!({"status": 410}));
        }
        match tokio::time::timeout(window, acked).await {
            Ok(Ok(true)) => {}
            _ => return body(json!({"status": 408})),
        }
    }
    body(json!({"status": 200}))
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

/// Buffers what the session sends; false when the buffer is over its limits
/// (the client is not polling: a slow consumer).
fn buffer<S: Socket>(conn: &ConnState<S>, session: &LpSession, frame: Frame) -> bool {
    if frame.opcode == Opcode::Binary {
        // JSON bodies cannot carry binary frames (Phoenix fails the same way).
        tracing::warn!("dropping a binary frame: long polling cannot carry it");
        return true;
    }
    let mut out = session.out.lock();
    let cfg = &conn.shared.config;
    if out.messages.len() >= cfg.outbox_frames || out.bytes + frame.data.len() > cfg.outbox_bytes {
        return false;
    }
    out.bytes += frame.data.len();
    out.messages.push(frame.data);
    true
}

async fn run<S: Socket>(
    shared: Arc<SocketShared<S>>,
    conn: Arc<ConnState<S>>,
    session: Arc<LpSession>,
    mut frames_in: mpsc::Receiver<(Frame, oneshot::Sender<bool>)>,
) {
    let mut socket = Session::new(conn.clone());
    let mut shutdown = shared.endpoint.shutdown_signal();
    let window = shared.config.longpoll_window;
    let check_every = window.mul_f32(1.5).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + check_every, check_every);
    let mut blocked: Option<(Blocked, oneshot::Sender<bool>)> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = session.killed.notified() => break,
            _ = ticker.tick() => {
                if session.last_poll.lock().elapsed() > check_every || session.out.lock().closed {
                    break;
                }
            }
            received = frames_in.recv(), if blocked.is_none() => {
                let Some((frame, ack)) = received else { break };
                match conn.vsn.decode(&frame) {
                    Ok(msg) => match socket.handle(msg) {
                        Some(b) => blocked = Some((b, ack)),
                        None => { let _ = ack.send(true); }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "closing long-poll session: undecodable frame");
                        shared.endpoint.metrics().decode_error();
                        let _ = ack.send(false);
                        break;
                    }
                }
            }
            _ = async { match &blocked { Some((b, _)) => b.space().await, None => std::future::pending().await } } => {
                if let Some((b, ack)) = blocked.take() {
                    match socket.retry(b) {
                        Some(b) => blocked = Some((b, ack)),
                        None => { let _ = ack.send(true); }
                    }
                }
            }
            _ = conn.outbox.ready() => {
                let (items, overflowed) = conn.outbox.drain();
                let mut stop = overflowed;
                let mut any = false;
                for item in items {
                    match socket.on_out(item) {
                        Action::Write(frame) => {
                            any = true;
                            stop |= !buffer(&conn, &session, frame);
                        }
                        Action::Nothing => {}
                        Action::Disconnect => stop = true,
                    }
                }
                if any {
                    session.ready.notify_waiters();
                }
                if stop {
                    if overflowed {
                        shared.endpoint.metrics().slow_consumer();
                    }
                    break;
                }
            }
        }
    }
    shared.longpoll.remove(&session.token);
    session.close_now();
    drop(socket);
}
