//! Channels: one per joined topic on a socket, each running in its own task.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use fawkes_protocol::{Broadcast, IntoPayload, Message, Payload, Ref, Reply, Vsn};
use fawkes_pubsub::SubscriberId;

use crate::conn::ConnState;
use crate::queue::{Mailbox, Pushed};
use crate::{Endpoint, Socket};

/// The error type of channel callbacks. Returning `Err` from a callback is a
/// crash: the client receives `phx_error` on that topic (or `join crashed`
/// from `join`), and nothing else on the socket is harmed.
pub type ChannelError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A channel: the server side of one topic joined by one client.
///
/// `join` builds the channel's state; the other callbacks receive it as
/// `&mut self`. Each joined channel runs in its own task, so a slow or
/// crashing channel does not hold up the socket's other channels. A panic in
/// any callback is caught and handled as a crash.
///
/// Events listed in [`Channel::INTERCEPT`] go through
/// [`Channel::handle_out`] for every subscriber; every other broadcast is
/// encoded once and written to all subscribers without visiting the channel.
///
/// Write the context as [`Ctx<Self, S>`](crate::Ctx) (`ctx: &mut
/// Ctx<Self, UserSocket>`): it is the `ChannelContext<S, Self::Info>` that
/// rustc spells out when it suggests a missing callback's signature.
///
/// # Example
///
/// ```
/// use fawkes::{Channel, ChannelError, Ctx, HandleInfo, HandleIn, Join, Params, Payload, Socket};
/// use serde_json::json;
///
/// # struct UserSocket;
/// # impl Socket for UserSocket {
/// #     type Assigns = ();
/// #     async fn connect(&self, _: &Params, _: &fawkes::ConnectInfo) -> Result<(), fawkes::ConnectError> { Ok(()) }
/// # }
/// struct Room;
///
/// enum Info {
///     AfterJoin,
/// }
///
/// impl Channel<UserSocket> for Room {
///     type Info = Info;
///
///     async fn join(topic: &str, _payload: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
///         if topic == "room:private" {
///             return Ok(Join::refuse(json!({"reason": "unauthorized"})));
///         }
///         ctx.channel_ref().send(Info::AfterJoin)?;
///         Ok(Join::ok(Room))
///     }
///
///     async fn handle_in(&mut self, event: &str, payload: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<HandleIn, ChannelError> {
///         match event {
///             "new_msg" => {
///                 ctx.broadcast("new_msg", payload)?;
///                 Ok(HandleIn::ok(json!({})))
///             }
///             _ => Ok(HandleIn::error(json!({"reason": "unknown event"}))),
///         }
///     }
///
///     async fn handle_info(&mut self, info: Info, ctx: &mut Ctx<Self, UserSocket>) -> Result<HandleInfo, ChannelError> {
///         match info {
///             Info::AfterJoin => ctx.push("welcome", json!({}))?,
///         }
///         Ok(HandleInfo::Continue)
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a channel of socket `{S}`",
    label = "routed to a socket it does not implement `Channel<{S}>` for",
    note = "write `impl fawkes::Channel<{S}> for {Self}` (with at least `type Info` and `async fn join`)"
)]
pub trait Channel<S: Socket>: Sized + Send + 'static {
    /// Messages sent to the channel from elsewhere ([`ChannelRef::send`]),
    /// handled by [`Channel::handle_info`]. Use `()` when there are none.
    type Info: Send + 'static;

    /// The broadcast events that go through [`Channel::handle_out`].
    const INTERCEPT: &'static [&'static str] = &[];

    /// Joins `topic`: accept (with an optional reply) or refuse with a
    /// payload. Pushes made here are sent after the join reply.
    fn join(
        topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext<S, Self::Info>,
    ) -> impl Future<Output = Result<Join<Self>, ChannelError>> + Send;

    /// Handles an event from the client. The default has no handler for any
    /// event: the channel crashes, as a Phoenix channel without a matching
    /// `handle_in` clause does.
    fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<S, Self::Info>,
    ) -> impl Future<Output = Result<HandleIn, ChannelError>> + Send {
        let _ = (payload, ctx);
        let err: ChannelError = format!("no handle_in for event {event:?}").into();
        async move { Err(err) }
    }

    /// Handles an intercepted broadcast for this subscriber. The default
    /// pushes it unchanged.
    ///
    /// Called only for the events listed in [`Channel::INTERCEPT`] (Phoenix's
    /// `intercept [...]`): a broadcast of any other event goes out to the
    /// client unchanged without calling this, whatever it would answer.
    fn handle_out(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<S, Self::Info>,
    ) -> impl Future<Output = Result<HandleOut, ChannelError>> + Send {
        let _ = (event, ctx);
        async move { Ok(HandleOut::Push(payload)) }
    }

    /// Handles a message sent with [`ChannelRef::send`]. The default ignores it.
    fn handle_info(
        &mut self,
        info: Self::Info,
        ctx: &mut ChannelContext<S, Self::Info>,
    ) -> impl Future<Output = Result<HandleInfo, ChannelError>> + Send {
        let _ = (info, ctx);
        async move { Ok(HandleInfo::Continue) }
    }

    /// Called when the channel ends: on leave, stop, crash and when the
    /// connection goes away (not when a duplicate join replaces it). Pushes
    /// made here are still delivered if the connection is up.
    fn terminate(
        &mut self,
        reason: &StopReason,
        ctx: &mut ChannelContext<S, Self::Info>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (reason, ctx);
        async {}
    }
}

/// The outcome of [`Channel::join`].
#[derive(Debug)]
pub enum Join<C> {
    /// Joined: the channel's state and the reply (`{}` by default).
    Ok {
        /// The channel's state.
        channel: C,
        /// The join reply's response.
        reply: Payload,
    },
    /// Refused: the error reply's response, for example `{"reason": "unauthorized"}`.
    Refused(Payload),
}

impl<C> Join<C> {
    /// Joined, with an empty reply.
    pub fn ok(channel: C) -> Join<C> {
        Join::Ok { channel, reply: Payload::empty() }
    }

    /// Joined, with a reply.
    pub fn ok_with(channel: C, reply: impl IntoPayload) -> Join<C> {
        Join::Ok { channel, reply: reply.into_payload() }
    }

    /// Refused, with this response.
    pub fn refuse(reply: impl IntoPayload) -> Join<C> {
        Join::Refused(reply.into_payload())
    }
}

/// The outcome of [`Channel::handle_in`].
#[derive(Debug)]
pub enum HandleIn {
    /// Reply with a status (`ok`, `error` or any word) and a response.
    Reply {
        /// The status.
        status: Cow<'static, str>,
        /// The response.
        payload: Payload,
    },
    /// No reply (the client's push times out unless answered later through a
    /// [`ReplyRef`]).
    NoReply,
    /// Stop the channel, after an optional reply.
    Stop {
        /// Why: a normal reason sends `phx_close`, an error `phx_error`.
        reason: StopReason,
        /// The reply sent before stopping.
        reply: Option<(Cow<'static, str>, Payload)>,
    },
}

impl HandleIn {
    /// Reply `ok` with `payload`.
    pub fn ok(payload: impl IntoPayload) -> HandleIn {
        HandleIn::Reply { status: Cow::Borrowed("ok"), payload: payload.into_payload() }
    }

    /// Reply `error` with `payload`. This is data, not a crash.
    pub fn error(payload: impl IntoPayload) -> HandleIn {
        HandleIn::Reply { status: Cow::Borrowed("error"), payload: payload.into_payload() }
    }

    /// Reply with any status.
    pub fn reply(status: impl Into<Cow<'static, str>>, payload: impl IntoPayload) -> HandleIn {
        HandleIn::Reply { status: status.into(), payload: payload.into_payload() }
    }

    /// Reply `ok` with `payload`, then stop normally (`phx_close`).
    pub fn stop_ok(payload: impl IntoPayload) -> HandleIn {
        HandleIn::Stop { reason: StopReason::Normal, reply: Some((Cow::Borrowed("ok"), payload.into_payload())) }
    }
}

/// The outcome of [`Channel::handle_out`].
#[derive(Debug)]
pub enum HandleOut {
    /// Push the event to this client with this payload.
    Push(Payload),
    /// Do not send it to this client.
    Drop,
}

/// The outcome of [`Channel::handle_info`].
#[derive(Debug)]
pub enum HandleInfo {
    /// Keep running.
    Continue,
    /// Stop the channel.
    Stop(StopReason),
}

/// Why a channel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Stopped normally by a callback: `phx_close`.
    Normal,
    /// Stopped by a callback with a shutdown reason: `phx_close`.
    Shutdown(String),
    /// The client left the topic: `phx_close`.
    Left,
    /// The connection closed.
    Closed,
    /// A callback crashed (an `Err` or a panic): `phx_error`.
    Crashed(String),
    /// Stopped by a callback with an error reason: `phx_error`.
    Error(String),
}

impl StopReason {
    pub(crate) fn is_normal(&self) -> bool {
        matches!(self, StopReason::Normal | StopReason::Shutdown(_) | StopReason::Left | StopReason::Closed)
    }
}

/// Why a push could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The message cannot be encoded for this client (for example a V2 push
    /// whose payload is not an object).
    #[error(transparent)]
    Encode(#[from] fawkes_protocol::EncodeError),
}

/// A client event was refused by a rate limit: the client's own events
/// (`socket_event_rate`) or the events that fan out to others
/// (`fanout_rate`, checked by [`ChannelContext::broadcast`],
/// [`ChannelContext::broadcast_from`], [`Presence::track`](crate::Presence::track)
/// and [`Presence::update`](crate::Presence::update) while `handle_in` runs).
///
/// Returned from `handle_in` (directly or inside [`BroadcastError`] or
/// [`PresenceError`](crate::PresenceError), for example with `?`), it does
/// not crash the channel: the client's push is answered `error`
/// `{"reason": "rate_limited", "retry_after": ms}` and the channel goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: retry after {} ms", retry_after.as_millis())]
pub struct RateLimited {
    /// How long until the limit lets one more event through.
    pub retry_after: std::time::Duration,
}

/// Why a broadcast could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BroadcastError {
    /// The client event being handled fans out more than the socket id's
    /// `fanout_rate` allows.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// Broadcast payloads must be JSON objects or binary (Phoenix raises in
    /// the broadcaster otherwise).
    #[error("broadcast payloads must be JSON objects or binary")]
    PayloadNotAnObject,
    /// The event is `fawkes_pubsub::TERM_EVENT`, which carries Erlang terms
    /// between nodes rather than broadcasts.
    #[error("the event name {0:?} is reserved")]
    ReservedEvent(String),
    /// The PubSub could not deliver to other nodes.
    #[error(transparent)]
    PubSub(#[from] fawkes_pubsub::PubSubError),
    /// The shared history could not take the broadcast.
    #[error("the shared history refused the broadcast: {0}")]
    History(String),
}

/// What goes into a channel task's mailbox.
pub(crate) enum ChannelMsg<I> {
    In(Message),
    /// The session's answer to a client message (a rate-limit refusal),
    /// sent in turn with the channel's own replies.
    Reply(Reply),
    Leave(Message),
    Out(Broadcast),
    Info(I),
    Closed,
}

/// The channel's view of its socket and topic, handed to every callback.
pub struct ChannelContext<S: Socket, I: Send + 'static> {
    pub(crate) conn: Arc<ConnState<S>>,
    pub(crate) topic: Arc<str>,
    pub(crate) join_ref: Option<Ref>,
    pub(crate) inbox: Arc<Mailbox<ChannelMsg<I>>>,
    pub(crate) sub_id: Option<SubscriberId>,
    pub(crate) current_ref: Option<Ref>,
    pub(crate) pending: Option<Vec<fawkes_protocol::Frame>>,
    /// This channel's id, unique in the process (its "pid").
    pub(crate) pid: u64,
    /// Behind a lock so that `&self` methods (presence tracking, timers,
    /// subscriptions) can tie work to the channel's end.
    pub(crate) exit_hooks: parking_lot::Mutex<ExitHooks>,
    /// True while `handle_in` runs: what fans out then is the client's doing
    /// and is counted against the socket id's `fanout_rate`.
    pub(crate) client_event: bool,
    /// Where the part of the topic matched by the route's `*` begins.
    pub(crate) subtopic_at: Option<usize>,
}

/// The context of channel `C` on socket `S`: [`ChannelContext`] without
/// repeating the channel's [`Channel::Info`] in every signature.
///
/// ```
/// # use fawkes::{Channel, ChannelError, Ctx, Join, Payload, Socket};
/// # struct UserSocket;
/// # impl Socket for UserSocket {
/// #     type Assigns = ();
/// #     async fn connect(&self, _: &fawkes::Params, _: &fawkes::ConnectInfo) -> Result<(), fawkes::ConnectError> { Ok(()) }
/// # }
/// struct Room;
///
/// impl Channel<UserSocket> for Room {
///     type Info = u64;
///     async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
///         ctx.send_after(std::time::Duration::from_secs(1), 7);
///         Ok(Join::ok(Room))
///     }
/// }
/// ```
pub type Ctx<C, S> = ChannelContext<S, <C as Channel<S>>::Info>;

/// Work to run when a channel ends, however it ends (stop, crash, close,
/// or abort by a duplicate join): presences untrack their channel here.
#[derive(Default)]
pub(crate) struct ExitHooks {
    hooks: Vec<(u64, Box<dyn FnOnce() + Send>)>,
}

impl ExitHooks {
    /// Adds `hook` under `id` unless a hook with that id is already there.
    pub(crate) fn add_once(&mut self, id: u64, hook: impl FnOnce() + Send + 'static) {
        if !self.hooks.iter().any(|(i, _)| *i == id) {
            self.hooks.push((id, Box::new(hook)));
        }
    }

    /// Adds `hook`, whatever else is there.
    pub(crate) fn add(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.hooks.push((u64::MAX, Box::new(hook)));
    }
}

impl Drop for ExitHooks {
    fn drop(&mut self) {
        for (_, hook) in self.hooks.drain(..) {
            hook();
        }
    }
}

impl<S: Socket, I: Send + 'static> std::fmt::Debug for ChannelContext<S, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelContext").field("topic", &self.topic).field("join_ref", &self.join_ref).finish()
    }
}

impl<S: Socket, I: Send + 'static> ChannelContext<S, I> {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The part of the topic matched by the route's `*`: `"42"` for the
    /// topic `"room:42"` joined through `"room:*"` (Phoenix's
    /// `def join("room:" <> id, ...)`); empty for a route without `*`.
    pub fn subtopic(&self) -> &str {
        self.subtopic_at.and_then(|at| self.topic.get(at..)).unwrap_or("")
    }

    /// The join ref of this join.
    pub fn join_ref(&self) -> Option<&Ref> {
        self.join_ref.as_ref()
    }

    /// The socket's assigns, set by [`Socket::connect`].
    pub fn assigns(&self) -> &S::Assigns {
        &self.conn.assigns
    }

    /// The socket handler (the value given to the endpoint): a natural home
    /// for application state such as a database pool.
    pub fn handler(&self) -> &S {
        &self.conn.shared.socket
    }

    /// The socket's id, if it has one.
    pub fn socket_id(&self) -> Option<&str> {
        self.conn.id.as_deref()
    }

    /// The endpoint, to broadcast on other topics.
    pub fn endpoint(&self) -> &Endpoint {
        &self.conn.shared.endpoint
    }

    /// This channel's id, unique in the process.
    pub fn pid(&self) -> u64 {
        self.pid
    }

    /// The serializer this client speaks.
    pub fn vsn(&self) -> Vsn {
        self.conn.vsn
    }

    /// Pushes `event` to this client only.
    ///
    /// # Errors
    ///
    /// When the payload cannot be encoded for this client (a V2 push must be
    /// a JSON object or binary). Returning that error with `?` crashes the
    /// channel, as Phoenix's `push` raises.
    pub fn push(&mut self, event: &str, payload: impl IntoPayload) -> Result<(), PushError> {
        self.push_at(event, payload, None)
    }

    /// Pushes with `position` (a history position) in the ref slot: what
    /// `handle_out` pushes for a broadcast of a topic with history.
    pub(crate) fn push_at(
        &mut self,
        event: &str,
        payload: impl IntoPayload,
        position: Option<Ref>,
    ) -> Result<(), PushError> {
        let mut msg = Message::push(self.join_ref.clone(), self.topic.as_ref(), event, payload.into_payload());
        msg.ref_ = position;
        let frame = self.conn.vsn.encode_push(&msg)?;
        match &mut self.pending {
            Some(pending) => pending.push(frame),
            None => {
                self.conn.push_frame(frame);
            }
        }
        Ok(())
    }

    /// Broadcasts `event` to every subscriber of this topic, this client
    /// included, on every node.
    ///
    /// # Errors
    ///
    /// See [`BroadcastError`].
    pub fn broadcast(&self, event: &str, payload: impl IntoPayload) -> Result<(), BroadcastError> {
        self.fan_out()?;
        self.endpoint().broadcast(self.topic.as_ref(), event, payload)
    }

    /// Counts one event that fans out to others against the socket id's
    /// `fanout_rate`, when it is the client's doing (inside `handle_in`).
    pub(crate) fn fan_out(&self) -> Result<(), RateLimited> {
        if !self.client_event {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        let limit = &self.conn.shared.config.fanout_rate;
        crate::limits::take(limit, &mut self.conn._slot.fanout.lock(), now)
            .map_err(|retry_after| RateLimited { retry_after })
    }

    /// Broadcasts `event` to every subscriber of this topic but this client.
    ///
    /// # Errors
    ///
    /// See [`BroadcastError`].
    pub fn broadcast_from(&self, event: &str, payload: impl IntoPayload) -> Result<(), BroadcastError> {
        self.fan_out()?;
        match self.sub_id {
            Some(id) => self.endpoint().broadcast_from(id, self.topic.as_ref(), event, payload),
            // not subscribed yet (inside join): nobody to skip
            None => self.endpoint().broadcast(self.topic.as_ref(), event, payload),
        }
    }

    /// Subscribes this channel to `topic` too (Phoenix's
    /// `Endpoint.subscribe` in a channel): every broadcast on it reaches
    /// [`Channel::handle_info`] as `I::from(broadcast)`. The subscription
    /// ends with the channel, however it ends.
    ///
    /// Broadcasts are queued in the channel's mailbox; one that finds it
    /// full is dropped, logged and counted as a slow consumer (a channel
    /// that cannot keep up with the topics it follows).
    pub fn subscribe(&self, topic: &str)
    where
        I: From<Broadcast>,
    {
        let inbox = self.inbox.clone();
        let conn = self.conn.clone();
        let own = self.topic.clone();
        let from = topic.to_owned();
        let subscription = self.endpoint().subscribe(topic, move |b| {
            if let Err((_, Pushed::Full)) = inbox.try_push(ChannelMsg::Info(I::from(b.clone()))) {
                conn.shared.endpoint.metrics().slow_consumer();
                tracing::warn!(topic = %own, from = %from, event = %b.event, "a channel's mailbox is full: a broadcast of a topic it follows was dropped");
            }
        });
        self.exit_hooks.lock().add(move || drop(subscription));
    }

    /// Sends `info` to this channel's [`Channel::handle_info`] after `delay`
    /// (Phoenix's `Process.send_after(self(), ...)`); cancelled when the
    /// channel ends.
    pub fn send_after(&self, delay: std::time::Duration, info: I) {
        let inbox = self.inbox.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // the mailbox's limit is for what clients send: a timer's one
            // message always gets in while the channel lives
            let _ = inbox.force_push(ChannelMsg::Info(info));
        });
        self.exit_hooks.lock().add(move || task.abort());
    }

    /// Sends `info` to this channel's [`Channel::handle_info`] every
    /// `period`, the first time one period from now (Phoenix's
    /// `:timer.send_interval`); stopped when the channel ends. A tick that
    /// finds the mailbox full is skipped (the next one still comes), and
    /// ticks missed while the runtime was busy are not sent in a burst.
    ///
    /// # Panics
    ///
    /// When `period` is zero.
    pub fn send_interval(&self, period: std::time::Duration, info: I)
    where
        I: Clone,
    {
        assert!(!period.is_zero(), "send_interval needs a period above zero");
        let inbox = self.inbox.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // full: this tick is skipped, the next one comes
                if let Err((_, Pushed::Closed)) = inbox.try_push(ChannelMsg::Info(info.clone())) {
                    return;
                }
            }
        });
        self.exit_hooks.lock().add(move || task.abort());
    }

    /// A handle to send this channel [`Channel::Info`] messages from anywhere.
    pub fn channel_ref(&self) -> ChannelRef<I> {
        ChannelRef { inbox: self.inbox.clone() }
    }

    /// A handle to reply later to the message being handled (Phoenix's
    /// `socket_ref`); `None` outside `handle_in` or when the message had no ref.
    pub fn reply_ref(&self) -> Option<ReplyRef> {
        let ref_ = self.current_ref.clone()?;
        Some(ReplyRef {
            conn: self.conn.clone().erase(),
            topic: self.topic.to_string(),
            join_ref: self.join_ref.clone(),
            ref_,
        })
    }
}

/// A handle to send messages to a channel's [`Channel::handle_info`].
pub struct ChannelRef<I> {
    inbox: Arc<Mailbox<ChannelMsg<I>>>,
}

impl<I> Clone for ChannelRef<I> {
    fn clone(&self) -> Self {
        ChannelRef { inbox: self.inbox.clone() }
    }
}

impl<I> std::fmt::Debug for ChannelRef<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelRef")
    }
}

/// Why a message could not be sent to a channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The channel has ended.
    #[error("the channel has ended")]
    Closed,
    /// The channel's mailbox is full.
    #[error("the channel's mailbox is full")]
    Full,
}

impl<I: Send + 'static> ChannelRef<I> {
    /// Sends `info` to the channel.
    ///
    /// # Errors
    ///
    /// When the channel has ended or its mailbox is full.
    pub fn send(&self, info: I) -> Result<(), SendError> {
        self.inbox.try_push(ChannelMsg::Info(info)).map_err(|(_, why)| match why {
            Pushed::Closed => SendError::Closed,
            _ => SendError::Full,
        })
    }
}

/// A handle to reply to one client message later, from anywhere.
pub struct ReplyRef {
    conn: Arc<dyn crate::conn::FrameSink>,
    topic: String,
    join_ref: Option<Ref>,
    ref_: Ref,
}

impl std::fmt::Debug for ReplyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyRef").field("topic", &self.topic).field("ref", &self.ref_).finish()
    }
}

impl ReplyRef {
    /// Sends the reply.
    ///
    /// # Errors
    ///
    /// When the reply cannot be encoded for this client.
    pub fn reply(&self, status: impl Into<Cow<'static, str>>, payload: impl IntoPayload) -> Result<(), PushError> {
        let reply = Reply {
            join_ref: self.join_ref.clone(),
            ref_: Some(self.ref_.clone()),
            topic: self.topic.clone(),
            status: status.into(),
            payload: payload.into_payload(),
        };
        let frame = self.conn.vsn().encode_reply(&reply)?;
        self.conn.push_frame(frame);
        Ok(())
    }
}
