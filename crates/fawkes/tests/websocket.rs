//! The WebSocket transport on real loopback sockets, driven by an independent
//! client (tokio-tungstenite).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{handler, serve, Log};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(addr: std::net::SocketAddr, query: &str, origin: Option<&str>) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}/socket/websocket?{query}").into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn next_text(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(3), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Waits for the close frame; returns its code.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn v2_join_reply_push_and_heartbeat_frames_are_phoenix_s() {
    let (addr, _) = serve(handler(Log::default())).await;
    let mut ws = open(addr, "vsn=2.0.0&user_id=u1", None).await.unwrap();
    send(&mut ws, json!([null, "1", "phoenix", "heartbeat", {}])).await;
    assert_eq!(next_text(&mut ws).await, json!([null, "1", "phoenix", "phx_reply", {"response": {}, "status": "ok"}]));
    send(&mut ws, json!(["11", "2", "room:1", "phx_join", {"a": 1}])).await;
    assert_eq!(
        next_text(&mut ws).await,
        json!(["11", "2", "room:1", "phx_reply", {"response": {"topic": "room:1", "params": {"a": 1}}, "status": "ok"}])
    );
    assert_eq!(next_text(&mut ws).await, json!(["11", null, "room:1", "joined", {"user_id": "u1"}]));
    assert_eq!(next_text(&mut ws).await, json!(["11", null, "room:1", "after_join", {}]));
    send(&mut ws, json!(["11", "3", "room:1", "broadcast", {"b": 1}])).await;
    let mut got = vec![next_text(&mut ws).await, next_text(&mut ws).await];
    got.sort_by_key(|v| v[3].as_str().unwrap().to_owned());
    assert_eq!(
        got,
        vec![
            json!([null, null, "room:1", "broadcast", {"b": 1}]),
            json!(["11", "3", "room:1", "phx_reply", {"response": {}, "status": "ok"}])
        ]
    );
    send(&mut ws, json!(["11", "4", "room:1", "phx_leave", {}])).await;
    assert_eq!(next_text(&mut ws).await, json!(["11", "4", "room:1", "phx_reply", {"response": {}, "status": "ok"}]));
    assert_eq!(next_text(&mut ws).await, json!(["11", "11", "room:1", "phx_close", {}]));
}

#[tokio::test]
async fn without_vsn_the_socket_speaks_v1() {
    let (addr, _) = serve(handler(Log::default())).await;
    for query in ["", "vsn=1.0.0"] {
        let mut ws = open(addr, query, None).await.unwrap();
        send(&mut ws, json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "1"})).await;
        assert_eq!(
            next_text(&mut ws).await,
            json!({"topic": "phoenix", "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": "1"})
        );
        send(&mut ws, json!({"topic": "room:v1", "event": "phx_join", "payload": {}, "ref": "2"})).await;
        let reply = next_text(&mut ws).await;
        assert_eq!(reply["ref"], "2");
        assert!(reply.get("join_ref").is_none());
        assert_eq!(
            next_text(&mut ws).await,
            json!({"topic": "room:v1", "event": "joined", "payload": {"user_id": null}, "ref": null})
        );
    }
}

#[tokio::test]
async fn refusals_are_answered_with_http_statuses() {
    let (addr, endpoint) = serve(handler(Log::default())).await;
    assert_eq!(open(addr, "vsn=3.0.0", None).await.err(), Some(403));
    assert_eq!(open(addr, "vsn=2", None).await.err(), Some(403));
    assert_eq!(open(addr, "vsn=2.0.0&token=invalid", None).await.err(), Some(403));
    assert_eq!(open(addr, "vsn=2.0.0&token=panic", None).await.err(), Some(403));
    assert_eq!(open(addr, "vsn=2.0.0&token=429", None).await.err(), Some(429));
    assert_eq!(open(addr, "vsn=2.0.0", Some("http://evil.example")).await.err(), Some(403));
    assert_eq!(open(addr, "vsn=2.0.0", Some("null")).await.err(), Some(403));
    assert!(open(addr, "vsn=2.0.0", Some("http://localhost:4000")).await.is_ok());
    assert!(endpoint.metrics().snapshot().refused >= 7);
}

#[tokio::test]
async fn a_plain_get_is_answered_400_after_connect() {
    let (addr, _) = serve(handler(Log::default())).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("'connection' header must contain 'upgrade'"));
}

#[tokio::test]
async fn an_undecodable_frame_closes_that_connection_only_with_1011() {
    let (addr, endpoint) = serve(handler(Log::default())).await;
    let mut bystander = open(addr, "vsn=2.0.0", None).await.unwrap();
    send(&mut bystander, json!(["1", "1", "room:b", "phx_join", {}])).await;
    next_text(&mut bystander).await;
    for (vsn, frame) in [
        ("2.0.0", "{\"not\": \"an array\"}"),
        ("2.0.0", "[1,2]"),
        ("2.0.0", "nope"),
        ("1.0.0", "[null,\"1\",\"t\",\"e\",{}]"),
    ] {
        let mut ws = open(addr, &format!("vsn={vsn}"), None).await.unwrap();
        ws.send(Message::text(frame)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(1011), "{frame}");
    }
    let mut ws = open(addr, "vsn=2.0.0", None).await.unwrap();
    ws.send(Message::binary(vec![0u8, 200, 200, 200, 200, 1])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1011));
    assert_eq!(endpoint.metrics().snapshot().decode_errors, 5);
    send(&mut bystander, json!([null, "9", "phoenix", "heartbeat", {}])).await;
    let mut reply = next_text(&mut bystander).await;
    while reply[1] != "9" {
        reply = next_text(&mut bystander).await;
    }
    assert_eq!(reply[4]["status"], "ok");
}

#[tokio::test]
async fn binary_payloads_round_trip_as_binary_frames() {
    let (addr, _) = serve(handler(Log::default())).await;
    let mut ws = open(addr, "vsn=2.0.0", None).await.unwrap();
    send(&mut ws, json!(["1", "1", "room:bin", "phx_join", {}])).await;
    next_text(&mut ws).await;
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut frame = vec![0u8, 1, 1, 8, 4];
    frame.extend_from_slice(b"12room:binecho");
    frame.extend_from_slice(&payload);
    ws.send(Message::binary(frame)).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Binary(b) => {
                let mut want = vec![1u8, 1, 1, 8, 2];
                want.extend_from_slice(b"12room:binok");
                want.extend_from_slice(&payload);
                assert_eq!(b.to_vec(), want);
                break;
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn messages_over_the_frame_limit_close_with_1009() {
    let (addr, _) = serve(handler(Log::default()).configure(|c| c.max_frame_size = 1000)).await;
    let mut ws = open(addr, "vsn=2.0.0", None).await.unwrap();
    ws.send(Message::text(format!("[null,\"1\",\"phoenix\",\"heartbeat\",{{\"x\":\"{}\"}}]", "a".repeat(2000))))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn the_idle_timeout_closes_silent_sockets_and_traffic_either_way_resets_it() {
    let (addr, endpoint) = serve(handler(Log::default()).configure(|c| c.timeout = Duration::from_millis(300))).await;
    let started = std::time::Instant::now();
    let mut silent = open(addr, "vsn=2.0.0", None).await.unwrap();
    assert_eq!(close_code(&mut silent).await, Some(1000));
    assert!(started.elapsed() >= Duration::from_millis(290));

    // client heartbeats keep it open
    let mut chatty = open(addr, "vsn=2.0.0", None).await.unwrap();
    for i in 0..8 {
        send(&mut chatty, json!([null, i.to_string(), "phoenix", "heartbeat", {}])).await;
        next_text(&mut chatty).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // server pushes keep it open too
    let mut listener = open(addr, "vsn=2.0.0", None).await.unwrap();
    send(&mut listener, json!(["1", "1", "room:idle", "phx_join", {}])).await;
    assert_eq!(next_text(&mut listener).await[3], "phx_reply");
    for _ in 0..8 {
        endpoint.broadcast("room:idle", "tick", json!({})).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ticks = 0;
    while ticks < 8 {
        let v = next_text(&mut listener).await;
        if v[3] == "tick" {
            ticks += 1;
        }
    }
    assert_eq!(close_code(&mut listener).await, Some(1000));
}

/// Opens a client that may send messages of any size.
async fn open_unbounded(addr: std::net::SocketAddr) -> Ws {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let url = format!("ws://{addr}/socket/websocket?vsn=2.0.0");
    tokio_tungstenite::connect_async_with_config(url, Some(config), false).await.unwrap().0
}

/// A heartbeat padded to exactly `len` bytes.
fn heartbeat_of(len: usize) -> String {
    let head = "[null,\"1\",\"phoenix\",\"heartbeat\",{\"x\":\"";
    let tail = "\"}]";
    format!("{head}{}{tail}", "a".repeat(len - head.len() - tail.len()))
}

/// Phoenix 1.8's WebSocket limit is 10,000,000 bytes; a larger message is
/// closed with 1009, and the client sees that code (not a reset's 1006)
/// however much of the message it still had to send.
#[tokio::test]
async fn the_default_frame_limit_is_phoenix_s_and_its_close_code_reaches_the_client() {
    let (addr, _) = serve(handler(Log::default())).await;
    let mut ws = open_unbounded(addr).await;
    ws.send(Message::text(heartbeat_of(9_000_040))).await.unwrap();
    let reply = next_text(&mut ws).await;
    assert_eq!(reply[4]["status"], "ok", "9,000,040 bytes are under the limit");
    ws.send(Message::text(heartbeat_of(10_000_000))).await.unwrap();
    assert_eq!(next_text(&mut ws).await[4]["status"], "ok", "10,000,000 bytes are the limit");

    for len in [10_000_001, 20_000_000, 64_000_000] {
        let mut ws = open_unbounded(addr).await;
        // the client may still be writing when the server closes
        let _ = ws.send(Message::text(heartbeat_of(len))).await;
        assert_eq!(close_code(&mut ws).await, Some(1009), "{len} bytes");
    }
}

#[tokio::test]
async fn disconnect_closes_with_1001_and_shutdown_with_1012() {
    let (addr, endpoint) = serve(handler(Log::default())).await;
    let mut a = open(addr, "vsn=2.0.0&user_id=a", None).await.unwrap();
    let mut b = open(addr, "vsn=2.0.0&user_id=b", None).await.unwrap();
    endpoint.disconnect("user_socket:a").unwrap();
    // Phoenix 1.8: 1001 with an empty reason
    let frame = loop {
        match tokio::time::timeout(Duration::from_secs(5), a.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(c))) => break c.expect("a close code"),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1001, ""));
    endpoint.shutdown();
    assert_eq!(close_code(&mut b).await, Some(1012));
    assert_eq!(CloseCode::from(1012), CloseCode::Restart);
}

#[tokio::test]
async fn ping_is_answered_and_fragmented_messages_are_assembled() {
    let (addr, _) = serve(handler(Log::default())).await;
    let mut ws = open(addr, "vsn=2.0.0", None).await.unwrap();
    ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    loop {
        if let Message::Pong(p) =
            tokio::time::timeout(Duration::from_secs(3), ws.next()).await.unwrap().unwrap().unwrap()
        {
            assert_eq!(&p[..], b"hi");
            break;
        }
    }
    let text = json!([null, "f", "phoenix", "heartbeat", {"pad": "x".repeat(100)}]).to_string();
    let (a, b) = text.split_at(40);
    use tokio_tungstenite::tungstenite::protocol::frame::{coding::Data, coding::OpCode, Frame};
    let mut first = Frame::message(a.as_bytes().to_vec(), OpCode::Data(Data::Text), false);
    first.header_mut().is_final = false;
    ws.send(Message::Frame(first)).await.unwrap();
    ws.send(Message::Frame(Frame::message(b.as_bytes().to_vec(), OpCode::Data(Data::Continue), true))).await.unwrap();
    assert_eq!(next_text(&mut ws).await[1], "f");
}

/// A client that never reads is closed as a slow consumer; other clients
/// keep receiving.
#[tokio::test]
async fn a_client_that_never_reads_is_dropped_and_others_are_unharmed() {
    let (addr, endpoint) = serve(handler(Log::default()).configure(|c| {
        c.outbox_frames = 64;
        c.write_timeout = Duration::from_millis(500);
    }))
    .await;
    let mut reader = open(addr, "vsn=2.0.0", None).await.unwrap();
    send(&mut reader, json!(["1", "1", "room:flood", "phx_join", {}])).await;
    let mut stalled = open(addr, "vsn=2.0.0", None).await.unwrap();
    send(&mut stalled, json!(["1", "1", "room:flood", "phx_join", {}])).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let big = "x".repeat(64 * 1024);
    let mut received = 0;
    for i in 0..400 {
        endpoint.broadcast("room:flood", "big", json!({"i": i, "pad": big})).unwrap();
        // the reader keeps up
        loop {
            let v = next_text(&mut reader).await;
            if v[3] == "big" {
                received += 1;
                break;
            }
        }
    }
    assert_eq!(received, 400);
    // the stalled client is dropped once its writes time out
    for _ in 0..50 {
        if endpoint.metrics().snapshot().slow_consumers >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(endpoint.metrics().snapshot().slow_consumers >= 1);
    assert_eq!(endpoint.pubsub().subscriber_count("room:flood"), 1);
    drop(stalled);
}

/// Opens a raw connection that offers permessage-deflate; returns it after
/// checking the server accepted the extension.
async fn open_deflate(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_lowercase();
    assert!(head.starts_with("http/1.1 101"));
    assert!(head.contains(
        "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    ));
    s
}

/// Sends an uncompressed, masked (with a zero mask) text frame.
async fn send_raw_text(s: &mut TcpStream, text: &str) {
    let mut frame = vec![0x81u8];
    if text.len() < 126 {
        frame.push(0x80 | text.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(text.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(text.as_bytes());
    s.write_all(&frame).await.unwrap();
}

/// Reads one server frame: its first byte and its message as JSON,
/// inflated when RSV1 says it is compressed.
async fn read_raw_json(s: &mut TcpStream) -> (u8, Value) {
    use flate2::{Decompress, FlushDecompress};
    let mut h = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut h)).await.expect("a frame in time").unwrap();
    let len = match h[1] {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.unwrap();
            usize::from(u16::from_be_bytes(l))
        }
        n => usize::from(n),
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    if h[0] & 0x40 != 0 {
        body.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(4096);
        Decompress::new(false).decompress_vec(&body, &mut out, FlushDecompress::Sync).unwrap();
        body = out;
    }
    (h[0], serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn permessage_deflate_is_negotiated_when_enabled() {
    let (addr, _) = serve(handler(Log::default()).configure(|c| c.compress = true)).await;
    let mut s = open_deflate(addr).await;
    // an uncompressed message with a large payload; the reply is compressed
    let pad = "abc".repeat(100);
    send_raw_text(&mut s, &json!([null, "z", "room:none", "echo", {"pad": pad}]).to_string()).await;
    let (first, v) = read_raw_json(&mut s).await;
    assert_eq!(first, 0xC1, "FIN + RSV1 + text");
    assert_eq!(
        v,
        json!([null, "z", "room:none", "phx_reply", {"response": {"reason": "unmatched topic"}, "status": "error"}])
    );
}

/// Broadcasts reach compressing sockets compressed (once per dispatch,
/// shared: see fawkes-pubsub's tests), small ones uncompressed, and
/// uncompressed sockets on the same topic get them plain.
#[tokio::test]
async fn broadcasts_reach_compressing_and_plain_sockets_alike() {
    let (addr, endpoint) = serve(handler(Log::default()).configure(|c| c.compress = true)).await;
    let mut zs = Vec::new();
    for i in 0..2 {
        let mut s = open_deflate(addr).await;
        send_raw_text(&mut s, &json!(["1", "1", "room:z", "phx_join", {}]).to_string()).await;
        loop {
            let (_, v) = read_raw_json(&mut s).await;
            if v[3] == "phx_reply" {
                assert_eq!(v[4]["status"], "ok", "socket {i}");
                break;
            }
        }
        zs.push(s);
    }
    let mut plain = open(addr, "vsn=2.0.0", None).await.unwrap();
    send(&mut plain, json!(["1", "1", "room:z", "phx_join", {}])).await;
    assert_eq!(next_text(&mut plain).await[3], "phx_reply");
    let big = json!({"text": "x".repeat(500)});
    endpoint.broadcast("room:z", "big", big.clone()).unwrap();
    endpoint.broadcast("room:z", "small", json!({"a": 1})).unwrap();
    for s in &mut zs {
        // (after the pushes the channel made after its join)
        let (first, v) = loop {
            let (first, v) = read_raw_json(s).await;
            if v[3] == "big" {
                break (first, v);
            }
        };
        assert_eq!(first, 0xC1, "a large broadcast is compressed");
        assert_eq!(v, json!([null, null, "room:z", "big", big]));
        let (first, v) = read_raw_json(s).await;
        assert_eq!(first, 0x81, "a small one is not");
        assert_eq!(v, json!([null, null, "room:z", "small", {"a": 1}]));
    }
    loop {
        let v = next_text(&mut plain).await;
        if v[3] == "big" {
            assert_eq!(v[4], big);
            break;
        }
    }
    assert_eq!(next_text(&mut plain).await[3], "small");
}

/// A socket flooded with broadcasts still reads: its heartbeats are answered
/// between the broadcasts, not after the flood.
#[tokio::test]
async fn heartbeats_are_answered_while_broadcasts_flood_the_socket() {
    let (addr, endpoint) = serve(handler(Log::default())).await;
    let mut ws = open(addr, "vsn=2.0.0&user_id=u1", None).await.unwrap();
    send(&mut ws, json!(["1", "1", "room:flood", "phx_join", {}])).await;
    assert_eq!(next_text(&mut ws).await[3], "phx_reply");
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flood = tokio::spawn({
        let flooding = flooding.clone();
        async move {
            let mut n = 0u64;
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                endpoint.broadcast("room:flood", "tick", json!({"n": n})).unwrap();
                n += 1;
                if n % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    for i in 0..5 {
        let r = format!("hb{i}");
        send(&mut ws, json!([null, r, "phoenix", "heartbeat", {}])).await;
        let mut seen = 0;
        loop {
            let v = next_text(&mut ws).await;
            if v[3] == "phx_reply" {
                assert_eq!(v[1], r.as_str());
                break;
            }
            seen += 1;
            assert!(seen < 200_000, "the heartbeat reply did not come between broadcasts");
        }
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    flood.await.unwrap();
}
