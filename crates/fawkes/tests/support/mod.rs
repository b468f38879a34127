//! A small application shared by the behaviour tests: a socket that reads
//! `user_id` and refuses `token=invalid`, and a room channel with one event
//! per behaviour.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use fawkes::*;
use serde_json::{json, Value};

/// Records what `terminate` saw, per topic.
#[derive(Default, Clone)]
pub struct Log(pub Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    pub fn contains(&self, s: &str) -> bool {
        self.0.lock().unwrap().iter().any(|x| x == s)
    }
}

pub struct AppSocket {
    pub log: Log,
}

impl Socket for AppSocket {
    type Assigns = Option<String>;

    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<Self::Assigns, ConnectError> {
        match params.get_str("token") {
            Some("invalid") => Err(ConnectError::Refused),
            Some("panic") => panic!("connect panicked"),
            Some("429") => Err(ConnectError::Status(http::StatusCode::TOO_MANY_REQUESTS)),
            _ => Ok(params.get_str("user_id").map(str::to_owned)),
        }
    }

    fn id(&self, user: &Self::Assigns) -> Option<String> {
        user.as_ref().map(|u| format!("user_socket:{u}"))
    }
}

pub enum Info {
    AfterJoin,
    Push(Value),
    Stop,
}

pub struct Room {
    pub count: u64,
}

impl Channel<AppSocket> for Room {
    type Info = Info;
    const INTERCEPT: &'static [&'static str] = &["filtered"];

    async fn join(
        topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext<AppSocket, Info>,
    ) -> Result<Join<Self>, ChannelError> {
        match topic {
            "room:private" => Ok(Join::refuse(json!({"reason": "unauthorized"}))),
            "room:crash_on_join" => Err("crash".into()),
            "room:panic_on_join" => panic!("join panicked"),
            "room:slow_join" => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                Ok(Join::ok(Room { count: 0 }))
            }
            _ => {
                ctx.push("joined", json!({"user_id": ctx.assigns()}))?;
                ctx.channel_ref().send(Info::AfterJoin)?;
                Ok(Join::ok_with(Room { count: 0 }, json!({"topic": topic, "params": payload.to_value()?})))
            }
        }
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<AppSocket, Info>,
    ) -> Result<HandleIn, ChannelError> {
        self.count += 1;
        Ok(match event {
            "echo" => HandleIn::ok(payload),
            "error" => HandleIn::error(payload),
            "custom_status" => HandleIn::reply("accepted", payload),
            "broadcast" => {
                ctx.broadcast("broadcast", payload)?;
                HandleIn::ok(json!({}))
            }
            "broadcast_from" => {
                ctx.broadcast_from("broadcast", payload)?;
                HandleIn::ok(json!({}))
            }
            "filtered" => {
                ctx.broadcast("filtered", payload)?;
                HandleIn::ok(json!({}))
            }
            "push_back" => {
                ctx.push("pushed", payload)?;
                HandleIn::ok(json!({}))
            }
            "push_list" => {
                // a V2 push must be an object: this crashes the channel
                ctx.push("bad", json!([1, 2]))?;
                HandleIn::ok(json!({}))
            }
            "count" => HandleIn::ok(json!({"count": self.count})),
            "noreply" => HandleIn::NoReply,
            "later" => {
                let r = ctx.reply_ref().expect("a ref");
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    r.reply("ok", json!({"later": true})).unwrap();
                });
                HandleIn::NoReply
            }
            "info" => {
                ctx.channel_ref().send(Info::Push(payload.to_value()?))?;
                HandleIn::ok(json!({}))
            }
            "info_stop" => {
                ctx.channel_ref().send(Info::Stop)?;
                HandleIn::ok(json!({}))
            }
            "stop" => HandleIn::stop_ok(json!({})),
            "stop_error" => HandleIn::Stop { reason: StopReason::Error("bad".into()), reply: None },
            "raise" => return Err("raise".into()),
            "panic" => panic!("handle_in panicked"),
            "sleep" => {
                tokio::time::sleep(std::time::Duration::from_millis(payload.decode::<u64>().unwrap_or(100))).await;
                HandleIn::ok(json!({}))
            }
            other => return Err(format!("no handler for {other}").into()),
        })
    }

    async fn handle_out(
        &mut self,
        _event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<AppSocket, Info>,
    ) -> Result<HandleOut, ChannelError> {
        let v = payload.to_value()?;
        Ok(match (ctx.assigns(), v.get("to").and_then(Value::as_str)) {
            (Some(me), Some(to)) if me == to => HandleOut::Push(payload),
            _ => HandleOut::Drop,
        })
    }

    async fn handle_info(
        &mut self,
        info: Info,
        ctx: &mut ChannelContext<AppSocket, Info>,
    ) -> Result<HandleInfo, ChannelError> {
        match info {
            Info::AfterJoin => ctx.push("after_join", json!({}))?,
            Info::Push(v) => ctx.push("info", v)?,
            Info::Stop => return Ok(HandleInfo::Stop(StopReason::Normal)),
        }
        Ok(HandleInfo::Continue)
    }

    async fn terminate(&mut self, reason: &StopReason, ctx: &mut ChannelContext<AppSocket, Info>) {
        let _ = ctx.push("terminating", json!({"reason": format!("{reason:?}")}));
        ctx.handler().log.push(format!("{}:{reason:?}", ctx.topic()));
    }
}

pub fn handler(log: Log) -> SocketHandler<AppSocket> {
    SocketHandler::new(AppSocket { log }).channel::<Room>("room:*")
}

/// Serves the app on a loopback port.
pub async fn serve(handler: SocketHandler<AppSocket>) -> (SocketAddr, Endpoint) {
    let endpoint = Endpoint::local();
    let app = endpoint.socket("/socket", handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await });
    (addr, endpoint)
}

/// A minimal HTTP/1.1 client for the long-poll tests: one request per
/// connection, with `host: <addr>` unless `headers` has a `host`. Returns
/// the status, the headers (lowercased) and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let hs: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned())).collect();
    let mut body = raw[split + 4..].to_vec();
    if hs.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    (status, hs, body)
}

/// A long-poll request whose answer is HTTP 200 with a JSON body.
pub async fn lp(addr: SocketAddr, method: &str, query: &str, body: &str) -> Value {
    let (status, _, b) = http(
        addr,
        method,
        &format!("/socket/longpoll?{query}"),
        &[("content-type", "application/x-ndjson")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

/// A V2 JSON client over WebSocket or long polling, for tests that run the
/// same scenario on both transports.
pub enum Client {
    Ws(Box<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>),
    Lp { addr: SocketAddr, token: String, received: std::collections::VecDeque<Value> },
}

impl Client {
    /// Connects with `query` (`vsn=2.0.0` is added).
    pub async fn connect(addr: SocketAddr, longpoll: bool, query: &str) -> Client {
        if longpoll {
            let v = lp(addr, "GET", &format!("vsn=2.0.0&{query}"), "").await;
            assert_eq!(v["status"], 410, "{v}");
            Client::Lp { addr, token: v["token"].as_str().unwrap().to_owned(), received: Default::default() }
        } else {
            let url = format!("ws://{addr}/socket/websocket?vsn=2.0.0&{query}");
            Client::Ws(Box::new(tokio_tungstenite::connect_async(url).await.unwrap().0))
        }
    }

    pub async fn send(&mut self, msg: Value) {
        use futures_util::SinkExt;
        match self {
            Client::Ws(ws) => ws.send(tokio_tungstenite::tungstenite::Message::text(msg.to_string())).await.unwrap(),
            Client::Lp { addr, token, .. } => {
                let v = lp(*addr, "POST", &format!("vsn=2.0.0&token={token}"), &msg.to_string()).await;
                assert_eq!(v["status"], 200, "{v}");
            }
        }
    }

    /// The next message; panics after 5 s without one.
    pub async fn next(&mut self) -> Value {
        use futures_util::StreamExt;
        match self {
            Client::Ws(ws) => loop {
                let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
                    .await
                    .expect("a frame")
                    .expect("open")
                    .unwrap();
                if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                    return serde_json::from_str(&t).unwrap();
                }
            },
            Client::Lp { addr, token, received } => {
                let started = std::time::Instant::now();
                loop {
                    if let Some(v) = received.pop_front() {
                        return v;
                    }
                    assert!(started.elapsed() < std::time::Duration::from_secs(5), "a message in time");
                    let v = lp(*addr, "GET", &format!("vsn=2.0.0&token={token}"), "").await;
                    assert!(v["status"] == 200 || v["status"] == 204, "{v}");
                    for m in v["messages"].as_array().unwrap() {
                        received.push_back(serde_json::from_str(m.as_str().unwrap()).unwrap());
                    }
                }
            }
        }
    }

    /// The next message of `topic` with `event`, skipping others.
    pub async fn expect(&mut self, topic: &str, event: &str) -> Value {
        loop {
            let m = self.next().await;
            if m[2] == topic && m[3] == event {
                return m;
            }
        }
    }

    /// Closes a WebSocket (a long-poll client just stops polling).
    pub async fn close(self) {
        use futures_util::StreamExt;
        if let Client::Ws(mut ws) = self {
            let _ = ws.close(None).await;
            while let Ok(Some(Ok(_))) = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {}
        }
    }
}
