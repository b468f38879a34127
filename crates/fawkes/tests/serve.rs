//! `fawkes::serve` against real clients on loopback: header, idle and body
//! timeouts, the connection cap, WebSocket upgrades and long polls under
//! those limits, and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// The timeouts of these tests: short, with margins for a busy machine.
const LIMIT: Duration = Duration::from_millis(400);
/// Longest a limit may take to act in these tests.
const MARGIN: Duration = Duration::from_millis(2500);

async fn echo(body: Result<Bytes, BytesRejection>) -> Response {
    match body {
        Ok(b) => b.into_response(),
        Err(r) if fawkes::serve::is_body_timeout(&r) => StatusCode::REQUEST_TIMEOUT.into_response(),
        Err(r) => r.into_response(),
    }
}

/// An app with plain routes and the test socket (WebSocket and long poll).
fn app(endpoint: &fawkes::Endpoint, longpoll_window: Duration) -> Router {
    let socket = support::handler(support::Log::default()).configure(|c| {
        c.longpoll = true;
        c.longpoll_window = longpoll_window;
    });
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/peer", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }))
        .route("/slow", get(|| async { slow().await }))
        .route(
            "/read_then_wait",
            post(|body: Bytes| async move {
                tokio::time::sleep(LIMIT * 3).await;
                body
            }),
        )
        .route("/echo", post(echo))
        .merge(endpoint.socket("/socket", socket))
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(800)).await;
    "done"
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    _endpoint: fawkes::Endpoint,
}

/// Serves the app with every timeout at [`LIMIT`], then `configure`.
async fn start(configure: impl FnOnce(fawkes::Serve) -> fawkes::Serve) -> Running {
    let endpoint = fawkes::Endpoint::local();
    let router = app(&endpoint, LIMIT * 3);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = fawkes::serve(listener, router)
        .header_read_timeout(Some(LIMIT))
        .body_timeout(Some(LIMIT))
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
    let server = tokio::spawn(configure(server).into_future());
    Running { addr, stop: Some(stop), server, _endpoint: endpoint }
}

/// One response read from `s`: status, head, body (by content-length).
/// `None` when the connection ends first.
async fn response(s: &mut TcpStream) -> Option<(u16, String, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return Some((status, head, raw[end + 4..end + 4 + len].to_vec()));
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Everything `s` receives until the server closes it, and when that was.
async fn until_closed(s: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(MARGIN * 2, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection");
    (got, Instant::now())
}

fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n")
}

fn assert_between(elapsed: Duration, low: Duration, high: Duration) {
    assert!(elapsed >= low && elapsed <= high, "{elapsed:?} is not within {low:?}..{high:?}");
}

#[tokio::test]
async fn a_request_head_sent_slowly_is_closed_at_the_header_timeout() {
    let r = start(|s| s).await;
    let s = TcpStream::connect(r.addr).await.unwrap();
    let started = Instant::now();
    let (mut read, mut write) = s.into_split();
    // a byte every 50 ms: the head never completes
    let writer = tokio::spawn(async move {
        for b in b"GET /health HTTP/1.1\r\nhost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut got = Vec::new();
    tokio::time::timeout(MARGIN * 2, read.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_between(started.elapsed(), LIMIT - Duration::from_millis(50), LIMIT + MARGIN);
    assert!(got.is_empty(), "closed without an answer: {}", String::from_utf8_lossy(&got));
    writer.abort();
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let r = start(|s| s).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let started = Instant::now();
    let (got, at) = until_closed(&mut s).await;
    assert_between(at - started, LIMIT - Duration::from_millis(50), LIMIT + MARGIN);
    assert!(got.is_empty(), "closed without an answer: {}", String::from_utf8_lossy(&got));
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_header_timeout() {
    let r = start(|s| s).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    // three requests on one connection, each well within the timeout of the
    // previous answer but together longer than it: the timer restarts
    for _ in 0..3 {
        s.write_all(get_req("/health").as_bytes()).await.unwrap();
        let (status, _, body) = response(&mut s).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"ok"[..]));
        tokio::time::sleep(LIMIT / 2).await;
    }
    let (status, _, _) = {
        s.write_all(get_req("/health").as_bytes()).await.unwrap();
        response(&mut s).await.unwrap()
    };
    assert_eq!(status, 200);
    let idle_since = Instant::now();
    let (got, at) = until_closed(&mut s).await;
    assert_between(at - idle_since, LIMIT - Duration::from_millis(50), LIMIT + MARGIN);
    assert!(got.is_empty(), "an idle connection is closed without an answer: {}", String::from_utf8_lossy(&got));
}

#[tokio::test]
async fn handlers_see_the_client_address() {
    let r = start(|s| s).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(get_req("/peer").as_bytes()).await.unwrap();
    let (status, _, body) = response(&mut s).await.unwrap();
    assert_eq!((status, String::from_utf8(body).unwrap()), (200, me.to_string()));
}

#[tokio::test]
async fn a_body_sent_slowly_is_cut_at_the_body_deadline() {
    let r = start(|s| s).await;
    let s = TcpStream::connect(r.addr).await.unwrap();
    let (mut read, mut write) = s.into_split();
    write.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n").await.unwrap();
    let started = Instant::now();
    // a byte every 50 ms: a timer restarted by each chunk would never fire
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut got = Vec::new();
    tokio::time::timeout(MARGIN * 2, read.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_between(started.elapsed(), LIMIT - Duration::from_millis(50), LIMIT + MARGIN);
    assert!(got.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&got));
    assert!(!writer.is_finished() || started.elapsed() < Duration::from_secs(5));
    writer.abort();

    // a body that arrives in time is read whole
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhel").await.unwrap();
    tokio::time::sleep(LIMIT / 4).await;
    s.write_all(b"lo").await.unwrap();
    let (status, _, body) = response(&mut s).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"hello"[..]));
}

#[tokio::test]
async fn requests_being_answered_and_long_polls_are_not_cut() {
    let r = start(|s| s).await;
    // a handler that answers after twice the header and body timeouts
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(get_req("/slow").as_bytes()).await.unwrap();
    let (status, _, body) = response(&mut s).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"done"[..]));
    // the connection is kept alive after it
    s.write_all(get_req("/health").as_bytes()).await.unwrap();
    assert_eq!(response(&mut s).await.unwrap().0, 200);
    // a handler that reads its body and then waits three times the deadline
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"POST /read_then_wait HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi").await.unwrap();
    let (status, _, body) = response(&mut s).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"hi"[..]));
    // a long poll waits its whole window (three times the limits) for messages
    let opened = support::lp(r.addr, "GET", "vsn=2.0.0", "").await;
    assert_eq!(opened["status"], 410);
    let token = opened["token"].as_str().unwrap().to_owned();
    let query = format!("vsn=2.0.0&token={}", url_encode(&token));
    let join = r#"["1","1","room:lobby","phx_join",{}]"#;
    assert_eq!(support::lp(r.addr, "POST", &query, join).await["status"], 200);
    let joined = support::lp(r.addr, "GET", &query, "").await;
    assert_eq!(joined["status"], 200, "{joined}");
    let started = Instant::now();
    let empty = support::lp(r.addr, "GET", &query, "").await;
    assert_eq!(empty, json!({"status": 204, "token": token, "messages": []}));
    assert!(started.elapsed() >= LIMIT * 3 - Duration::from_millis(100), "{:?}", started.elapsed());
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn at_the_connection_cap_a_further_connection_waits_until_one_closes() {
    let r = start(|s| s.header_read_timeout(Some(Duration::from_secs(30))).max_connections(2)).await;
    let first = TcpStream::connect(r.addr).await.unwrap();
    let mut second = TcpStream::connect(r.addr).await.unwrap();
    second.write_all(get_req("/health").as_bytes()).await.unwrap();
    assert_eq!(response(&mut second).await.unwrap().0, 200, "two are served");
    // the third is connected by the kernel but not accepted
    let mut third = TcpStream::connect(r.addr).await.unwrap();
    third.write_all(get_req("/health").as_bytes()).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(600), response(&mut third)).await.is_err(), "served at the cap");
    let closed = Instant::now();
    drop(first);
    let answered = tokio::time::timeout(MARGIN, response(&mut third)).await.expect("served once one closed");
    assert_eq!(answered.unwrap().0, 200);
    assert!(closed.elapsed() < MARGIN);
}

#[tokio::test]
async fn slow_clients_at_the_cap_are_dropped_and_health_answers_again() {
    let r = start(|s| s.max_connections(3)).await;
    // three clients sending their heads a byte at a time take every slot
    let mut slow = Vec::new();
    for _ in 0..3 {
        let s = TcpStream::connect(r.addr).await.unwrap();
        let (mut read, mut write) = s.into_split();
        slow.push(tokio::spawn(async move {
            for b in b"GET /health HTTP/1.1\r\nx-a: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if write.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut got = Vec::new();
            let _ = read.read_to_end(&mut got).await;
            got
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut health = TcpStream::connect(r.addr).await.unwrap();
    health.write_all(get_req("/health").as_bytes()).await.unwrap();
    let (status, _, _) = tokio::time::timeout(LIMIT + MARGIN, response(&mut health)).await.unwrap().unwrap();
    assert_eq!(status, 200);
    // answered once the slow ones were closed at their header timeout
    assert!(started.elapsed() >= LIMIT / 2, "{:?}", started.elapsed());
    for s in slow {
        let got = tokio::time::timeout(MARGIN, s).await.unwrap().unwrap();
        assert!(got.is_empty(), "closed without an answer: {}", String::from_utf8_lossy(&got));
    }
    // and later ones at once
    let started = Instant::now();
    let mut again = TcpStream::connect(r.addr).await.unwrap();
    again.write_all(get_req("/health").as_bytes()).await.unwrap();
    assert_eq!(response(&mut again).await.unwrap().0, 200);
    assert!(started.elapsed() < LIMIT, "{:?}", started.elapsed());
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn ws_reply(ws: &mut Ws, reference: &str) -> Value {
    loop {
        let msg = tokio::time::timeout(MARGIN, ws.next()).await.expect("a reply in time").unwrap().unwrap();
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v[1] == reference && v[3] == "phx_reply" {
            return v[4].clone();
        }
    }
}

#[tokio::test]
async fn websockets_are_upgraded_outlive_the_timeouts_and_count_toward_the_cap() {
    let r = start(|s| s.max_connections(1)).await;
    let (mut ws, res) =
        tokio_tungstenite::connect_async(format!("ws://{}/socket/websocket?vsn=2.0.0", r.addr)).await.unwrap();
    assert_eq!(res.status(), 101);
    ws.send(Message::text(r#"["1","1","room:lobby","phx_join",{}]"#)).await.unwrap();
    assert_eq!(ws_reply(&mut ws, "1").await["status"], "ok");
    // idle for three header timeouts (and body deadlines): still open
    tokio::time::sleep(LIMIT * 3).await;
    ws.send(Message::text(r#"["1","2","room:lobby","echo",{"still":"here"}]"#)).await.unwrap();
    assert_eq!(ws_reply(&mut ws, "2").await, json!({"status": "ok", "response": {"still": "here"}}));
    // the upgraded connection keeps its slot: a second client waits
    let mut waiting = TcpStream::connect(r.addr).await.unwrap();
    waiting.write_all(get_req("/health").as_bytes()).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(600), response(&mut waiting)).await.is_err());
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let answered =
        tokio::time::timeout(MARGIN, response(&mut waiting)).await.expect("served once the WebSocket closed");
    assert_eq!(answered.unwrap().0, 200);
}

#[tokio::test]
async fn graceful_shutdown_answers_running_requests_closes_idle_ones_and_stops() {
    let mut r = start(|s| s.header_read_timeout(Some(Duration::from_secs(30)))).await;
    let mut idle = TcpStream::connect(r.addr).await.unwrap();
    idle.write_all(get_req("/health").as_bytes()).await.unwrap();
    assert_eq!(response(&mut idle).await.unwrap().0, 200);
    let mut running = TcpStream::connect(r.addr).await.unwrap();
    running.write_all(get_req("/slow").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    r.stop.take().unwrap().send(()).unwrap();
    // the idle connection is closed at once, without an answer
    let (got, at) = until_closed(&mut idle).await;
    assert!(got.is_empty());
    assert!(at - signalled < Duration::from_millis(500), "{:?}", at - signalled);
    // the running request is answered, then its connection closed
    let (status, head, body) = response(&mut running).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"done"[..]));
    assert!(head.contains("connection: close"), "{head}");
    until_closed(&mut running).await;
    tokio::time::timeout(MARGIN, &mut r.server).await.expect("the server stopped").unwrap().unwrap();
    assert!(TcpStream::connect(r.addr).await.is_err(), "nothing listens after the shutdown");
}

#[tokio::test]
async fn requests_still_running_at_the_shutdown_timeout_are_cut() {
    let mut r = start(|s| s.shutdown_timeout(Duration::from_millis(200))).await;
    let mut running = TcpStream::connect(r.addr).await.unwrap();
    running.write_all(get_req("/slow").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    r.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(MARGIN, &mut r.server).await.expect("the server stopped").unwrap().unwrap();
    assert_between(signalled.elapsed(), Duration::from_millis(150), Duration::from_millis(700));
    let (got, _) = until_closed(&mut running).await;
    assert!(got.is_empty(), "cut without an answer: {}", String::from_utf8_lossy(&got));
}
