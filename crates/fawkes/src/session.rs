//! The socket session: one per connection, whatever the transport. It routes
//! each decoded message by Phoenix's rules, starts and tracks channel tasks,
//! and turns their exits into `phx_close`/`phx_error` frames.

use std::sync::Arc;

use fawkes_protocol::{event, Broadcast, Frame, Message, Payload, Reply};
use fawkes_pubsub::{Delivery, FrameCache, Subscriber, Subscription};
use serde_json::json;

use crate::conn::ConnState;
use crate::limits::{self, Bucket};
use crate::queue::{End, Out, Outbox, Pushed};
use crate::router::{ChannelInbox, Inbound};
use crate::server::{end_frame, StartArgs};
use crate::Socket;

struct Entry {
    join_ref: Option<fawkes_protocol::Ref>,
    bucket: Option<Bucket>,
    instance: u64,
    inbox: Arc<dyn ChannelInbox>,
    task: tokio::task::JoinHandle<()>,
}

/// The joined topics of one connection: a short list (at most
/// `max_channels`, usually a handful), cheaper to hold than a hash map.
#[derive(Default)]
struct Channels(Vec<(String, Entry)>);

impl Channels {
    fn get(&self, topic: &str) -> Option<&Entry> {
        self.0.iter().find(|(t, _)| t == topic).map(|(_, e)| e)
    }

    fn get_mut(&mut self, topic: &str) -> Option<&mut Entry> {
        self.0.iter_mut().find(|(t, _)| t == topic).map(|(_, e)| e)
    }

    fn contains_key(&self, topic: &str) -> bool {
        self.get(topic).is_some()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn remove(&mut self, topic: &str) -> Option<Entry> {
        let i = self.0.iter().position(|(t, _)| t == topic)?;
        let entry = self.0.swap_remove(i).1;
        if self.0.capacity() > 8 && self.0.len() < self.0.capacity() / 4 {
            self.0.shrink_to_fit();
        }
        Some(entry)
    }

    fn insert(&mut self, topic: String, entry: Entry) {
        if self.0.capacity() == 0 {
            self.0.reserve_exact(1);
        }
        self.0.push((topic, entry));
    }
}

/// A client message waiting for room in a channel's mailbox. The transport
/// stops reading from the client until [`Session::retry`] accepts it.
pub(crate) struct Blocked {
    inbox: Arc<dyn ChannelInbox>,
    // boxed: the connection's loop holds an `Option<Blocked>` at all times
    msg: Box<Inbound>,
}

impl Blocked {
    /// Ready when the channel's mailbox may take the message.
    pub(crate) fn poll_space(&self, cx: &std::task::Context<'_>) -> std::task::Poll<()> {
        self.inbox.poll_space(cx)
    }
}

/// What the transport must do with an item of the outbox.
pub(crate) enum Action {
    /// Write a frame; `deflated` when its data is already compressed for
    /// permessage-deflate.
    Write {
        frame: Frame,
        deflated: bool,
    },
    Nothing,
    /// A `disconnect` broadcast to the socket's id.
    Disconnect,
    /// The endpoint is shutting down.
    Shutdown,
}

/// Closes the connection on a `disconnect` broadcast to the socket's id.
struct IdSubscriber(Arc<Outbox>);

impl Subscriber for IdSubscriber {
    fn deliver(&self, msg: &Broadcast, _: &mut FrameCache<'_>) -> Delivery {
        if msg.event != event::DISCONNECT {
            return Delivery::Ignored;
        }
        match self.0.push_control(Out::Disconnect) {
            Pushed::Closed => Delivery::Gone,
            _ => Delivery::Delivered,
        }
    }
}

pub(crate) struct Session<S: Socket> {
    conn: Arc<ConnState<S>>,
    channels: Channels,
    /// Tasks of channels that ended (or are ending) and are no longer
    /// joined: a later join of the same topic waits for its predecessor's
    /// task to be over (terminate run, presences untracked, unsubscribed),
    /// as Phoenix's socket waits for the old channel process to exit.
    ending: Vec<(String, tokio::task::JoinHandle<()>)>,
    joins: Option<Bucket>,
    events: Option<Bucket>,
    next_instance: u64,
    _id: Option<Subscription>,
    /// This connection's place in the endpoint's shutdown list.
    shutdown_key: usize,
}

impl<S: Socket> Session<S> {
    pub(crate) fn new(conn: Arc<ConnState<S>>) -> Session<S> {
        let id = conn
            .id
            .as_ref()
            .map(|id| conn.shared.endpoint.pubsub().subscribe(id, Arc::new(IdSubscriber(conn.outbox.clone()))));
        conn.shared.endpoint.metrics().connection_opened();
        let shutdown_key = conn.shared.endpoint.shutdown_list().register(&conn.outbox);
        Session {
            conn,
            channels: Channels::default(),
            ending: Vec::new(),
            joins: None,
            events: None,
            next_instance: 0,
            _id: id,
            shutdown_key,
        }
    }

    /// The connection's shared state.
    pub(crate) fn conn(&self) -> &Arc<ConnState<S>> {
        &self.conn
    }

    fn reply(&self, msg: &Message, join_ref: Option<fawkes_protocol::Ref>, status: &'static str, payload: Payload) {
        self.conn.send_reply(&Reply::new(msg, join_ref, status, payload));
    }

    /// The `rate_limited` refusal of `msg`.
    fn rate_limited(&self, msg: &Message, join_ref: Option<fawkes_protocol::Ref>, wait: std::time::Duration) -> Reply {
        self.conn.shared.endpoint.metrics().rate_limited();
        Reply::new(msg, join_ref, "error", rate_limited_payload(wait))
    }

    /// Sends a refusal of a message on `topic` after every reply to the
    /// topic's earlier messages: through the channel's mailbox when the
    /// topic is joined (its channel may still be working on them), at once
    /// otherwise.
    fn refuse(&mut self, topic: &str, reply: Reply) -> Option<Blocked> {
        match self.channels.get(topic) {
            Some(entry) => {
                let inbox = entry.inbox.clone();
                self.deliver(inbox, Inbound::Reply(reply))
            }
            None => {
                self.conn.send_reply(&reply);
                None
            }
        }
    }

    fn unmatched(&self, msg: &Message) {
        self.reply(msg, None, "error", Payload::from(json!({"reason": "unmatched topic"})));
    }

    /// Routes one client message (Phoenix's rules, in order).
    pub(crate) fn handle(&mut self, msg: Message) -> Option<Blocked> {
        self.conn.shared.endpoint.metrics().message_in();
        if msg.topic == event::HEARTBEAT_TOPIC && msg.event == event::HEARTBEAT {
            self.reply(&msg, None, "ok", Payload::empty());
            return None;
        }
        let config = &self.conn.shared.config;
        let now = tokio::time::Instant::now();
        if msg.event == event::JOIN {
            return self.join(msg, now);
        }
        if msg.event != event::LEAVE {
            if let Err(wait) = limits::take(&config.socket_event_rate, &mut self.events, now) {
                let entry = self.channels.get(&msg.topic);
                if entry.is_some_and(|e| is_stale(&msg, e)) {
                    return None;
                }
                let join_ref = entry.and_then(|e| e.join_ref.clone());
                let reply = self.rate_limited(&msg, join_ref, wait);
                return self.refuse(&msg.topic, reply);
            }
        }
        let Some(entry) = self.channels.get_mut(&msg.topic) else {
            if msg.event == event::LEAVE {
                self.reply(&msg, msg.join_ref.clone(), "ok", Payload::empty());
            } else {
                self.unmatched(&msg);
            }
            return None;
        };
        // A message for an earlier join of this topic (the client raced a
        // close) is ignored, as Phoenix 1.8 does.
        if is_stale(&msg, entry) {
            return None;
        }
        if msg.event == event::LEAVE {
            if entry.inbox.leave(msg.clone()) == Pushed::Closed {
                self.reply(&msg, msg.join_ref.clone(), "ok", Payload::empty());
            }
            return None;
        }
        if let Err(wait) = limits::take(&self.conn.shared.config.channel_event_rate, &mut entry.bucket, now) {
            let join_ref = entry.join_ref.clone();
            let reply = self.rate_limited(&msg, join_ref, wait);
            return self.refuse(&msg.topic, reply);
        }
        let inbox = entry.inbox.clone();
        self.deliver(inbox, Inbound::Event(msg))
    }

    fn deliver(&mut self, inbox: Arc<dyn ChannelInbox>, msg: Inbound) -> Option<Blocked> {
        match inbox.client(msg) {
            None => None,
            Some((msg, Pushed::Full)) => Some(Blocked { inbox, msg: Box::new(msg) }),
            // The channel ended a moment ago: the topic is no longer joined.
            Some((Inbound::Event(msg), _)) => {
                self.unmatched(&msg);
                None
            }
            Some((Inbound::Reply(reply), _)) => {
                self.conn.send_reply(&reply);
                None
            }
        }
    }

    /// Tries again a message that found its channel's mailbox full.
    pub(crate) fn retry(&mut self, blocked: Blocked) -> Option<Blocked> {
        self.deliver(blocked.inbox, *blocked.msg)
    }

    fn join(&mut self, msg: Message, now: tokio::time::Instant) -> Option<Blocked> {
        let config = &self.conn.shared.config;
        let route = config_route(&self.conn, &msg.topic);
        let duplicate = self.channels.contains_key(&msg.topic);
        if route.is_some() && !duplicate && self.channels.len() >= config.max_channels {
            self.reply(
                &msg,
                msg.join_ref.clone(),
                "error",
                Payload::from(json!({"reason": "too many channels joined"})),
            );
            return None;
        }
        if let Err(wait) = limits::take(&config.join_rate, &mut self.joins, now) {
            let reply = self.rate_limited(&msg, msg.join_ref.clone(), wait);
            return self.refuse(&msg.topic, reply);
        }
        let Some(route) = route else {
            tracing::warn!(topic = %msg.topic, "ignoring unmatched topic");
            self.unmatched(&msg);
            return None;
        };
        let factory = route.factory.clone();
        let mut after_reply = None;
        self.ending.retain(|(_, task)| !task.is_finished());
        let mut predecessor =
            self.ending.iter().position(|(t, _)| *t == msg.topic).map(|i| self.ending.swap_remove(i).1);
        if let Some(old) = self.channels.remove(&msg.topic) {
            // Duplicate join: the old channel handles nothing more and ends
            // (its terminate runs with {:shutdown, :duplicate_join}) before
            // the new join runs; its phx_close follows the new join's reply.
            tracing::debug!(topic = %msg.topic, "duplicate channel join, closing the existing channel");
            old.inbox.kill();
            predecessor = Some(old.task);
            after_reply = end_frame(self.conn.vsn, &msg.topic, old.join_ref, End::Close);
        }
        self.next_instance += 1;
        let instance = self.next_instance;
        let topic = msg.topic.clone();
        let join_ref = msg.join_ref.clone();
        let handle =
            factory.start(StartArgs { conn: self.conn.clone(), join: msg, instance, after_reply, predecessor });
        self.channels.insert(topic, Entry { join_ref, bucket: None, instance, inbox: handle.inbox, task: handle.task });
        None
    }

    /// Ends every channel (the connection is closing) and waits, at most
    /// `limit`, until each has finished: `terminate` run, presences
    /// untracked. A transport calls it before it lets the client see the
    /// connection close, so that a client that reconnects at once finds the
    /// old channels gone.
    pub(crate) async fn close_channels(&mut self, limit: std::time::Duration) {
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        for (_, entry) in self.channels.0.drain(..) {
            entry.inbox.transport_closed();
            tasks.push(entry.task);
        }
        tasks.extend(self.ending.drain(..).map(|(_, task)| task));
        tasks.retain(|t| !t.is_finished());
        if tasks.is_empty() {
            return;
        }
        let all = async {
            for task in &mut tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("channels still running {limit:?} after their connection closed");
        }
    }

    /// Handles one item taken from the outbox.
    pub(crate) fn on_out(&mut self, out: Out) -> Action {
        match out {
            Out::Frame(frame) => Action::Write { frame, deflated: false },
            Out::Deflated(frame) => Action::Write { frame, deflated: true },
            Out::Disconnect => Action::Disconnect,
            Out::Shutdown => Action::Shutdown,
            Out::ChannelExit { topic, instance, end } => {
                let owned = self.channels.get(&topic).is_some_and(|e| e.instance == instance);
                if !owned {
                    return Action::Nothing;
                }
                let Some(entry) = self.channels.remove(&topic) else {
                    return Action::Nothing;
                };
                self.ending.retain(|(_, task)| !task.is_finished());
                let join_ref = entry.join_ref;
                self.ending.push((topic.clone(), entry.task));
                match end_frame(self.conn.vsn, &topic, join_ref, end) {
                    Some(frame) => Action::Write { frame, deflated: false },
                    None => Action::Nothing,
                }
            }
        }
    }
}

impl<S: Socket> Drop for Session<S> {
    /// The connection is gone: every channel runs `terminate` and ends, and
    /// nothing more is queued for the client.
    fn drop(&mut self) {
        self.conn.outbox.close();
        self.conn.shared.endpoint.shutdown_list().deregister(self.shutdown_key);
        for (_, entry) in self.channels.0.drain(..) {
            entry.inbox.transport_closed();
        }
        self.conn.shared.endpoint.metrics().connection_closed();
    }
}

/// A message for an earlier join of its topic (the client raced a close).
fn is_stale(msg: &Message, entry: &Entry) -> bool {
    msg.join_ref.is_some() && entry.join_ref.is_some() && msg.join_ref != entry.join_ref
}

/// `{"reason": "rate_limited", "retry_after": ms}`.
pub(crate) fn rate_limited_payload(wait: std::time::Duration) -> Payload {
    let retry_after = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    Payload::from(json!({"reason": "rate_limited", "retry_after": retry_after}))
}

/// The first route whose pattern matches `topic`.
fn config_route<'a, S: Socket>(conn: &'a ConnState<S>, topic: &str) -> Option<&'a crate::router::Route<S>> {
    conn.shared.routes.iter().find(|r| r.pattern.matches(topic))
}

/// A broadcast payload for the `disconnect` event.
pub(crate) fn disconnect_broadcast(id: &str) -> Broadcast {
    Broadcast::new(id, event::DISCONNECT, Payload::empty())
}
