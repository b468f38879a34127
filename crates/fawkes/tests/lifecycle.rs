//! A channel's end is complete before a later join of its topic on the same
//! socket runs: presences untracked, `terminate` run, state dropped. Phoenix
//! waits for the old channel process to exit; so must Fawkes, after a
//! duplicate join, a leave, a crash and a closed connection, over WebSocket
//! and long polling, on real loopback sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fawkes::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Channels alive per (user, topic), and every overlap seen by a join.
#[derive(Default, Clone)]
struct Lives {
    alive: Arc<Mutex<HashMap<(String, String), usize>>>,
    overlaps: Arc<Mutex<Vec<String>>>,
}

/// Decrements the channel's count when the channel's state is dropped.
struct Alive {
    lives: Lives,
    key: (String, String),
}

impl Drop for Alive {
    fn drop(&mut self) {
        // state whose drop takes a while (closing files, flushing buffers)
        // widens any window in which a join could overtake it
        std::thread::sleep(Duration::from_millis(20));
        *self.lives.alive.lock().unwrap().get_mut(&self.key).unwrap() -= 1;
    }
}

struct PSocket {
    presence: Presence,
    lives: Lives,
}

impl Socket for PSocket {
    type Assigns = String;

    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<String, ConnectError> {
        params.get_str("user_id").map(str::to_owned).ok_or(ConnectError::Refused)
    }
}

struct PChannel {
    status: String,
    _alive: Alive,
}

impl Channel<PSocket> for PChannel {
    type Info = ();

    async fn join(
        topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext<PSocket, ()>,
    ) -> Result<Join<Self>, ChannelError> {
        let lives = ctx.handler().lives.clone();
        let key = (ctx.assigns().clone(), topic.to_owned());
        {
            let mut alive = lives.alive.lock().unwrap();
            let n = alive.entry(key.clone()).or_insert(0);
            if *n > 0 {
                lives.overlaps.lock().unwrap().push(format!("{key:?}: {n} still alive"));
            }
            *n += 1;
        }
        let status = payload.to_value()?.get("status").and_then(Value::as_str).unwrap_or("online").to_owned();
        ctx.channel_ref().send(())?;
        Ok(Join::ok(PChannel { status, _alive: Alive { lives, key } }))
    }

    async fn handle_info(&mut self, _: (), ctx: &mut ChannelContext<PSocket, ()>) -> Result<HandleInfo, ChannelError> {
        let presence = ctx.handler().presence.clone();
        let state = presence.list(ctx.topic()).await;
        ctx.push("presence_state", Value::Object(state))?;
        let user = ctx.assigns().clone();
        presence.track(ctx, &user, json!({"status": self.status}))?;
        Ok(HandleInfo::Continue)
    }

    async fn handle_in(
        &mut self,
        event: &str,
        _: Payload,
        _: &mut ChannelContext<PSocket, ()>,
    ) -> Result<HandleIn, ChannelError> {
        match event {
            "raise" => Err("raised".into()),
            _ => Ok(HandleIn::ok(json!({}))),
        }
    }

    async fn terminate(&mut self, _: &StopReason, _: &mut ChannelContext<PSocket, ()>) {
        // a slow terminate makes an early join obvious
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn serve() -> (SocketAddr, Lives) {
    let endpoint = Endpoint::local();
    let lives = Lives::default();
    let presence = Presence::new(&endpoint);
    let handler = SocketHandler::new(PSocket { presence, lives: lives.clone() })
        .configure(|c| c.longpoll = true)
        .channel::<PChannel>("presence:*");
    let app = endpoint.socket("/socket", handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await });
    (addr, lives)
}

/// A V2 client over either transport.
enum Client {
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Lp { addr: SocketAddr, token: String, received: std::collections::VecDeque<Value> },
}

impl Client {
    async fn ws(addr: SocketAddr, user: &str) -> Client {
        let url = format!("ws://{addr}/socket/websocket?vsn=2.0.0&user_id={user}");
        Client::Ws(Box::new(tokio_tungstenite::connect_async(url).await.unwrap().0))
    }

    async fn lp(addr: SocketAddr, user: &str) -> Client {
        let v = support::lp(addr, "GET", &format!("vsn=2.0.0&user_id={user}"), "").await;
        assert_eq!(v["status"], 410, "{v}");
        Client::Lp { addr, token: v["token"].as_str().unwrap().to_owned(), received: Default::default() }
    }

    async fn send(&mut self, msg: Value) {
        match self {
            Client::Ws(ws) => ws.send(WsMessage::text(msg.to_string())).await.unwrap(),
            Client::Lp { addr, token, .. } => {
                let v = support::lp(*addr, "POST", &format!("vsn=2.0.0&token={token}"), &msg.to_string()).await;
                assert_eq!(v["status"], 200, "{v}");
            }
        }
    }

    async fn next(&mut self) -> Value {
        match self {
            Client::Ws(ws) => loop {
                let msg =
                    tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a frame").unwrap().unwrap();
                if let WsMessage::Text(t) = msg {
                    return serde_json::from_str(&t).unwrap();
                }
            },
            Client::Lp { addr, token, received } => loop {
                if let Some(v) = received.pop_front() {
                    return v;
                }
                let v = support::lp(*addr, "GET", &format!("vsn=2.0.0&token={token}"), "").await;
                assert!(v["status"] == 200 || v["status"] == 204, "{v}");
                for m in v["messages"].as_array().unwrap() {
                    received.push_back(serde_json::from_str(m.as_str().unwrap()).unwrap());
                }
            },
        }
    }

    /// The next message of `topic` with `event`, skipping others.
    async fn expect(&mut self, topic: &str, event: &str) -> Value {
        loop {
            let m = self.next().await;
            if m[2] == topic && m[3] == event {
                return m;
            }
        }
    }

    async fn close(self) {
        if let Client::Ws(mut ws) = self {
            WebSocketStream::close(&mut ws, None).await.unwrap();
            // wait for the server's close
            while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {}
        }
    }
}

fn join(join_ref: &str, topic: &str, status: &str) -> Value {
    json!([join_ref, join_ref, topic, "phx_join", {"status": status}])
}

/// The statuses of `user` in a presence_state or a diff's joins/leaves.
fn statuses(presences: &Value, user: &str) -> Vec<String> {
    presences[user]["metas"]
        .as_array()
        .map(|m| m.iter().map(|m| m["status"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// How the first channel ends before the second join.
#[derive(Clone, Copy, Debug)]
enum How {
    Duplicate,
    Leave,
    Crash,
    Reconnect,
}

/// One run: the user joins with status "old", the first channel ends as
/// `how` says, the user joins with "new". The new channel's presence_state
/// must not list "old", and an observer must see "old" leave before "new"
/// joins.
async fn run(addr: SocketAddr, lives: &Lives, lp: bool, how: How, topic: &str) {
    let connect = |user: &'static str| async move {
        if lp {
            Client::lp(addr, user).await
        } else {
            Client::ws(addr, user).await
        }
    };
    let mut observer = connect("obs").await;
    observer.send(join("1", topic, "watching")).await;
    observer.expect(topic, "phx_reply").await;
    observer.expect(topic, "presence_state").await;
    observer.expect(topic, "presence_diff").await; // its own join

    let mut client = connect("u").await;
    client.send(join("1", topic, "old")).await;
    client.expect(topic, "phx_reply").await;
    client.expect(topic, "presence_diff").await;
    let diff = observer.expect(topic, "presence_diff").await;
    assert_eq!(statuses(&diff[4]["joins"], "u"), ["old"]);

    match how {
        How::Duplicate => {}
        How::Leave => {
            client.send(json!(["1", "2", topic, "phx_leave", {}])).await;
            let reply = client.expect(topic, "phx_reply").await;
            assert_eq!(reply[4]["status"], "ok");
        }
        How::Crash => {
            client.send(json!(["1", "2", topic, "raise", {}])).await;
            client.expect(topic, "phx_error").await;
        }
        How::Reconnect => {
            client.close().await;
            client = connect("u").await;
        }
    }
    client.send(join("3", topic, "new")).await;
    let reply = client.expect(topic, "phx_reply").await;
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    let state = client.expect(topic, "presence_state").await;
    assert_eq!(
        statuses(&state[4], "u"),
        Vec::<String>::new(),
        "{how:?}: the ended channel's presence is listed: {state}"
    );

    let first = observer.expect(topic, "presence_diff").await;
    assert_eq!(statuses(&first[4]["leaves"], "u"), ["old"], "{how:?}: the old leave must come first: {first}");
    assert_eq!(statuses(&first[4]["joins"], "u"), Vec::<String>::new(), "{how:?}: {first}");
    let second = observer.expect(topic, "presence_diff").await;
    assert_eq!(statuses(&second[4]["joins"], "u"), ["new"], "{how:?}: {second}");

    let overlaps = lives.overlaps.lock().unwrap().clone();
    assert!(overlaps.is_empty(), "{how:?}: a join ran while its topic's previous channel lived: {overlaps:?}");
    client.close().await;
    observer.close().await;
}

async fn runs(lp: bool, how: How) {
    let (addr, lives) = serve().await;
    let n = if lp { 5 } else { 20 };
    for i in 0..n {
        run(addr, &lives, lp, how, &format!("presence:{how:?}{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_join_waits_for_the_old_channel_over_websocket() {
    runs(false, How::Duplicate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_after_leave_waits_for_the_old_channel_over_websocket() {
    runs(false, How::Leave).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_after_a_crash_waits_for_the_old_channel_over_websocket() {
    runs(false, How::Crash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_finds_the_old_connection_s_channels_ended() {
    runs(false, How::Reconnect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_join_waits_for_the_old_channel_over_long_polling() {
    runs(true, How::Duplicate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_after_leave_waits_for_the_old_channel_over_long_polling() {
    runs(true, How::Leave).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_after_a_crash_waits_for_the_old_channel_over_long_polling() {
    runs(true, How::Crash).await;
}
