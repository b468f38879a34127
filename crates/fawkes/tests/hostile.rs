//! Hostile input: whatever one client sends, the server stays up, the
//! bystanders keep working with their latency unharmed, and memory stays
//! bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fawkes::token::{sign, MaxAge, SignOptions};
use fawkes::{ConnectError, ConnectInfo, Params, Socket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{handler, serve, Log};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(addr: SocketAddr, query: &str) -> Result<Ws, u16> {
    match tokio_tungstenite::connect_async(format!("ws://{addr}/socket/websocket?{query}")).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.ok()? {
            Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

/// A bystander that heartbeats every 20 ms in the background; `finish`
/// returns its round trips, failing if any heartbeat went unanswered.
struct Bystander {
    task: tokio::task::JoinHandle<Vec<Duration>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Bystander {
    async fn start(addr: SocketAddr) -> Bystander {
        let mut ws = open(addr, "vsn=2.0.0&user_id=bystander").await.unwrap();
        ws.send(Message::text(json!(["1", "1", "room:bystander", "phx_join", {}]).to_string())).await.unwrap();
        while next_json(&mut ws).await.unwrap()[1] != "1" {}
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut rtts = Vec::new();
            let mut stop = false;
            for i in 0u64.. {
                stop = stop || stopped.try_recv().is_ok();
                // a few round trips after the attack too
                if stop && rtts.len() >= 5 {
                    break;
                }
                let r = format!("hb{i}");
                let sent = Instant::now();
                ws.send(Message::text(json!([null, r, "phoenix", "heartbeat", {}]).to_string()))
                    .await
                    .expect("bystander send");
                loop {
                    let v = next_json(&mut ws).await.expect("bystander got its reply");
                    if v[1] == r.as_str() {
                        break;
                    }
                }
                rtts.push(sent.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            rtts
        });
        Bystander { task, stop }
    }

    async fn finish(self) -> Vec<Duration> {
        let _ = self.stop.send(());
        let mut rtts = self.task.await.expect("the bystander never failed");
        rtts.sort();
        assert!(rtts.len() >= 5, "bystander round trips: {}", rtts.len());
        // generous: the suite runs unoptimised on two shared cores
        assert!(*rtts.last().unwrap() < Duration::from_millis(500), "bystander slowest round trip {:?}", rtts.last());
        rtts
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_of_every_kind_close_only_their_connection() {
    let (addr, endpoint) = serve(handler(Log::default()).configure(|c| c.max_frame_size = 64 * 1024)).await;
    let by = Bystander::start(addr).await;
    let cases: Vec<(&str, Message, u16)> = vec![
        ("2.0.0", Message::text("{\"this is\": not json"), 1011),
        ("2.0.0", Message::text("[\"1\", \"1\", \"room:x\", \"phx_join\""), 1011),
        ("2.0.0", Message::text("{\"topic\":\"room:x\",\"event\":\"phx_join\",\"payload\":{},\"ref\":\"1\"}"), 1011),
        ("2.0.0", Message::text("42"), 1011),
        ("2.0.0", Message::text("\"hello\""), 1011),
        ("2.0.0", Message::text("[\"1\",\"1\",\"room:x\"]"), 1011),
        ("2.0.0", Message::text("[\"1\",\"1\",7,\"phx_join\",{}]"), 1011),
        ("2.0.0", Message::text("[\"1\",\"1\",\"room:x\",{},{}]"), 1011),
        ("2.0.0", Message::text(""), 1011),
        ("2.0.0", Message::binary(vec![0u8, 200, 200, 200, 200, 1, 2, 3]), 1011),
        ("2.0.0", Message::binary(vec![1u8, 0, 0, 0, 0]), 1011),
        ("2.0.0", Message::binary(vec![0u8, 0, 0, 1, 0, 0xff]), 1011),
        ("2.0.0", Message::binary(Vec::new()), 1011),
        ("1.0.0", Message::text("[null,\"1\",\"room:x\",\"phx_join\",{}]"), 1011),
        ("1.0.0", Message::text("{\"topic\":\"room:x\",\"event\":\"phx_join\",\"payload\":{}}"), 1011),
        ("1.0.0", Message::text("{\"topic\":1,\"event\":\"e\",\"payload\":{},\"ref\":\"1\"}"), 1011),
        ("1.0.0", Message::binary(vec![0u8, 0, 0, 0, 0]), 1011),
        ("2.0.0", Message::text("x".repeat(100 * 1024)), 1009),
    ];
    let n = cases.len();
    for (vsn, frame, code) in cases {
        let mut ws = open(addr, &format!("vsn={vsn}")).await.unwrap();
        let what = format!("{frame:?}").chars().take(60).collect::<String>();
        ws.send(frame).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(code), "{vsn} {what}");
    }
    by.finish().await;
    assert_eq!(endpoint.metrics().snapshot().decode_errors as usize, n - 1);
}

/// Taken by the tests that allocate much, and by the one that measures the
/// process's memory, so that they do not run at once.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_and_join_floods_are_rate_limited_and_harm_no_one() {
    let _heavy = HEAVY.lock().await;
    let (addr, _) = serve(handler(Log::default())).await;
    let by = Bystander::start(addr).await;
    let mut ws = open(addr, "vsn=2.0.0").await.unwrap();
    ws.send(Message::text(json!(["1", "1", "room:flood", "phx_join", {}]).to_string())).await.unwrap();
    while next_json(&mut ws).await.unwrap()[1] != "1" {}
    // 15 000 events at once: the socket's burst (10 000) passes, the rest is refused
    let mut batch = Vec::new();
    for i in 0..15_000 {
        batch.push(Message::text(json!(["1", format!("e{i}"), "room:flood", "echo", {}]).to_string()));
    }
    let mut sink = futures_util::stream::iter(batch.into_iter().map(Ok));
    ws.send_all(&mut sink).await.unwrap();
    let (mut ok, mut limited) = (0, 0);
    while ok + limited < 15_000 {
        let v = next_json(&mut ws).await.expect("a reply to every event");
        if v[3] != "phx_reply" || !v[1].as_str().is_some_and(|r| r.starts_with('e')) {
            continue;
        }
        match v[4]["status"].as_str() {
            Some("ok") => ok += 1,
            _ => {
                assert_eq!(v[4]["response"]["reason"], "rate_limited", "{v}");
                assert!(v[4]["response"]["retry_after"].as_u64().unwrap() >= 1);
                assert_eq!(v[0], "1", "the refusal carries the channel's join ref");
                limited += 1;
            }
        }
    }
    assert!((10_000..11_500).contains(&ok), "{ok} events passed");
    // a join flood: 1500 joins of unmatched topics, the first 1000 answered
    for i in 0..1500 {
        ws.send(Message::text(
            json!([format!("j{i}"), format!("j{i}"), format!("nope:{i}"), "phx_join", {}]).to_string(),
        ))
        .await
        .unwrap();
    }
    let mut limited_joins = 0;
    let mut seen = 0;
    while seen < 1500 {
        let v = next_json(&mut ws).await.unwrap();
        if v[1].as_str().is_some_and(|r| r.starts_with('j')) {
            seen += 1;
            if v[4]["response"]["reason"] == "rate_limited" {
                limited_joins += 1;
            }
        }
    }
    assert!(limited_joins >= 350, "{limited_joins} joins refused");
    by.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_limited_per_node_and_per_socket_id() {
    let (addr, _) = serve(handler(Log::default()).configure(|c| {
        c.max_connections = 4;
        c.max_connections_per_id = 2;
    }))
    .await;
    let a1 = open(addr, "vsn=2.0.0&user_id=a").await.unwrap();
    let _a2 = open(addr, "vsn=2.0.0&user_id=a").await.unwrap();
    assert_eq!(open(addr, "vsn=2.0.0&user_id=a").await.err(), Some(503));
    let _b = open(addr, "vsn=2.0.0&user_id=b").await.unwrap();
    let _anon = open(addr, "vsn=2.0.0").await.unwrap();
    assert_eq!(open(addr, "vsn=2.0.0").await.err(), Some(503));
    drop(a1);
    let mut ok = false;
    for _ in 0..50 {
        if open(addr, "vsn=2.0.0&user_id=a").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a slot is given back when a connection closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_one_byte_at_a_time_harm_no_one() {
    let (addr, _) = serve(handler(Log::default())).await;
    let by = Bystander::start(addr).await;
    let request = b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        slow.push(tokio::spawn(async move {
            for b in request.iter().take(60) {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            s
        }));
    }
    for t in slow {
        let _held = t.await.unwrap();
    }
    by.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_costs_bounded_memory() {
    let _heavy = HEAVY.lock().await;
    let (addr, endpoint) = serve(handler(Log::default()).configure(|c| {
        c.outbox_bytes = 1 << 20;
        c.write_timeout = Duration::from_millis(500);
    }))
    .await;
    let by = Bystander::start(addr).await;
    let mut stalled = open(addr, "vsn=2.0.0").await.unwrap();
    stalled.send(Message::text(json!(["1", "1", "room:stall", "phx_join", {}]).to_string())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rss_kib();
    let big = "x".repeat(256 * 1024);
    for i in 0..400 {
        // 100 MiB offered in all
        endpoint.broadcast("room:stall", "big", json!({"i": i, "pad": big})).unwrap();
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for _ in 0..100 {
        if endpoint.metrics().snapshot().slow_consumers > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(endpoint.metrics().snapshot().slow_consumers >= 1);
    assert!(grown < 48 * 1024, "RSS grew by {grown} KiB");
    by.finish().await;
    drop(stalled);
}

/// A socket whose connect verifies a Phoenix.Token.
struct TokenSocket;

const SECRET: &str = "hostile-suite-secret-key-base-0123456789";

impl Socket for TokenSocket {
    type Assigns = Value;
    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<Value, ConnectError> {
        let opts = fawkes::token::VerifyOptions { max_age: Some(MaxAge::Seconds(60.0)), now_ms: None };
        fawkes::token::verify(SECRET, "user socket", params.get_str("token"), &opts).map_err(|_| ConnectError::Refused)
    }
}

#[tokio::test]
async fn forged_expired_and_missing_tokens_are_refused() {
    let endpoint = fawkes::Endpoint::local();
    let app = endpoint.socket("/socket", fawkes::SocketHandler::new(TokenSocket));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let good = sign(SECRET, "user socket", &json!({"user_id": 1}), &SignOptions::default()).unwrap();
    let forged =
        sign("another-secret-key-base-0123456789", "user socket", &json!({"user_id": 1}), &SignOptions::default())
            .unwrap();
    let old = sign(
        SECRET,
        "user socket",
        &json!({"user_id": 1}),
        &SignOptions { signed_at_ms: Some(1_000), max_age: MaxAge::Seconds(60.0) },
    )
    .unwrap();
    assert!(open(addr, &format!("vsn=2.0.0&token={good}")).await.is_ok());
    for t in [forged.as_str(), old.as_str(), "garbage", "SFMyNTY.x.y"] {
        assert_eq!(open(addr, &format!("vsn=2.0.0&token={t}")).await.err(), Some(403), "{t}");
    }
    assert_eq!(open(addr, "vsn=2.0.0").await.err(), Some(403));
}
