//! Phoenix.ChannelTest for Fawkes: test channels without a network.
//!
//! [`connect`] runs your socket's real `connect` over an in-memory transport;
//! [`TestSocket::subscribe_and_join`] joins a topic (and subscribes the test
//! to its broadcasts); [`TestChannel::push`] sends an event. The assertion
//! macros wait, with a timeout, for what the channel sends back:
//!
//! | macro | waits for |
//! | --- | --- |
//! | [`assert_reply!`]`(chan, ref, status, expected)` | the reply to `ref` |
//! | [`assert_push!`]`(chan, event, expected)` | a push of `event` to this client |
//! | [`assert_broadcast!`]`(chan, event, expected)` | a broadcast of `event` on the topic |
//! | [`refute_reply!`], [`refute_push!`], [`refute_broadcast!`] | nothing matching within the timeout |
//!
//! `expected` is a `serde_json::Value`, matched as a pattern as in
//! ChannelTest (`json!({"a": 1})` matches any object with `"a": 1`, see
//! [`matches_pattern`]), an [`Exact`] value (equality), or a closure
//! written in place, `|p| p["n"] == 1`, without a type annotation. Each
//! `assert_*!` returns the payload it matched. A failure says what was
//! received on the topic and not asserted, in a few lines: the count of each
//! event and the last three, cut short.
//!
//! [`socket`] gives a connected client with the assigns of your choice,
//! without running `connect` (Phoenix's `socket(UserSocket, id, assigns)`);
//! [`connect`] runs the real one.
//! The default timeout is [`ASSERT_TIMEOUT`]; `refute_*!` always waits out
//! [`REFUTE_TIMEOUT`], so keep them few. Pass a `Duration` as a last argument
//! to change either.
//!
//! [`lines`] serves a socket over TCP, one frame per line: a transport
//! built on `fawkes::transport` from outside the `fawkes` crate, for tests
//! that want a real socket without WebSocket framing.
//!
//! Never sleep in a channel test: assert on the reply or push you expect,
//! and only then on what follows from it.
//!
//! # Example
//!
//! ```
//! use fawkes::*;
//! use fawkes_test::{assert_push, assert_reply, connect};
//! use serde_json::json;
//!
//! struct UserSocket;
//! impl Socket for UserSocket {
//!     type Assigns = String;
//!     async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<String, ConnectError> {
//!         params.get_str("user_id").map(str::to_owned).ok_or(ConnectError::Refused)
//!     }
//! }
//!
//! struct Room;
//! impl Channel<UserSocket> for Room {
//!     type Info = ();
//!     async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
//!         ctx.push("welcome", json!({"user": ctx.assigns()}))?;
//!         Ok(Join::ok(Room))
//!     }
//!     async fn handle_in(&mut self, _: &str, payload: Payload, _: &mut Ctx<Self, UserSocket>) -> Result<HandleIn, ChannelError> {
//!         Ok(HandleIn::ok(payload))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let service = SocketHandler::new(UserSocket).channel::<Room>("room:*").build(&Endpoint::local());
//! let socket = connect(&service, json!({"user_id": "u1"})).await.unwrap();
//! let (_reply, room) = socket.subscribe_and_join("room:lobby", json!({})).await.unwrap();
//! assert_push!(room, "welcome", json!({"user": "u1"}));
//! let r = room.push("ping", json!({"n": 1}));
//! assert_reply!(room, r, "ok", json!({"n": 1}));
//! # });
//! ```

pub mod lines;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fawkes::protocol::{Message, ServerFrame};
use fawkes::{
    Broadcast, ConnectError, ConnectInfo, Endpoint, IntoPayload, LocalConnection, Params, Payload, Ref, Socket,
    SocketService, Subscription, Vsn,
};
use parking_lot::Mutex;
use tokio::sync::Notify;

#[doc(hidden)]
pub use serde_json::Value;

/// How long `assert_*!` wait by default.
pub const ASSERT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `refute_*!` wait by default.
pub const REFUTE_TIMEOUT: Duration = Duration::from_millis(100);

/// What a payload is compared with: a JSON value, or a predicate.
pub trait Expected {
    /// True when `payload` is what is expected.
    fn matches(&self, payload: &Value) -> bool;
    /// For failure messages.
    fn describe(&self) -> String;
}

/// A JSON value is a pattern, as a map in ChannelTest's
/// `assert_push "event", %{"a" => 1}`: an object matches every object that
/// has its keys with matching values (other keys are ignored), recursively;
/// an array matches an array of the same length whose items match; any
/// other value matches an equal value. `json!({})` matches every object.
/// For equality, use [`Exact`].
impl Expected for Value {
    fn matches(&self, payload: &Value) -> bool {
        matches_pattern(self, payload)
    }
    fn describe(&self) -> String {
        truncate(&self.to_string(), MAX_SHOWN)
    }
}

/// True when `payload` matches `pattern` (see [`Expected`]'s implementation
/// for `Value`).
///
/// ```
/// use fawkes_test::matches_pattern;
/// use serde_json::json;
///
/// assert!(matches_pattern(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
/// assert!(matches_pattern(&json!({"a": {"b": [1]}}), &json!({"a": {"b": [1], "c": 3}})));
/// assert!(!matches_pattern(&json!({"a": 1}), &json!({"a": 2})));
/// assert!(!matches_pattern(&json!([1]), &json!([1, 2])));
/// ```
pub fn matches_pattern(pattern: &Value, payload: &Value) -> bool {
    match (pattern, payload) {
        (Value::Object(want), Value::Object(got)) => {
            want.iter().all(|(k, w)| got.get(k).is_some_and(|g| matches_pattern(w, g)))
        }
        (Value::Array(want), Value::Array(got)) => {
            want.len() == got.len() && want.iter().zip(got).all(|(w, g)| matches_pattern(w, g))
        }
        _ => pattern == payload,
    }
}

/// A payload equal to this value, every key included (where a plain
/// `Value` is a pattern that ignores other keys).
#[derive(Debug, Clone, PartialEq)]
pub struct Exact(pub Value);

impl Expected for Exact {
    fn matches(&self, payload: &Value) -> bool {
        &self.0 == payload
    }
    fn describe(&self) -> String {
        format!("exactly {}", truncate(&self.0.to_string(), MAX_SHOWN))
    }
}

/// The longest payload text shown in a failure message, in characters.
const MAX_SHOWN: usize = 200;

/// How many unasserted frames a failure message shows.
const MAX_PENDING_SHOWN: usize = 3;

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_owned(),
    }
}

/// A predicate. The assertion macros take a closure written in place
/// (`|p| p["n"] == 1`) without a type annotation.
impl<F: Fn(&Value) -> bool> Expected for F {
    fn matches(&self, payload: &Value) -> bool {
        self(payload)
    }
    fn describe(&self) -> String {
        "<predicate>".to_owned()
    }
}

/// A JSON view of a payload (binary payloads show as an array of bytes).
pub fn payload_value(p: &Payload) -> Value {
    match p {
        Payload::Binary(b) => Value::from(b.to_vec()),
        Payload::Json(_) => p.to_value().unwrap_or(Value::Null),
    }
}

/// A queue the test waits on.
struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    closed: Mutex<bool>,
    notify: Notify,
}

impl<T> Queue<T> {
    fn new() -> Arc<Self> {
        Arc::new(Queue { items: Mutex::new(VecDeque::new()), closed: Mutex::new(false), notify: Notify::new() })
    }

    fn push(&self, item: T) {
        self.items.lock().push_back(item);
        self.notify.notify_waiters();
    }

    fn close(&self) {
        *self.closed.lock() = true;
        self.notify.notify_waiters();
    }

    /// Waits up to `timeout` for an item that `pick` accepts, and removes it.
    async fn take<R>(&self, timeout: Duration, mut pick: impl FnMut(&T) -> Option<R>) -> Option<R> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut items = self.items.lock();
                if let Some((i, r)) = items.iter().enumerate().find_map(|(i, it)| pick(it).map(|r| (i, r))) {
                    items.remove(i);
                    return Some(r);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

struct Conn {
    sender: Mutex<Option<tokio::sync::mpsc::UnboundedSender<fawkes::Frame>>>,
    frames: Arc<Queue<ServerFrame>>,
    vsn: Vsn,
    refs: AtomicU64,
    endpoint: Endpoint,
}

/// A connected test client.
#[derive(Clone)]
pub struct TestSocket {
    conn: Arc<Conn>,
}

impl fmt::Debug for TestSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestSocket").field("vsn", &self.conn.vsn).finish()
    }
}

/// Connects to `service` with `params` (a JSON object of connect params),
/// speaking V2 like the official client.
///
/// # Errors
///
/// When the socket's `connect` refuses.
pub async fn connect<S: Socket>(service: &SocketService<S>, params: Value) -> Result<TestSocket, ConnectError> {
    connect_with(service, params, Vsn::V2, ConnectInfo::default()).await
}

/// Connects with a chosen serializer and connect info.
///
/// # Errors
///
/// When the socket's `connect` refuses.
pub async fn connect_with<S: Socket>(
    service: &SocketService<S>,
    params: Value,
    vsn: Vsn,
    info: ConnectInfo,
) -> Result<TestSocket, ConnectError> {
    let mut p = Params::default();
    if let Value::Object(map) = params {
        for (k, v) in map {
            p.insert(k, v);
        }
    }
    p.insert("vsn", vsn.as_str());
    let local = service.connect_local(p, info).await?;
    Ok(attach(local, vsn, service.endpoint().clone()))
}

/// A connected test client whose connection carries `assigns`, without
/// running the socket's `connect` (Phoenix.ChannelTest's
/// `socket(UserSocket, id, assigns)`): no token to sign in a channel test.
/// The socket id is the socket's `id` of `assigns`; the client speaks V2.
///
/// ```
/// use fawkes::*;
/// use fawkes_test::{assert_push, socket};
/// use serde_json::json;
///
/// struct UserSocket;
/// impl Socket for UserSocket {
///     type Assigns = String;
///     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<String, ConnectError> {
///         Err(ConnectError::Refused) // tokens, checked elsewhere
///     }
/// }
/// struct Room;
/// impl Channel<UserSocket> for Room {
///     type Info = ();
///     async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
///         ctx.push("hello", json!({"user": ctx.assigns(), "room": ctx.subtopic()}))?;
///         Ok(Join::ok(Room))
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let service = SocketHandler::new(UserSocket).channel::<Room>("room:*").build(&Endpoint::local());
/// let (_, room) = socket(&service, "ada".to_owned()).join("room:7", json!({})).await.unwrap();
/// assert_push!(room, "hello", json!({"user": "ada", "room": "7"}));
/// # });
/// ```
///
/// # Panics
///
/// Outside a Tokio runtime, and when the service is at its connection
/// limits (a test that opens more connections than it allows).
pub fn socket<S: Socket>(service: &SocketService<S>, assigns: S::Assigns) -> TestSocket {
    match service.connect_local_with_assigns(assigns, Vsn::V2) {
        Ok(local) => attach(local, Vsn::V2, service.endpoint().clone()),
        Err(e) => panic!("fawkes-test: socket() could not connect: {e}"),
    }
}

/// A test client over an in-memory connection: frames are read by a
/// background task into a queue the assertions scan.
fn attach(mut local: LocalConnection, vsn: Vsn, endpoint: Endpoint) -> TestSocket {
    let frames = Queue::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<fawkes::Frame>();
    let queue = frames.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = local.recv() => match frame {
                    Some(f) => match vsn.decode_server(&f) {
                        Ok(sf) => queue.push(sf),
                        // a frame the server should never send: say so, so
                        // that the test does not just time out
                        Err(e) => {
                            eprintln!("fawkes-test: the server sent an undecodable frame ({e}): {f:?}");
                        }
                    },
                    None => break,
                },
                out = rx.recv() => match out {
                    Some(f) => { local.send(f); }
                    None => break,
                },
            }
        }
        queue.close();
    });
    TestSocket { conn: Arc::new(Conn { sender: Mutex::new(Some(tx)), frames, vsn, refs: AtomicU64::new(0), endpoint }) }
}

impl TestSocket {
    fn next_ref(&self) -> Ref {
        Ref::from(self.conn.refs.fetch_add(1, Ordering::Relaxed).saturating_add(1).to_string())
    }

    /// Sends a raw message as the client.
    ///
    /// # Panics
    ///
    /// When the message cannot be encoded for this socket's serializer (a
    /// mistake in the test).
    pub fn send(&self, msg: &Message) {
        let frame = match self.conn.vsn.encode_client(msg) {
            Ok(frame) => frame,
            Err(e) => panic!("fawkes-test: the message cannot be encoded for {:?}: {e}", self.conn.vsn),
        };
        if let Some(tx) = self.conn.sender.lock().as_ref() {
            let _ = tx.send(frame);
        }
    }

    /// Subscribes the test to `topic`'s broadcasts, then joins it.
    ///
    /// # Errors
    ///
    /// The refusal's payload when the join is refused (or crashes).
    ///
    /// # Panics
    ///
    /// When no join reply arrives within [`ASSERT_TIMEOUT`].
    pub async fn subscribe_and_join(
        &self,
        topic: &str,
        payload: impl IntoPayload,
    ) -> Result<(Payload, TestChannel), Payload> {
        self.join_inner(topic, payload.into_payload(), true).await
    }

    /// Joins `topic` without subscribing the test to its broadcasts.
    ///
    /// # Errors
    ///
    /// As [`TestSocket::subscribe_and_join`].
    ///
    /// # Panics
    ///
    /// As [`TestSocket::subscribe_and_join`].
    pub async fn join(&self, topic: &str, payload: impl IntoPayload) -> Result<(Payload, TestChannel), Payload> {
        self.join_inner(topic, payload.into_payload(), false).await
    }

    async fn join_inner(
        &self,
        topic: &str,
        payload: Payload,
        subscribe: bool,
    ) -> Result<(Payload, TestChannel), Payload> {
        let broadcasts = Queue::new();
        let sub = subscribe.then(|| {
            let q = broadcasts.clone();
            self.conn.endpoint.subscribe(topic, move |b: &Broadcast| q.push(b.clone()))
        });
        let join_ref = self.next_ref();
        self.send(&Message {
            join_ref: Some(join_ref.clone()),
            ref_: Some(join_ref.clone()),
            topic: topic.to_owned(),
            event: "phx_join".into(),
            payload,
        });
        let chan =
            TestChannel { socket: self.clone(), topic: topic.to_owned(), join_ref: join_ref.clone(), broadcasts, sub };
        match chan.wait_reply(&join_ref, ASSERT_TIMEOUT).await {
            Some((status, p)) if status == "ok" => Ok((p, chan)),
            Some((_, p)) => Err(p),
            None => panic!("no reply to the join of {topic} within {ASSERT_TIMEOUT:?}"),
        }
    }

    /// A handle on `topic` for a join made by hand with [`TestSocket::send`]:
    /// assertions on it see that topic's frames.
    pub fn channel(&self, topic: &str, join_ref: Ref) -> TestChannel {
        TestChannel { socket: self.clone(), topic: topic.to_owned(), join_ref, broadcasts: Queue::new(), sub: None }
    }

    /// Sends a heartbeat and waits for its reply; true when it came.
    pub async fn heartbeat(&self) -> bool {
        let r = self.next_ref();
        self.send(&Message {
            join_ref: None,
            ref_: Some(r.clone()),
            topic: "phoenix".into(),
            event: "heartbeat".into(),
            payload: Payload::empty(),
        });
        self.channel("phoenix", r.clone())
            .wait_reply(&r, ASSERT_TIMEOUT)
            .await
            .is_some_and(|(status, p)| status == "ok" && p == Payload::empty())
    }

    /// Closes the connection, as a client going away: every channel runs
    /// `terminate`.
    pub fn close(&self) {
        self.conn.sender.lock().take();
    }

    /// Waits until the server closes the connection.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        let frames = self.conn.frames.clone();
        tokio::time::timeout(timeout, async move {
            loop {
                let n = frames.notify.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if *frames.closed.lock() {
                    return;
                }
                n.await;
            }
        })
        .await
        .is_ok()
    }
}

/// A joined topic, as the test client sees it.
pub struct TestChannel {
    socket: TestSocket,
    topic: String,
    join_ref: Ref,
    broadcasts: Arc<Queue<Broadcast>>,
    sub: Option<Subscription>,
}

impl fmt::Debug for TestChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestChannel").field("topic", &self.topic).field("join_ref", &self.join_ref).finish()
    }
}

impl TestChannel {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The socket.
    pub fn socket(&self) -> &TestSocket {
        &self.socket
    }

    /// Pushes `event` as the client; returns its ref, for [`assert_reply!`].
    pub fn push(&self, event: &str, payload: impl IntoPayload) -> Ref {
        let r = self.socket.next_ref();
        self.socket.send(&Message {
            join_ref: Some(self.join_ref.clone()),
            ref_: Some(r.clone()),
            topic: self.topic.clone(),
            event: event.to_owned(),
            payload: payload.into_payload(),
        });
        r
    }

    /// Leaves the topic; returns the ref of the leave, whose `ok` reply can be
    /// asserted.
    pub fn leave(&self) -> Ref {
        self.push("phx_leave", serde_json::json!({}))
    }

    /// Broadcasts on the topic from the test, to every subscriber but the
    /// test itself.
    ///
    /// # Errors
    ///
    /// As [`Endpoint::broadcast_from`].
    pub fn broadcast_from(&self, event: &str, payload: impl IntoPayload) -> Result<(), fawkes::BroadcastError> {
        match &self.sub {
            Some(sub) => self.socket.conn.endpoint.broadcast_from(sub.id(), &self.topic, event, payload),
            None => self.socket.conn.endpoint.broadcast(&self.topic, event, payload),
        }
    }

    /// Waits for the reply to `r`: its status and payload.
    pub async fn wait_reply(&self, r: &Ref, timeout: Duration) -> Option<(String, Payload)> {
        self.socket
            .conn
            .frames
            .take(timeout, |f| match f {
                ServerFrame::Reply(rep) if rep.topic == self.topic && rep.ref_.as_ref() == Some(r) => {
                    Some((rep.status.to_string(), rep.payload.clone()))
                }
                _ => None,
            })
            .await
    }

    /// Waits for a push of `event` (to this join) whose payload matches.
    pub async fn wait_push<E: Expected + ?Sized>(
        &self,
        event: &str,
        expected: &E,
        timeout: Duration,
    ) -> Option<Payload> {
        self.socket
            .conn
            .frames
            .take(timeout, |f| match f {
                ServerFrame::Push(m)
                    if m.topic == self.topic && m.event == event && expected.matches(&payload_value(&m.payload)) =>
                {
                    Some(m.payload.clone())
                }
                ServerFrame::Broadcast(b)
                    if b.topic == self.topic && b.event == event && expected.matches(&payload_value(&b.payload)) =>
                {
                    Some(b.payload.clone())
                }
                _ => None,
            })
            .await
    }

    /// Waits for a broadcast of `event` on the topic whose payload matches
    /// (the test must have subscribed: [`TestSocket::subscribe_and_join`]).
    pub async fn wait_broadcast<E: Expected + ?Sized>(
        &self,
        event: &str,
        expected: &E,
        timeout: Duration,
    ) -> Option<Payload> {
        self.broadcasts
            .take(timeout, |b| {
                (b.event == event && expected.matches(&payload_value(&b.payload))).then(|| b.payload.clone())
            })
            .await
    }

    /// True when the test sees the topic's broadcasts: the channel was
    /// opened with [`TestSocket::subscribe_and_join`]. A channel opened with
    /// [`TestSocket::join`] or [`TestSocket::channel`] is not subscribed, so
    /// [`assert_broadcast!`] and [`refute_broadcast!`] on it fail at once,
    /// saying so.
    pub fn is_subscribed(&self) -> bool {
        self.sub.is_some()
    }

    /// The message of a failed [`assert_broadcast!`]: what was expected, a
    /// hint when the test is not subscribed, and the pending frames.
    #[doc(hidden)]
    pub fn broadcast_failure(&self, event: &str, expected: &str, timeout: Duration) -> String {
        if self.is_subscribed() {
            format!(
                "no broadcast {event:?} matching {expected} on {} within {timeout:?}; pending: {}",
                self.topic,
                self.pending()
            )
        } else {
            format!(
                "no broadcast {event:?} matching {expected} on {}: the channel was joined with `join`, which does \
                 not subscribe the test to the topic's broadcasts: use `subscribe_and_join`; pending: {}",
                self.topic,
                self.pending()
            )
        }
    }

    /// What was received on the topic and not yet asserted, summarized for
    /// failure messages: how many frames, the events of the last few and
    /// their payloads cut to a couple of hundred characters.
    pub fn pending(&self) -> String {
        let items = self.socket.conn.frames.items.lock();
        let mine: Vec<&ServerFrame> = items.iter().filter(|f| f.topic() == self.topic).collect();
        if mine.is_empty() {
            return "nothing".to_owned();
        }
        let mut counts: Vec<(String, usize)> = Vec::new();
        for f in &mine {
            let name = frame_name(f);
            match counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => *c += 1,
                None => counts.push((name, 1)),
            }
        }
        let tally: Vec<String> = counts.iter().map(|(n, c)| format!("{c} × {n}")).collect();
        let last: Vec<String> = mine
            .iter()
            .rev()
            .take(MAX_PENDING_SHOWN)
            .rev()
            .map(|f| format!("{} {}", frame_name(f), truncate(&frame_payload(f), MAX_SHOWN)))
            .collect();
        format!("{} frames ({}); the last: [{}]", mine.len(), tally.join(", "), last.join(", "))
    }
}

fn frame_name(f: &ServerFrame) -> String {
    match f {
        ServerFrame::Reply(r) => format!("reply {}", r.status),
        ServerFrame::Push(m) => format!("push {:?}", m.event),
        ServerFrame::Broadcast(b) => format!("broadcast {:?}", b.event),
    }
}

fn frame_payload(f: &ServerFrame) -> String {
    match f {
        ServerFrame::Reply(r) => payload_value(&r.payload).to_string(),
        ServerFrame::Push(m) => payload_value(&m.payload).to_string(),
        ServerFrame::Broadcast(b) => payload_value(&b.payload).to_string(),
    }
}

/// Asserts that the reply to `ref` arrives with `status` and a matching
/// payload; returns the payload.
#[macro_export]
macro_rules! assert_reply {
    ($chan:expr, $ref:expr, $status:expr, |$p:pat_param| $body:expr $(, $timeout:expr)?) => {
        $crate::assert_reply!($chan, $ref, $status, |$p: &$crate::Value| -> bool { $body } $(, $timeout)?)
    };
    ($chan:expr, $ref:expr, $status:expr, $expected:expr) => {
        $crate::assert_reply!($chan, $ref, $status, $expected, $crate::ASSERT_TIMEOUT)
    };
    ($chan:expr, $ref:expr, $status:expr, $expected:expr, $timeout:expr) => {{
        let expected = $expected;
        match $chan.wait_reply(&$ref, $timeout).await {
            Some((status, payload)) => {
                assert_eq!(status, $status, "reply status to {:?} on {}", $ref, $chan.topic());
                let value = $crate::payload_value(&payload);
                assert!(
                    $crate::Expected::matches(&expected, &value),
                    "reply to {:?} on {}: expected {}, got {}",
                    $ref,
                    $chan.topic(),
                    $crate::Expected::describe(&expected),
                    value
                );
                payload
            }
            None => panic!(
                "no reply to {:?} on {} within {:?}; pending: {}",
                $ref,
                $chan.topic(),
                $timeout,
                $chan.pending()
            ),
        }
    }};
}

/// Asserts that a push of `event` with a matching payload arrives; returns
/// the payload.
#[macro_export]
macro_rules! assert_push {
    ($chan:expr, $event:expr, |$p:pat_param| $body:expr $(, $timeout:expr)?) => {
        $crate::assert_push!($chan, $event, |$p: &$crate::Value| -> bool { $body } $(, $timeout)?)
    };
    ($chan:expr, $event:expr, $expected:expr) => {
        $crate::assert_push!($chan, $event, $expected, $crate::ASSERT_TIMEOUT)
    };
    ($chan:expr, $event:expr, $expected:expr, $timeout:expr) => {{
        let expected = $expected;
        match $chan.wait_push($event, &expected, $timeout).await {
            Some(p) => p,
            None => panic!(
                "no push {:?} matching {} on {} within {:?}; pending: {}",
                $event,
                $crate::Expected::describe(&expected),
                $chan.topic(),
                $timeout,
                $chan.pending()
            ),
        }
    }};
}

/// Asserts that a broadcast of `event` with a matching payload is made on
/// the channel's topic; returns the payload.
///
/// The channel must have been opened with [`TestSocket::subscribe_and_join`]
/// (Phoenix.ChannelTest's `subscribe_and_join`): [`TestSocket::join`] does
/// not subscribe the test to the topic, and the assertion then fails at once
/// saying so.
#[macro_export]
macro_rules! assert_broadcast {
    ($chan:expr, $event:expr, |$p:pat_param| $body:expr $(, $timeout:expr)?) => {
        $crate::assert_broadcast!($chan, $event, |$p: &$crate::Value| -> bool { $body } $(, $timeout)?)
    };
    ($chan:expr, $event:expr, $expected:expr) => {
        $crate::assert_broadcast!($chan, $event, $expected, $crate::ASSERT_TIMEOUT)
    };
    ($chan:expr, $event:expr, $expected:expr, $timeout:expr) => {{
        let expected = $expected;
        let found = if $chan.is_subscribed() { $chan.wait_broadcast($event, &expected, $timeout).await } else { None };
        match found {
            Some(p) => p,
            None => panic!(
                "{}",
                $chan.broadcast_failure($event, &$crate::Expected::describe(&expected), $timeout)
            ),
        }
    }};
}

/// Asserts that no reply to `ref` arrives within the timeout.
#[macro_export]
macro_rules! refute_reply {
    ($chan:expr, $ref:expr) => {
        $crate::refute_reply!($chan, $ref, $crate::REFUTE_TIMEOUT)
    };
    ($chan:expr, $ref:expr, $timeout:expr) => {{
        if let Some((status, payload)) = $chan.wait_reply(&$ref, $timeout).await {
            panic!("unexpected reply to {:?} on {}: {} {:?}", $ref, $chan.topic(), status, payload);
        }
    }};
}

/// Asserts that no push of `event` with a matching payload arrives within
/// the timeout.
#[macro_export]
macro_rules! refute_push {
    ($chan:expr, $event:expr, |$p:pat_param| $body:expr $(, $timeout:expr)?) => {
        $crate::refute_push!($chan, $event, |$p: &$crate::Value| -> bool { $body } $(, $timeout)?)
    };
    ($chan:expr, $event:expr, $expected:expr) => {
        $crate::refute_push!($chan, $event, $expected, $crate::REFUTE_TIMEOUT)
    };
    ($chan:expr, $event:expr, $expected:expr, $timeout:expr) => {{
        let expected = $expected;
        if let Some(p) = $chan.wait_push($event, &expected, $timeout).await {
            panic!("unexpected push {:?} on {}: {:?}", $event, $chan.topic(), p);
        }
    }};
}

/// Asserts that no broadcast of `event` with a matching payload is made
/// within the timeout.
#[macro_export]
macro_rules! refute_broadcast {
    ($chan:expr, $event:expr, |$p:pat_param| $body:expr $(, $timeout:expr)?) => {
        $crate::refute_broadcast!($chan, $event, |$p: &$crate::Value| -> bool { $body } $(, $timeout)?)
    };
    ($chan:expr, $event:expr, $expected:expr) => {
        $crate::refute_broadcast!($chan, $event, $expected, $crate::REFUTE_TIMEOUT)
    };
    ($chan:expr, $event:expr, $expected:expr, $timeout:expr) => {{
        let expected = $expected;
        // a test that cannot see broadcasts would pass without checking anything
        if !$chan.is_subscribed() {
            panic!(
                "refute_broadcast! on {}: the channel was joined with `join`, which does not subscribe the test \
                 to the topic's broadcasts, so nothing could be refuted: use `subscribe_and_join`",
                $chan.topic()
            );
        }
        if let Some(p) = $chan.wait_broadcast($event, &expected, $timeout).await {
            panic!("unexpected broadcast {:?} on {}: {:?}", $event, $chan.topic(), p);
        }
    }};
}

/// A predicate that accepts any payload.
pub fn any_payload(_: &Value) -> bool {
    true
}
