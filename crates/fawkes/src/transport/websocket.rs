//! The WebSocket transport: Phoenix's handshake checks, in Phoenix's order,
//! then one task per connection that reads frames, hands them to the
//! connection's [`Driver`] and writes whatever it gives back. What is its
//! own: the RFC 6455 framing (ping/pong, close frames, frame limits,
//! permessage-deflate), batching reads, non-blocking writes from a
//! per-thread buffer, the write timeout and the idle timer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use fawkes_protocol::Vsn;
use futures_util::future::Either;
use futures_util::FutureExt;
use http::{header, Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::Instrument;

use super::driver::{Close, Driver};
use super::ws_codec::{self, negotiate_deflate, WsEvent, WsReader};
use super::ws_handshake::{check_upgrade, has_token, switching_protocols};
use super::ws_io::{Generic, WsIo};
use crate::conn::{ConnState, SocketShared};
use crate::serve::Capped;
use crate::{origin, ConnectError, ConnectInfo, Params, Socket};

fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// `GET <path>/websocket`: Phoenix's checks, then the upgrade.
pub(crate) async fn upgrade<S: Socket>(State(shared): State<Arc<SocketShared<S>>>, mut req: Request) -> Response {
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

/// Longest time a connection the server closes is read on, for the
/// client's close frame.
const LINGER: Duration = Duration::from_secs(5);

/// Most client frames handled before what they produced is written.
const BATCH: usize = 32;

struct Conn<S: Socket, IO: WsIo> {
    io: IO,
    driver: Driver<S>,
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

/// The buffer to write into: the pending bytes, or the thread's scratch.
fn out_buf(out: &mut Vec<u8>) -> &mut Vec<u8> {
    if out.capacity() == 0 {
        *out = SCRATCH.with(std::cell::Cell::take);
    }
    out
}

impl<S: Socket, IO: WsIo> Conn<S, IO> {
    fn new(io: IO, leftover: &[u8], conn: Arc<ConnState<S>>, mut reader: WsReader, deflate: bool) -> Self {
        // What the client sent right behind its upgrade request. Copied out:
        // the upgrade's buffer is hyper's whole read buffer, and holding a
        // view of it would keep kilobytes alive for the connection's life.
        reader.feed(leftover);
        Conn { io, driver: Driver::new(conn), reader, deflate, out: Vec::new(), torn: false }
    }

    /// Polls everything the connection waits for, and reports all that is
    /// ready, so that a busy outbox cannot starve reads or the other way
    /// around. A blocked client message is retried here once its channel
    /// has room (reads resume on the next turn).
    fn poll_woken(
        &mut self,
        cx: &mut std::task::Context<'_>,
        idle: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> std::task::Poll<Woken> {
        use std::task::Poll;
        let mut woken = Woken::default();
        let mut unblocked = false;
        if self.driver.is_blocked() {
            unblocked = self.driver.poll_unblocked(cx).is_ready();
        } else if let Poll::Ready(r) = self.io.poll_read_into(cx, &mut self.reader) {
            woken.read = Some(r);
        }
        woken.outbox = self.driver.poll_outbound(cx).is_ready();
        woken.idle = idle.poll(cx).is_ready();
        if woken.outbox || unblocked || woken.read.is_some() || woken.idle {
            Poll::Ready(woken)
        } else {
            Poll::Pending
        }
    }

    /// Handles every complete frame already read. Stops early when a
    /// channel's mailbox is full.
    /// Returns true when it stopped with complete frames still buffered.
    fn process(&mut self) -> Result<bool, Close> {
        // A bounded batch: what it queues for the client is written before
        // the next batch, so one read full of requests cannot overflow the
        // outbox with the socket's own replies.
        for _ in 0..BATCH {
            if self.driver.is_blocked() {
                return Ok(false);
            }
            let ev = match self.reader.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(false),
                Err(e) => {
                    self.reader.discard();
                    return Err(Close::Server { code: e.code, reason: e.reason });
                }
            };
            match ev {
                WsEvent::Message(frame) => self.driver.handle_in(&frame)?,
                WsEvent::Ping(data) => ws_codec::write_frame(out_buf(&mut self.out), ws_codec::OP_PONG, false, &data),
                WsEvent::Pong => {}
                WsEvent::Close(code) => return Err(Close::Client { code }),
            }
        }
        Ok(true)
    }

    /// Turns what the driver gives into bytes in `self.out`.
    fn drain_outbox(&mut self) -> Result<(), Close> {
        let deflate = self.deflate;
        let out = &mut self.out;
        self.driver.handle_info(|push| {
            if push.deflated {
                ws_codec::write_deflated(out_buf(out), &push.frame);
            } else {
                ws_codec::write_message(out_buf(out), &push.frame, deflate);
            }
            Ok(())
        })
    }

    /// Writes what is pending: at once when the socket takes it all (the
    /// buffer then goes back to the thread), else in a boxed slow path.
    async fn flush(&mut self) -> Result<(), Close> {
        if self.try_flush()? {
            return Ok(());
        }
        Box::pin(self.flush_slow()).await
    }

    /// Writes what is pending if the socket takes it all now: `Ok(true)`
    /// when nothing is left (the buffer goes back to the thread), `Ok(false)`
    /// when the rest must be waited for with [`Conn::flush_slow`]. Not an
    /// `async fn`, so that the connection's loop holds no future for the
    /// common case.
    fn try_flush(&mut self) -> Result<bool, Close> {
        if self.out.is_empty() {
            return Ok(true);
        }
        match self.io.try_write_now(&self.out) {
            Ok(None) => {
                let mut out = std::mem::take(&mut self.out);
                if out.capacity() <= SCRATCH_KEEP {
                    out.clear();
                    SCRATCH.with(|s| s.set(out));
                }
                Ok(true)
            }
            Ok(Some(n)) => {
                self.out.drain(..n);
                Ok(false)
            }
            Err(_) => {
                // the connection is dead: nothing of this is sent again
                self.out = Vec::new();
                Err(Close::Gone)
            }
        }
    }

    /// Waits until the socket takes the rest of what is pending, at most the
    /// write timeout (a client that stops reading is a slow consumer).
    ///
    /// Meanwhile what is unwritten counts against the outbox's limit, and
    /// the driver is watched: when the outbox overflows (or the endpoint's
    /// budget closes this connection, or a disconnect or shutdown arrives)
    /// the connection is dropped at once rather than at the write timeout.
    async fn flush_slow(&mut self) -> Result<(), Close> {
        let out = std::mem::take(&mut self.out);
        let limit = self.driver.conn().shared.config.write_timeout;
        self.driver.set_unwritten(out.len());
        let driver = &self.driver;
        let write = tokio::time::timeout(limit, self.io.write_all_bytes(&out));
        let interrupt = std::future::poll_fn(|cx| driver.poll_interrupt(cx));
        let result = tokio::select! {
            biased;
            r = write => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Close::Gone),
                Err(_) => {
                    driver.slow_consumer("a write did not complete within the write timeout");
                    Err(Close::Gone)
                }
            },
            close = interrupt => {
                self.torn = true;
                Err(close)
            }
        };
        self.driver.set_unwritten(0);
        result
    }

    async fn close(&mut self, code: Option<u16>, reason: &str) {
        let mut frame = Vec::new();
        match code {
            Some(code) => ws_codec::write_close(&mut frame, code, reason),
            None => ws_codec::write_frame(&mut frame, ws_codec::OP_CLOSE, false, &[]),
        }
        out_buf(&mut self.out).extend_from_slice(&frame);
        if self.flush().await.is_ok() {
            self.io.close_write().await;
        }
    }
}

/// A connection's loop. Not an `async fn`: its parameter would be moved
/// into a second slot of the future; the block's capture is used in place.
/// What it waits for is polled in place too (see [`Conn::poll_woken`]), so
/// that an idle connection holds its state, its timer and little else: no
/// local lives across an `await` but the timer (a write that has to wait
/// runs in a boxed future, and the writes before a close are left to the
/// boxed [`finish`]).
#[allow(clippy::manual_async_fn)]
fn serve<S: Socket, IO: WsIo>(mut c: Conn<S, IO>) -> impl Future<Output = ()> + Send {
    async move {
        let idle = tokio::time::sleep(c.driver.timeout());
        tokio::pin!(idle);

        let exit = loop {
            // The fast paths below (outbox, non-blocking writes) spend none
            // of tokio's cooperative budget: spend one unit per turn, so that
            // a connection kept busy by broadcasts still yields to the other
            // tasks of its worker.
            tokio::task::coop::consume_budget().await;
            let more = match c.process() {
                Ok(more) => more,
                Err(exit) => break (exit, false),
            };
            if more {
                if let Err(exit) = c.drain_outbox() {
                    // write what was queued before the close
                    break (exit, true);
                }
            }
            match c.try_flush() {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(exit) = Box::pin(c.flush_slow()).await {
                        break (exit, false);
                    }
                }
                Err(exit) => break (exit, false),
            }
            if more {
                continue;
            }
            let woken = std::future::poll_fn(|cx| c.poll_woken(cx, idle.as_mut())).await;
            if woken.outbox {
                if let Err(exit) = c.drain_outbox() {
                    break (exit, true);
                }
            }
            match woken.read {
                Some(Ok(0) | Err(_)) => break (Close::Gone, false),
                Some(Ok(_)) => c.driver.activity(),
                None => {}
            }
            if woken.idle {
                match c.driver.check_idle(Instant::now()) {
                    Ok(deadline) => idle.as_mut().reset(deadline),
                    Err(exit) => break (exit, false),
                }
            }
        };
        Box::pin(finish(c, exit)).await;
    }
}

/// Closes the connection as `exit` says, after writing what is pending when
/// `exit.1` says so (kept out of the connection's loop future, which stays
/// small while the connection lives).
async fn finish<S: Socket, IO: WsIo>(mut c: Conn<S, IO>, (exit, flush): (Close, bool)) {
    if flush {
        let _ = c.flush().await;
    }
    // The client learns that the connection closed only once its channels
    // are over, so that a reconnect finds them gone.
    c.driver.close_channels(&exit).await;
    match exit {
        Close::Server { code, reason } => {
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
        Close::Client { code } => c.close(code, "").await,
        Close::SlowConsumer if !c.torn => {
            let mut frame = Vec::new();
            ws_codec::write_close(&mut frame, exit.code().unwrap_or(1013), exit.reason());
            let _ = c.io.try_write_now(&frame);
        }
        Close::SlowConsumer | Close::Gone => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestSocket;

    impl Socket for TestSocket {
        type Assigns = ();
        async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> {
            Ok(())
        }
    }

    /// The size of the future a function returns, without calling it.
    fn returned<A, F>(_: fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn an_idle_connection_loop_holds_its_state_its_timer_and_a_few_words() {
        let conn = std::mem::size_of::<Conn<TestSocket, TcpStream>>();
        let timer = std::mem::size_of::<tokio::time::Sleep>();
        let task = returned(serve::<TestSocket, TcpStream>);
        // a local kept across an `await` (a pending close, a write's future)
        // adds its size to every connection
        assert!(
            task <= conn + timer + 40,
            "the loop's future is {task} bytes for {conn} of state and a {timer}-byte timer"
        );
        let capped = returned(serve::<TestSocket, Capped>);
        let conn = std::mem::size_of::<Conn<TestSocket, Capped>>();
        assert!(capped <= conn + timer + 40, "through fawkes::serve: {capped} bytes for {conn} of state");
    }
}
