//! The WebSocket transport: Phoenix's handshake checks, in Phoenix's order,
//! then one task per connection that reads frames, routes them through the
//! session and writes whatever the outbox holds.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use fawkes_protocol::Vsn;
use futures_util::future::Either;
use futures_util::FutureExt;
use http::{header, Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::Instrument;

use super::ws_codec::{self, close, negotiate_deflate, WsEvent, WsReader};
use super::ws_handshake::{check_upgrade, has_token, switching_protocols};
use super::ws_io::{Generic, WsIo};
use crate::conn::{ConnState, SocketShared};
use crate::serve::Capped;
use crate::session::{Action, Blocked, Session};
use crate::{origin, ConnectError, ConnectInfo, Params, Socket};

pub(crate) fn router<S: Socket, St: Clone + Send + Sync + 'static>(
    shared: Arc<SocketShared<S>>,
    path: &str,
) -> axum::Router<St> {
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

async fn upgrade<S: Socket>(State(shared): State<Arc<SocketShared<S>>>, mut req: Request) -> Response {
    if req.method() != Method::GET {
        return status(StatusCode::BAD_REQUEST);
    }
    let params = Params::from_query(req.uri().query().unwrap_or(""));
    let config = &shared.config;
    if !origin::request_allowed(config, &req) {
        tracing::error!(origin = ?req.headers().get(header::ORIGIN), "could not check origin for the socket transport");
        shared.endpoint.metrics().refused();
        return status(StatusCode::FORBIDDEN);
    }
    let headers = req.headers();
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
    let deflate = if config.compress { negotiate_deflate(headers) } else { None };
    // what this connection is sent is compressed unless the client limited
    // the server's window; what it sends may be compressed either way
    let compress = deflate.is_some_and(|d| d.server_compresses());
    let conn = match crate::handler::connect(&shared, &params, &info, vsn, "websocket", compress).await {
        Ok(c) => c,
        Err(ConnectError::Status(code)) => return status(code),
        Err(_) => return status(StatusCode::FORBIDDEN),
    };
    // Phoenix validates the upgrade itself only after connect has run.
    let headers = req.headers();
    let accept = match check_upgrade(headers) {
        Ok(accept) => accept,
        Err(refused) => return refused.into_response(),
    };
    // The latest client sends its auth token as a subprotocol next to
    // `phoenix`; browsers fail a handshake that does not echo one they offered.
    let echo_phoenix = has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, "phoenix");
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::BAD_REQUEST, "this connection cannot be upgraded").into_response();
    };

    let span = tracing::info_span!("socket", transport = "websocket", vsn = vsn.as_str());
    crate::telemetry::continue_trace(&span, &conn.trace);
    let config = &conn.shared.config;
    let reader = WsReader::new(config.max_frame_size, deflate.is_some());
    // The upgrade runs in a boxed future that is freed once it resolves; the
    // task then holds only the connection's loop.
    let upgraded = Box::pin(async move {
        match on_upgrade.await {
            Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    Some(Either::Left(Conn::new(parts.io.into_inner(), &parts.read_buf, conn, reader, compress)))
                }
                // through `fawkes::serve`: the stream keeps its slot under
                // the connection cap until it is closed
                Err(upgraded) => match upgraded.downcast::<TokioIo<Capped>>() {
                    Ok(parts) => Some(Either::Right(Either::Left(Conn::new(
                        parts.io.into_inner(),
                        &parts.read_buf,
                        conn,
                        reader,
                        compress,
                    )))),
                    Err(upgraded) => Some(Either::Right(Either::Right(Conn::new(
                        Generic(TokioIo::new(upgraded)),
                        &[],
                        conn,
                        reader,
                        compress,
                    )))),
                },
            },
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                None
            }
        }
    });
    tokio::spawn(
        upgraded
            .then(|c| match c {
                Some(Either::Left(c)) => Either::Left(serve(c)),
                Some(Either::Right(Either::Left(c))) => Either::Right(Either::Left(serve(c))),
                Some(Either::Right(Either::Right(c))) => Either::Right(Either::Right(Either::Left(serve(c)))),
                None => Either::Right(Either::Right(Either::Right(std::future::ready(())))),
            })
            .instrument(span),
    );

    switching_protocols(&accept, deflate.as_ref(), echo_phoenix.then_some("phoenix"))
}

/// Longest wait for a closing connection's channels to end before the
/// close frame is sent anyway.
const CLOSE_CHANNELS_WAIT: Duration = Duration::from_secs(5);

/// Longest time a connection the server closes is read on, for the
/// client's close frame.
const LINGER: Duration = Duration::from_secs(5);

/// Most client frames handled before what they produced is written.
const BATCH: usize = 32;

/// Why the connection loop ended.
enum Exit {
    /// Close with this code.
    Close(u16, &'static str),
    /// The client closed (its code is echoed) or went away.
    ClientClosed(Option<u16>),
    /// The client does not read: a close frame (1013) is sent if the socket
    /// takes it at once, and the connection is dropped.
    SlowConsumer,
    Gone,
}

struct Conn<S: Socket, IO: WsIo> {
    io: IO,
    session: Session<S>,
    conn: Arc<ConnState<S>>,
    reader: WsReader,
    deflate: bool,
    /// Bytes for the client not yet written: empty (and unallocated) while
    /// the connection is idle.
    out: Vec<u8>,
    /// A write was abandoned part way: nothing more may follow it on the
    /// wire.
    torn: bool,
}

/// What woke a connection's loop (any number of them at once).
#[derive(Default)]
struct Woken {
    outbox: bool,
    space: bool,
    read: Option<std::io::Result<usize>>,
    idle: bool,
}

thread_local! {
    /// A write buffer reused by every connection that a worker thread
    /// serves: writes that complete at once allocate nothing.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Largest buffer kept for reuse.
const SCRATCH_KEEP: usize = 64 * 1024;

impl<S: Socket, IO: WsIo> Conn<S, IO> {
    fn new(io: IO, leftover: &[u8], conn: Arc<ConnState<S>>, mut reader: WsReader, deflate: bool) -> Self {
        // What the client sent right behind its upgrade request. Copied out:
        // the upgrade's buffer is hyper's whole read buffer, and holding a
        // view of it would keep kilobytes alive for the connection's life.
        reader.feed(leftover);
        Conn { io, session: Session::new(conn.clone()), conn, reader, deflate, out: Vec::new(), torn: false }
    }

    /// The buffer to write into: the pending bytes, or the thread's scratch.
    fn out(&mut self) -> &mut Vec<u8> {
        if self.out.capacity() == 0 {
            self.out = SCRATCH.with(std::cell::Cell::take);
        }
        &mut self.out
    }

    /// Polls everything the connection waits for, and reports all that is
    /// ready, so that a busy outbox cannot starve reads or the other way
    /// around.
    fn poll_woken(
        &mut self,
        cx: &mut std::task::Context<'_>,
        blocked: &Option<Blocked>,
        idle: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> std::task::Poll<Woken> {
        use std::task::Poll;
        let mut woken = Woken { outbox: self.conn.outbox.poll_ready(cx).is_ready(), ..Woken::default() };
        match blocked {
            Some(b) => woken.space = b.poll_space(cx).is_ready(),
            None => {
                if let Poll::Ready(r) = self.io.poll_read_into(cx, &mut self.reader) {
                    woken.read = Some(r);
                }
            }
        }
        woken.idle = idle.poll(cx).is_ready();
        if woken.outbox || woken.space || woken.read.is_some() || woken.idle {
            Poll::Ready(woken)
        } else {
            Poll::Pending
        }
    }

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
                Err(e) => {
                    self.reader.discard();
                    return Err(Exit::Close(e.code, e.reason));
                }
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
                WsEvent::Ping(data) => ws_codec::write_frame(self.out(), ws_codec::OP_PONG, false, &data),
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
        let mut shutdown = false;
        for item in items {
            match self.session.on_out(item) {
                Action::Write { frame, deflated: false } => {
                    let deflate = self.deflate;
                    ws_codec::write_message(self.out(), &frame, deflate);
                }
                Action::Write { frame, deflated: true } => ws_codec::write_deflated(self.out(), &frame),
                Action::Nothing => {}
                Action::Disconnect => disconnect = true,
                Action::Shutdown => shutdown = true,
            }
        }
        if overflowed {
            self.slow_consumer("its outbound queue is full");
            return Err(Exit::SlowConsumer);
        }
        if shutdown {
            return Err(Exit::Close(1012, "service restart"));
        }
        if disconnect {
            return Err(Exit::Close(self.conn.shared.config.disconnect_close_code, ""));
        }
        Ok(())
    }

    /// Writes what is pending: at once when the socket takes it all (the
    /// buffer then goes back to the thread), else in a boxed slow path.
    async fn flush(&mut self) -> Result<(), Exit> {
        if self.out.is_empty() {
            return Ok(());
        }
        match self.io.try_write_now(&self.out) {
            Ok(None) => {
                let mut out = std::mem::take(&mut self.out);
                if out.capacity() <= SCRATCH_KEEP {
                    out.clear();
                    SCRATCH.with(|s| s.set(out));
                }
                Ok(())
            }
            Ok(Some(n)) => {
                self.out.drain(..n);
                Box::pin(self.flush_slow()).await
            }
            Err(_) => {
                // the connection is dead: nothing of this is sent again
                self.out = Vec::new();
                Err(Exit::Gone)
            }
        }
    }

    /// Waits until the socket takes the rest of what is pending, at most the
    /// write timeout (a client that stops reading is a slow consumer).
    ///
    /// Meanwhile what is unwritten counts against the outbox's limit, and
    /// the outbox is watched: when it overflows (or the endpoint's budget
    /// closes this connection, or a disconnect or shutdown arrives) the
    /// connection is dropped at once rather than at the write timeout.
    async fn flush_slow(&mut self) -> Result<(), Exit> {
        let out = std::mem::take(&mut self.out);
        let limit = self.conn.shared.config.write_timeout;
        let outbox = self.conn.outbox.clone();
        outbox.set_unwritten(out.len());
        let write = tokio::time::timeout(limit, self.io.write_all_bytes(&out));
        let must_close = std::future::poll_fn(|cx| outbox.poll_must_close(cx));
        let result = tokio::select! {
            biased;
            r = write => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Exit::Gone),
                Err(_) => {
                    self.slow_consumer("a write did not complete within the write timeout");
                    Err(Exit::Gone)
                }
            },
            () = must_close => {
                self.torn = true;
                if outbox.is_overflowed() {
                    self.slow_consumer("its outbound queue is full");
                }
                Err(Exit::Gone)
            }
        };
        outbox.set_unwritten(0);
        result
    }

    /// Counts and logs a client that does not read fast enough.
    fn slow_consumer(&self, why: &str) {
        self.conn.shared.endpoint.metrics().slow_consumer();
        tracing::warn!(socket_id = ?self.conn.id, "closing a slow consumer: {why}");
    }

    async fn close(&mut self, code: Option<u16>, reason: &str) {
        let mut frame = Vec::new();
        match code {
            Some(code) => ws_codec::write_close(&mut frame, code, reason),
            None => ws_codec::write_frame(&mut frame, ws_codec::OP_CLOSE, false, &[]),
        }
        self.out().extend_from_slice(&frame);
        if self.flush().await.is_ok() {
            self.io.close_write().await;
        }
    }
}

/// A connection's loop. Not an `async fn`: its parameter would be moved
/// into a second slot of the future; the block's capture is used in place.
/// What it waits for is polled in place too (see [`Conn::poll_woken`]), so
/// that an idle connection holds its state, its timer and little else.
#[allow(clippy::manual_async_fn)]
fn serve<S: Socket, IO: WsIo>(mut c: Conn<S, IO>) -> impl Future<Output = ()> + Send {
    async move {
        let timeout = c.conn.shared.config.timeout;
        let mut blocked: Option<Blocked> = None;
        let mut last_activity = Instant::now();
        let idle = tokio::time::sleep(timeout);
        tokio::pin!(idle);

        let exit = loop {
            // The fast paths below (outbox, non-blocking writes) spend none
            // of tokio's cooperative budget: spend one unit per turn, so that
            // a connection kept busy by broadcasts still yields to the other
            // tasks of its worker.
            tokio::task::coop::consume_budget().await;
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
            let woken = std::future::poll_fn(|cx| c.poll_woken(cx, &blocked, idle.as_mut())).await;
            if woken.outbox {
                last_activity = Instant::now();
                if let Err(exit) = c.drain_outbox() {
                    // write what was queued before the close
                    let _ = c.flush().await;
                    break exit;
                }
            }
            if woken.space {
                if let Some(b) = blocked.take() {
                    blocked = c.session.retry(b);
                }
            }
            match woken.read {
                Some(Ok(0) | Err(_)) => break Exit::Gone,
                Some(Ok(_)) => last_activity = Instant::now(),
                None => {}
            }
            if woken.idle {
                let deadline = last_activity + timeout;
                if Instant::now() >= deadline {
                    break Exit::Close(close::NORMAL, "idle timeout");
                }
                idle.as_mut().reset(deadline);
            }
        };
        Box::pin(finish(c, exit)).await;
    }
}

/// Closes the connection as `exit` says (kept out of the connection's loop
/// future, which stays small while the connection lives).
async fn finish<S: Socket, IO: WsIo>(mut c: Conn<S, IO>, exit: Exit) {
    if !matches!(exit, Exit::Gone | Exit::SlowConsumer) {
        // The client learns that the connection closed only once its
        // channels are over, so that a reconnect finds them gone.
        c.session.close_channels(CLOSE_CHANNELS_WAIT).await;
    }
    match exit {
        Exit::Close(code, reason) => {
            c.close(Some(code), reason).await;
            // Read on until the client answers with its own close frame or
            // closes: a socket closed with unread bytes is reset, and a reset
            // can reach the client before the close frame (it would see 1006,
            // not this code). What the client still sends (the rest of a
            // message too big to take) is dropped as it arrives.
            let _ = tokio::time::timeout(LINGER, async {
                loop {
                    match c.io.read_into(&mut c.reader).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => loop {
                            match c.reader.next_event() {
                                Ok(Some(WsEvent::Close(_))) => return,
                                Ok(Some(_)) => {}
                                Ok(None) => break,
                                Err(_) => c.reader.discard(),
                            }
                        },
                    }
                }
            })
            .await;
        }
        Exit::ClientClosed(code) => c.close(code, "").await,
        Exit::SlowConsumer if !c.torn => {
            let mut frame = Vec::new();
            ws_codec::write_close(&mut frame, 1013, "slow consumer");
            let _ = c.io.try_write_now(&frame);
        }
        Exit::SlowConsumer => {}
        Exit::Gone => {}
    }
}
