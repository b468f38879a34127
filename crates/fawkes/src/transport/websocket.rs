//! The WebSocket transport: Phoenix's handshake checks, in Phoenix's order,
//! then one task per connection that reads frames, routes them through the
//! session and writes whatever the outbox holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use fawkes_protocol::Vsn;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::Instrument;

use super::ws_codec::{self, close, negotiate_deflate, WsEvent, WsReader};
use super::ws_io::{Generic, WsIo};
use crate::conn::{ConnState, SocketShared};
use crate::session::{Action, Blocked, Session};
use crate::{origin, ConnectError, ConnectInfo, Params, Socket};

pub(crate) fn router<S: Socket>(shared: Arc<SocketShared<S>>, path: &str) -> axum::Router {
    let base = path.trim_end_matches('/');
    let mut router = axum::Router::new().route(&format!("{base}/websocket"), any(upgrade::<S>));
    if shared.config.longpoll {
        router = router.route(&format!("{base}/longpoll"), any(super::longpoll::handle::<S>));
    }
    router.with_state(shared)
}

fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// Phoenix's `check_origin` on a request's headers: a request without an
/// `Origin` header is always allowed.
pub(crate) fn origin_allowed(policy: &crate::CheckOrigin, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let (host, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()),
        None => (host, None),
    };
    origin.to_str().map(|o| origin::allowed(policy, o, ("http", host, port))).unwrap_or(false)
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

async fn upgrade<S: Socket>(State(shared): State<Arc<SocketShared<S>>>, mut req: Request) -> Response {
    if req.method() != Method::GET {
        return status(StatusCode::BAD_REQUEST);
    }
    let params = Params::from_query(req.uri().query().unwrap_or(""));
    let headers = req.headers();
    let config = &shared.config;
    if !origin_allowed(&config.check_origin, headers) {
        tracing::error!(origin = ?headers.get(header::ORIGIN), "could not check origin for the socket transport");
        shared.endpoint.metrics().refused();
        return status(StatusCode::FORBIDDEN);
    }
    let peer = req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0);
    let info = ConnectInfo::new(peer, req.uri().clone(), headers);
    let vsn = match Vsn::negotiate(params.get_str("vsn")) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "refusing connection");
            shared.endpoint.metrics().refused();
            return status(StatusCode::FORBIDDEN);
        }
    };
    let conn = match crate::handler::connect(&shared, &params, &info, vsn, "websocket").await {
        Ok(c) => c,
        Err(ConnectError::Status(code)) => return status(code),
        Err(_) => return status(StatusCode::FORBIDDEN),
    };
    // Phoenix validates the upgrade itself only after connect has run.
    let headers = req.headers();
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return (StatusCode::BAD_REQUEST, "'connection' header must contain 'upgrade'").into_response();
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return (StatusCode::BAD_REQUEST, "'upgrade' header must contain 'websocket'").into_response();
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return (StatusCode::BAD_REQUEST, "'sec-websocket-version' header must be 13").into_response();
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return (StatusCode::BAD_REQUEST, "'sec-websocket-key' header is missing").into_response();
    };
    let accept = ws_codec::accept_key(key.as_bytes());
    let deflate = if config.compress {
        headers.get(header::SEC_WEBSOCKET_EXTENSIONS).and_then(|v| v.to_str().ok()).and_then(negotiate_deflate)
    } else {
        None
    };
    // The latest client sends its auth token as a subprotocol next to
    // `phoenix`; browsers fail a handshake that does not echo one they offered.
    let echo_phoenix = has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, "phoenix");
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::BAD_REQUEST, "this connection cannot be upgraded").into_response();
    };

    let span = tracing::info_span!("socket", transport = "websocket", vsn = vsn.as_str());
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                    // boxed: a future nested in this block would be laid
                    // out beside its captures, doubling the task's size
                    Ok(parts) => Box::pin(serve(parts.io.into_inner(), parts.read_buf, conn, deflate.is_some())).await,
                    Err(upgraded) => {
                        Box::pin(serve(Generic(TokioIo::new(upgraded)), Bytes::new(), conn, deflate.is_some())).await
                    }
                },
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        }
        .instrument(span),
    );

    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(ext) = deflate {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static(ext));
    }
    if echo_phoenix {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("phoenix"));
    }
    res
}

/// Most client frames handled before what they produced is written.
const BATCH: usize = 32;

/// Why the connection loop ended.
enum Exit {
    /// Close with this code.
    Close(u16, &'static str),
    /// The client closed (its code is echoed) or went away.
    ClientClosed(Option<u16>),
    Gone,
}

struct Conn<S: Socket, IO: WsIo> {
    io: IO,
    session: Session<S>,
    conn: Arc<ConnState<S>>,
    reader: WsReader,
    deflate: bool,
    out: Vec<u8>,
}

impl<S: Socket, IO: WsIo> Conn<S, IO> {
    /// Handles every complete frame already read. Stops early when a
    /// channel's mailbox is full.
    /// Returns true when it stopped with complete frames still buffered.
    fn process(&mut self, blocked: &mut Option<Blocked>) -> Result<bool, Exit> {
        // A bounded batch: what it queues for the client is written before
        // the next batch, so one read full of requests cannot overflow the
        // outbox with the socket's own replies.
        for _ in 0..BATCH {
            if blocked.is_some() {
                return Ok(false);
            }
            let ev = match self.reader.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(false),
                Err(e) => return Err(Exit::Close(e.code, e.reason)),
            };
            match ev {
                WsEvent::Message(frame) => match self.conn.vsn.decode(&frame) {
                    Ok(msg) => *blocked = self.session.handle(msg),
                    Err(e) => {
                        tracing::error!(error = %e, "closing connection: undecodable frame");
                        self.conn.shared.endpoint.metrics().decode_error();
                        return Err(Exit::Close(close::INTERNAL, "invalid message"));
                    }
                },
                WsEvent::Ping(data) => ws_codec::write_frame(&mut self.out, ws_codec::OP_PONG, false, &data),
                WsEvent::Pong => {}
                WsEvent::Close(code) => return Err(Exit::ClientClosed(code)),
            }
        }
        Ok(true)
    }

    /// Turns the outbox into bytes in `self.out`.
    fn drain_outbox(&mut self) -> Result<(), Exit> {
        let (items, overflowed) = self.conn.outbox.drain();
        let mut disconnect = false;
        for item in items {
            match self.session.on_out(item) {
                Action::Write(frame) => ws_codec::write_message(&mut self.out, &frame, self.deflate),
                Action::Nothing => {}
                Action::Disconnect => disconnect = true,
            }
        }
        if overflowed {
            self.conn.shared.endpoint.metrics().slow_consumer();
            return Err(Exit::Close(1013, "slow consumer"));
        }
        if disconnect {
            return Err(Exit::Close(self.conn.shared.config.disconnect_close_code, "disconnected"));
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Exit> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let limit = self.conn.shared.config.write_timeout;
        match tokio::time::timeout(limit, self.io.write_all_bytes(&out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Exit::Gone),
            Err(_) => {
                self.conn.shared.endpoint.metrics().slow_consumer();
                Err(Exit::Gone)
            }
        }
    }

    async fn close(&mut self, code: Option<u16>, reason: &str) {
        let mut frame = Vec::new();
        match code {
            Some(code) => ws_codec::write_close(&mut frame, code, reason),
            None => ws_codec::write_frame(&mut frame, ws_codec::OP_CLOSE, false, &[]),
        }
        self.out.extend_from_slice(&frame);
        if self.flush().await.is_ok() {
            self.io.close_write().await;
        }
    }
}

async fn serve<S: Socket, IO: WsIo>(io: IO, leftover: Bytes, conn: Arc<ConnState<S>>, deflate: bool) {
    let shared = conn.shared.clone();
    let config = &shared.config;
    let mut shutdown = conn.shared.endpoint.shutdown_signal();
    let mut c = Conn {
        io,
        session: Session::new(conn.clone()),
        conn,
        reader: WsReader::new(config.max_frame_size, deflate),
        deflate,
        out: Vec::new(),
    };
    c.reader.feed(&leftover);
    // The leftover is a view of hyper's whole read buffer: holding it would
    // keep kilobytes alive for the connection's lifetime.
    drop(leftover);
    let mut blocked: Option<Blocked> = None;
    let mut last_activity = Instant::now();
    let idle = tokio::time::sleep(config.timeout);
    tokio::pin!(idle);

    let exit = loop {
        let more = match c.process(&mut blocked) {
            Ok(more) => more,
            Err(exit) => break exit,
        };
        if more {
            if let Err(exit) = c.drain_outbox() {
                let _ = c.flush().await;
                break exit;
            }
        }
        if let Err(exit) = c.flush().await {
            break exit;
        }
        if more {
            continue;
        }
        if *shutdown.borrow() {
            break Exit::Close(1012, "service restart");
        }
        tokio::select! {
            _ = shutdown.changed() => break Exit::Close(1012, "service restart"),
            _ = c.conn.outbox.ready() => {
                last_activity = Instant::now();
                if let Err(exit) = c.drain_outbox() {
                    // write what was queued before the close
                    let _ = c.flush().await;
                    break exit;
                }
            }
            _ = async { match &blocked { Some(b) => b.space().await, None => std::future::pending().await } } => {
                if let Some(b) = blocked.take() {
                    blocked = c.session.retry(b);
                }
            }
            read = c.io.read_into(&mut c.reader), if blocked.is_none() => match read {
                Ok(0) | Err(_) => break Exit::Gone,
                Ok(_) => last_activity = Instant::now(),
            },
            _ = &mut idle => {
                let deadline = last_activity + config.timeout;
                if Instant::now() >= deadline {
                    break Exit::Close(close::NORMAL, "idle timeout");
                }
                idle.as_mut().reset(deadline);
            }
        }
    };
    Box::pin(finish(c, exit)).await;
}

/// Closes the connection as `exit` says (kept out of the connection's loop
/// future, which stays small while the connection lives).
async fn finish<S: Socket, IO: WsIo>(mut c: Conn<S, IO>, exit: Exit) {
    match exit {
        Exit::Close(code, reason) => {
            c.close(Some(code), reason).await;
            // Give the client a moment to answer with its own close frame.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    match c.io.read_into(&mut c.reader).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if matches!(c.reader.next_event(), Ok(Some(WsEvent::Close(_))) | Err(_)) {
                                break;
                            }
                        }
                    }
                }
            })
            .await;
        }
        Exit::ClientClosed(code) => c.close(code, "").await,
        Exit::Gone => {}
    }
}
