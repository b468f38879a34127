//! Topic patterns and the type-erased channel factories behind them.

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use fawkes_protocol::{Message, Reply};
use tokio::task::JoinHandle;

use crate::channel::ChannelMsg;
use crate::queue::{Mailbox, Pushed};
use crate::server::{self, StartArgs};
use crate::{Channel, Socket};

/// A topic pattern: an exact topic, or a prefix followed by `*` (`room:*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    /// Parses a pattern; `*` is allowed only at the end, as in Phoenix.
    pub(crate) fn parse(p: &str) -> Result<Pattern, String> {
        match p.find('*') {
            None => Ok(Pattern::Exact(p.to_owned())),
            Some(i) if i + 1 == p.len() => Ok(Pattern::Prefix(p[..i].to_owned())),
            Some(_) => Err(format!("invalid topic pattern {p:?}: `*` may only end a pattern")),
        }
    }

    pub(crate) fn matches(&self, topic: &str) -> bool {
        match self {
            Pattern::Exact(t) => t == topic,
            Pattern::Prefix(p) => topic.starts_with(p.as_str()),
        }
    }
}

/// One route: a pattern and the channel type it starts.
pub(crate) struct Route<S: Socket> {
    pub(crate) pattern: Pattern,
    pub(crate) factory: Arc<dyn ErasedChannel<S>>,
}

/// Starts a channel task of some concrete type.
pub(crate) trait ErasedChannel<S: Socket>: Send + Sync + 'static {
    fn start(&self, args: StartArgs<S>) -> ChannelHandle;
}

/// Starts channels of type `C`; `subtopic_at` is where the part of a topic
/// matched by the route's `*` begins (the topic's length for an exact route).
pub(crate) struct Factory<C> {
    subtopic_at: Option<usize>,
    channel: PhantomData<fn() -> C>,
}

impl<C> Factory<C> {
    pub(crate) fn new(pattern: &Pattern) -> Self {
        let subtopic_at = match pattern {
            Pattern::Exact(_) => None,
            Pattern::Prefix(p) => Some(p.len()),
        };
        Factory { subtopic_at, channel: PhantomData }
    }
}

impl<S: Socket, C: Channel<S>> ErasedChannel<S> for Factory<C> {
    fn start(&self, args: StartArgs<S>) -> ChannelHandle {
        server::start::<S, C>(args, self.subtopic_at)
    }
}

/// The session's handle on a running channel task.
pub(crate) struct ChannelHandle {
    pub(crate) inbox: Arc<dyn ChannelInbox>,
    pub(crate) task: JoinHandle<()>,
}

/// What the session hands a joined channel for a client message: the
/// message itself, or the session's own answer to it (a rate-limit refusal),
/// which must leave after the replies to earlier messages on the topic.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A client event for `handle_in`.
    Event(Message),
    /// A reply to send in turn, without running any callback.
    Reply(Reply),
}

/// A channel's mailbox, seen without its `Info` type.
pub(crate) trait ChannelInbox: Send + Sync + 'static {
    /// Queues a client message; gives it back (`Some`) when the mailbox is
    /// full or closed.
    fn client(&self, msg: Inbound) -> Option<(Inbound, Pushed)>;
    /// A leave request (always queued while the channel lives).
    fn leave(&self, msg: Message) -> Pushed;
    /// The connection is gone: run `terminate` and end.
    fn transport_closed(&self);
    /// The channel is being replaced by a duplicate join: it handles
    /// nothing more, runs `terminate` and ends.
    fn kill(&self);
    /// Ready when a full mailbox has room again (or closed).
    fn poll_space(&self, cx: &Context<'_>) -> Poll<()>;
}

impl<I: Send + 'static> ChannelInbox for Mailbox<ChannelMsg<I>> {
    fn client(&self, msg: Inbound) -> Option<(Inbound, Pushed)> {
        let item = match msg {
            Inbound::Event(m) => ChannelMsg::In(m),
            Inbound::Reply(r) => ChannelMsg::Reply(r),
        };
        match self.try_push(item) {
            Ok(()) => None,
            Err((ChannelMsg::In(m), why)) => Some((Inbound::Event(m), why)),
            Err((ChannelMsg::Reply(r), why)) => Some((Inbound::Reply(r), why)),
            // try_push gives back exactly what it was given
            Err(_) => None,
        }
    }

    fn leave(&self, msg: Message) -> Pushed {
        self.force_push(ChannelMsg::Leave(msg))
    }

    fn transport_closed(&self) {
        self.force_push(ChannelMsg::Closed);
        self.close();
    }

    fn kill(&self) {
        Mailbox::kill(self);
    }

    fn poll_space(&self, cx: &Context<'_>) -> Poll<()> {
        Mailbox::poll_space(self, cx)
    }
}
