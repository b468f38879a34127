//! The connection driver: the rules every transport shares, held once.
//!
//! See the [module documentation](crate::transport) for the contract.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fawkes_protocol::{Frame, Vsn};
use tokio::time::Instant;

use crate::conn::ConnState;
use crate::session::{Action, Blocked, Session};
use crate::Socket;

/// Longest wait for a closing connection's channels to end before the
/// client is told anyway.
pub(crate) const CLOSE_CHANNELS_WAIT: Duration = Duration::from_secs(5);

/// RFC 6455 close codes the driver asks for.
mod code {
    /// 1011: the server met a condition it cannot handle (an undecodable
    /// frame, as Phoenix closes on one).
    pub(super) const INTERNAL: u16 = 1011;
    /// 1012: the server restarts (the endpoint shuts down or drains).
    pub(super) const SERVICE_RESTART: u16 = 1012;
    /// 1013: try again later (a client that does not read fast enough).
    pub(super) const TRY_AGAIN_LATER: u16 = 1013;
    /// 1000: a normal closure (the idle timeout).
    pub(super) const NORMAL: u16 = 1000;
}

/// Why a connection ends, as the [`Driver`] decides or as the transport
/// found. The transport tells the client by its own means (a WebSocket close
/// frame with [`Close::code`], the end of a long-poll session, closing a
/// stream) after [`Driver::close_channels`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Close {
    /// The server closes the connection with an RFC 6455 close `code` and a
    /// short `reason`: `disconnect` broadcast to the socket's id
    /// ([`SocketConfig::disconnect_close_code`](crate::SocketConfig), 1001 by
    /// default, empty reason), the endpoint shutting down or draining (1012,
    /// `"service restart"`), an undecodable frame (1011, `"invalid
    /// message"`), the idle timeout (1000, `"idle timeout"`), or a limit of
    /// the transport's own framing (1009 for a frame over `max_frame_size`).
    Server {
        /// The RFC 6455 close code.
        code: u16,
        /// The reason, at most a few words (a close frame carries 123 bytes).
        reason: &'static str,
    },
    /// The client closed the connection, with its close code if it gave one
    /// (a WebSocket echoes it).
    Client {
        /// The client's close code.
        code: Option<u16>,
    },
    /// The client does not read what it is sent fast enough (its outbox
    /// overflowed, or a write did not complete within the write timeout):
    /// the connection is dropped at once, with 1013 (`"slow consumer"`) if
    /// the transport can still send that without waiting. Counted in the
    /// endpoint's metrics and logged with the socket id by the driver.
    SlowConsumer,
    /// The client is gone (its stream ended or failed): nothing can be sent.
    Gone,
}

impl Close {
    /// The RFC 6455 close code to send the client, if any: the server's
    /// code, the client's code echoed, 1013 for a slow consumer, none when
    /// the client is gone.
    pub fn code(&self) -> Option<u16> {
        match *self {
            Close::Server { code, .. } => Some(code),
            Close::Client { code } => code,
            Close::SlowConsumer => Some(code::TRY_AGAIN_LATER),
            Close::Gone => None,
        }
    }

    /// The close reason to send with [`Close::code`].
    pub fn reason(&self) -> &'static str {
        match *self {
            Close::Server { reason, .. } => reason,
            Close::SlowConsumer => "slow consumer",
            Close::Client { .. } | Close::Gone => "",
        }
    }

    /// Whether the client is told only once the connection's channels are
    /// over (see [`Driver::close_channels`]): true unless the client is gone
    /// or is a slow consumer (those are dropped at once).
    pub fn waits_for_channels(&self) -> bool {
        !matches!(self, Close::SlowConsumer | Close::Gone)
    }
}

/// A frame the driver hands to the transport for the client (Phoenix's
/// `{:push, {opcode, payload}, state}`).
#[derive(Debug)]
#[non_exhaustive]
pub struct Push {
    /// The frame, encoded with the connection's serializer: text for JSON
    /// (V1, V2), binary for V2's binary broadcasts and pushes.
    pub frame: Frame,
    /// The frame's data is already compressed for WebSocket
    /// permessage-deflate (a broadcast compressed once for every subscriber
    /// that asks). Only on connections a transport opened with compression
    /// on; false for every transport outside the crate.
    pub deflated: bool,
}

/// What became ready in [`Driver::ready`] (either or both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ready {
    /// Frames or control events wait in the outbox: call
    /// [`Driver::handle_info`].
    pub outbound: bool,
    /// The client message that found its channel's mailbox full was taken:
    /// the transport may read from the client again.
    pub unblocked: bool,
}

/// One connection's driver: the socket session (Phoenix's routing of client
/// messages, the channels it started) and the rules of the connection
/// (back-pressure, rate limits, slow consumers, closes). A transport owns
/// one per connection and calls it from one task; see the
/// [module documentation](crate::transport).
///
/// Dropping the driver is Phoenix's `terminate`: every channel still joined
/// runs its `terminate` and ends, the outbox refuses later pushes, and the
/// connection leaves the endpoint's counts and shutdown list.
pub struct Driver<S: Socket> {
    session: Session<S>,
    /// A client message waiting for room in a channel's mailbox.
    blocked: Option<Blocked>,
    /// The last read from the client or write to it (for the idle timeout).
    last_activity: Instant,
}

impl<S: Socket> std::fmt::Debug for Driver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("vsn", &self.conn().vsn)
            .field("socket_id", &self.conn().id)
            .field("blocked", &self.blocked.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: Socket> Driver<S> {
    /// The driver of a connection whose `connect` succeeded (Phoenix's
    /// `init`): subscribes to the socket id's topic and registers the
    /// connection with the endpoint.
    pub(crate) fn new(conn: Arc<ConnState<S>>) -> Driver<S> {
        Driver { session: Session::new(conn), blocked: None, last_activity: Instant::now() }
    }

    pub(crate) fn conn(&self) -> &Arc<ConnState<S>> {
        self.session.conn()
    }

    /// The serializer the client asked for (`vsn`): how to decode what it
    /// sends and how what it is sent is encoded.
    pub fn vsn(&self) -> Vsn {
        self.conn().vsn
    }

    /// The socket id `Socket::id` gave this connection, if any.
    pub fn socket_id(&self) -> Option<&str> {
        self.conn().id.as_deref()
    }

    /// What `Socket::connect` returned for this connection.
    pub fn assigns(&self) -> &S::Assigns {
        &self.conn().assigns
    }

    /// Hands in one frame the client sent (Phoenix's `handle_in`): decodes
    /// it and routes it (heartbeat, join, leave, event) by Phoenix's rules,
    /// including the rate limits (a `rate_limited` reply), the channel limit
    /// and `unmatched topic` replies. Replies are not returned: they come
    /// out of [`Driver::handle_info`] in order with everything else.
    ///
    /// Afterwards the driver may be [blocked](Driver::is_blocked): the
    /// message waits for room in its channel's mailbox, and the transport
    /// must hand in nothing more (stop reading from the client) until
    /// [`Driver::ready`] reports `unblocked`.
    ///
    /// # Errors
    ///
    /// [`Close::Server`] with 1011 (`"invalid message"`) for a frame the
    /// serializer cannot decode (counted as a decode error), as Phoenix
    /// closes the socket; the same for a frame handed in while blocked (a
    /// transport's mistake; the frame is not handled).
    pub fn handle_in(&mut self, frame: &Frame) -> Result<(), Close> {
        if self.blocked.is_some() {
            tracing::error!("a frame was handed in while the connection waits for a channel's mailbox");
            return Err(Close::Server { code: code::INTERNAL, reason: "invalid message" });
        }
        self.last_activity = Instant::now();
        match self.conn().vsn.decode(frame) {
            Ok(msg) => {
                self.blocked = self.session.handle(msg);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "closing connection: undecodable frame");
                self.conn().shared.endpoint.metrics().decode_error();
                Err(Close::Server { code: code::INTERNAL, reason: "invalid message" })
            }
        }
    }

    /// True while a client message waits for room in its channel's mailbox:
    /// the transport reads nothing from the client meanwhile.
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// Polls the blocked message's channel for room and hands the message
    /// in when there is: `Ready` once the driver is not blocked (at once if
    /// it was not).
    pub fn poll_unblocked(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while let Some(b) = &self.blocked {
            if b.poll_space(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some(b) = self.blocked.take() {
                self.blocked = self.session.retry(b);
            }
        }
        Poll::Ready(())
    }

    /// Polls the outbox: `Ready` when frames or control events wait in it
    /// (call [`Driver::handle_info`]); otherwise the task is woken when one
    /// is queued.
    pub fn poll_outbound(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.conn().outbox.poll_ready(cx)
    }

    /// Polls both what the driver waits for, and reports all that is ready
    /// (see [`Driver::ready`]).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Ready> {
        let unblocked = self.blocked.is_some() && self.poll_unblocked(cx).is_ready();
        let outbound = self.poll_outbound(cx).is_ready();
        if outbound || unblocked {
            Poll::Ready(Ready { outbound, unblocked })
        } else {
            Poll::Pending
        }
    }

    /// Waits until something is queued for the client or the blocked
    /// message was taken. Cancel-safe: dropped before it completes, nothing
    /// is lost. A transport waits on it next to its own reads, e.g. in a
    /// `tokio::select!` whose read branch is guarded by
    /// `!driver.is_blocked()`.
    pub fn ready(&mut self) -> impl Future<Output = Ready> + Send + '_ {
        std::future::poll_fn(move |cx| self.poll_ready(cx))
    }

    /// Takes everything queued for the client (Phoenix's `handle_info`):
    /// every frame goes to `push` in order (replies, pushes, broadcasts,
    /// `phx_close`/`phx_error` of channels that ended), and the control
    /// events among them are applied (a channel's end frees its topic).
    ///
    /// `push` returns `Err` when the transport cannot take the frame:
    /// [`Close::SlowConsumer`] when its own buffer for the client is full
    /// (counted and logged here), [`Close::Gone`] when the client is gone.
    /// No frame is offered after the first `Err`.
    ///
    /// # Errors
    ///
    /// The connection must close, after the frames already pushed are sent:
    /// [`Close::SlowConsumer`] when the outbox overflowed (a frame was
    /// dropped, so the client cannot be served in order) or `push` said so;
    /// `push`'s own error; [`Close::Server`] with 1012 when the endpoint
    /// shuts down or drains, with the configured code (1001) on a
    /// `disconnect` broadcast.
    pub fn handle_info(&mut self, mut push: impl FnMut(Push) -> Result<(), Close>) -> Result<(), Close> {
        self.last_activity = Instant::now();
        let (items, overflowed) = self.conn().outbox.drain();
        let mut disconnect = false;
        let mut shutdown = false;
        let mut refused = None;
        for item in items {
            match self.session.on_out(item) {
                Action::Write { frame, deflated } => {
                    if refused.is_none() {
                        refused = push(Push { frame, deflated }).err();
                    }
                }
                Action::Nothing => {}
                Action::Disconnect => disconnect = true,
                Action::Shutdown => shutdown = true,
            }
        }
        if overflowed || refused == Some(Close::SlowConsumer) {
            return Err(self.slow_consumer("its outbound queue is full"));
        }
        if let Some(close) = refused {
            return Err(close);
        }
        if shutdown {
            return Err(Close::Server { code: code::SERVICE_RESTART, reason: "service restart" });
        }
        if disconnect {
            return Err(Close::Server { code: self.conn().shared.config.disconnect_close_code, reason: "" });
        }
        Ok(())
    }

    /// Records that the client was heard from (a transport calls it on every
    /// read, [`Driver::handle_in`] and [`Driver::handle_info`] do too).
    pub fn activity(&mut self) {
        self.last_activity = Instant::now();
    }

    /// The idle timeout (`SocketConfig::timeout`): `Ok` with the instant to
    /// check again, or [`Close::Server`] 1000 (`"idle timeout"`) once nothing
    /// was read from or written to the client for that long.
    ///
    /// # Errors
    ///
    /// The connection was idle for the whole timeout.
    pub fn check_idle(&self, now: Instant) -> Result<Instant, Close> {
        let deadline = self.last_activity + self.conn().shared.config.timeout;
        if now >= deadline {
            Err(Close::Server { code: code::NORMAL, reason: "idle timeout" })
        } else {
            Ok(deadline)
        }
    }

    /// The idle timeout (`SocketConfig::timeout`).
    pub fn timeout(&self) -> Duration {
        self.conn().shared.config.timeout
    }

    /// Counts and logs a client that does not read fast enough (e.g. a
    /// write that did not complete within `SocketConfig::write_timeout`),
    /// and gives the close to end it with.
    pub fn slow_consumer(&self, why: &str) -> Close {
        self.conn().shared.endpoint.metrics().slow_consumer();
        tracing::warn!(socket_id = ?self.conn().id, "closing a slow consumer: {why}");
        Close::SlowConsumer
    }

    /// Tells the driver how many bytes the transport took from
    /// [`Driver::handle_info`] but could not write yet (0 once written):
    /// they count against the outbox's byte limit and the endpoint's
    /// outbound budget.
    pub fn set_unwritten(&self, bytes: usize) {
        self.conn().outbox.set_unwritten(bytes);
    }

    /// While a write to the client is pending: `Ready` when the connection
    /// must end without waiting for the write (the outbox overflowed, the
    /// endpoint's budget closed the connection, a `disconnect` or shutdown
    /// arrived). The write is then abandoned part way, so nothing more may
    /// be sent: the close is [`Close::SlowConsumer`] (counted) when the
    /// outbox overflowed, [`Close::Gone`] otherwise.
    pub fn poll_interrupt(&self, cx: &mut Context<'_>) -> Poll<Close> {
        let outbox = &self.conn().outbox;
        if outbox.poll_must_close(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(if outbox.is_overflowed() { self.slow_consumer("its outbound queue is full") } else { Close::Gone })
    }

    /// Ends every channel of a connection that closes for `close` and waits
    /// until each is over (`terminate` run, presences untracked), at most
    /// 5 s, when [`Close::waits_for_channels`]: the transport tells the
    /// client only afterwards, so that a client that reconnects at once
    /// finds the old channels gone. Returns at once otherwise.
    pub async fn close_channels(&mut self, close: &Close) {
        if close.waits_for_channels() {
            self.end_channels().await;
        }
    }

    /// Ends every channel and waits for each, at most 5 s, whatever the
    /// reason of the close (a long-poll client that stopped polling may come
    /// back with a new session, and must find its old channels gone).
    pub(crate) async fn end_channels(&mut self) {
        self.blocked = None;
        self.session.close_channels(CLOSE_CHANNELS_WAIT).await;
    }
}

impl<S: Socket> crate::SocketService<S> {
    /// Connects a client through a transport of the caller's (Phoenix's
    /// `connect` then `init`): negotiates the serializer from `params`'
    /// `vsn` (V1 without one), runs `Socket::connect` and `Socket::id`,
    /// takes a place under the connection limits, and gives the
    /// connection's [`Driver`]. `transport` names the transport in
    /// telemetry (`[:phoenix, :socket_connected]`'s `transport`).
    ///
    /// Origin checks are the transport's to make before (see
    /// `SocketConfig::check_origin`): only it knows where the client comes
    /// from.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Refused`](crate::ConnectError) for a `vsn` this
    /// server does not speak; what `connect` returned when it refused;
    /// [`ConnectError::Status`](crate::ConnectError) 503 at the connection
    /// limits.
    pub async fn connect_transport(
        &self,
        params: &crate::Params,
        info: &crate::ConnectInfo,
        transport: &'static str,
    ) -> Result<Driver<S>, crate::ConnectError> {
        let vsn = Vsn::negotiate(params.get_str("vsn")).map_err(|_| crate::ConnectError::Refused)?;
        let conn = crate::handler::connect(&self.shared, params, info, vsn, transport, false).await?;
        Ok(Driver::new(conn))
    }
}
