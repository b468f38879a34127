//! Every error of the JSON API, axum's own rejections included, answers in
//! the API's one shape; the bearer scheme is case-insensitive; notifications
//! are bounded in size and rate limited per sender. Over real HTTP, served
//! by `fawkes::serve`. SQLite by default; CHAT_TEST_DATABASE_URL as in
//! tests/chat.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fawkes_chat::chat::MAX_BODY;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static N: AtomicU64 = AtomicU64::new(0);

/// The body deadline of the test server.
const BODY_TIMEOUT: Duration = Duration::from_millis(400);

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}{}{}", t % 1_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

async fn start() -> SocketAddr {
    let url = match std::env::var("CHAT_TEST_DATABASE_URL") {
        Ok(u) => u,
        Err(_) => {
            let dir = std::env::temp_dir().join(unique("fawkes-chat-api-errors-"));
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}?mode=rwc", dir.join("chat.db").display())
        }
    };
    let config = fawkes_chat::Config {
        secret_key_base: Some("chat-test-secret-key-base-0123456789abcdef".into()),
        ..fawkes_chat::Config::new(url)
    };
    let (router, _, _) = fawkes_chat::build(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(fawkes::serve(listener, router).body_timeout(Some(BODY_TIMEOUT)).into_future());
    addr
}

struct Answer {
    status: u16,
    /// Lowercased names.
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Asserts the API's error shape with this status, and returns the
    /// message.
    #[track_caller]
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{} {:?}", self.body, self.headers);
        assert_eq!(self.header("content-type"), Some("application/json"), "{} {:?}", self.body, self.headers);
        assert_eq!(self.body["error"]["status"], json!(status), "{}", self.body);
        let message = self.body["error"]["message"].as_str().unwrap_or_else(|| panic!("a message: {}", self.body));
        assert!(!message.is_empty());
        message.to_owned()
    }
}

/// Sends `head` (the request line and headers, without the blank line) and
/// `body`, and reads the answer.
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Answer {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let request = [format!("{head}\r\nhost: x\r\nconnection: close\r\n\r\n").into_bytes(), body.to_vec()].concat();
    // written while the answer is read: a large body does not fit in the
    // socket's buffers
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        write
    });
    let mut got = Vec::new();
    read.read_to_end(&mut got).await.unwrap();
    drop(writer.await);
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").expect("an answer");
    let head = String::from_utf8_lossy(&got[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned())).collect();
    let mut rest = &got[split + 4..];
    let mut body = Vec::new();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked") {
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
    } else {
        body = rest.to_vec();
    }
    Answer { status, headers, body: serde_json::from_slice(&body).unwrap_or(Value::Null) }
}

/// A request with a JSON content type and, when given, a bearer token.
async fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
    let auth = token.map(|t| format!("\r\nauthorization: Bearer {t}")).unwrap_or_default();
    let head =
        format!("{method} {path} HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}{auth}", body.len());
    raw(addr, &head, body).await
}

async fn sign_in(addr: SocketAddr) -> (String, i64) {
    let body = json!({"name": unique("u"), "password": "correct horse battery staple"}).to_string();
    let a = call(addr, "POST", "/api/v1/users", None, body.as_bytes()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    (a.body["token"].as_str().unwrap().to_owned(), a.body["user"]["id"].as_i64().unwrap())
}

#[tokio::test]
async fn path_and_query_rejections_are_in_the_shape() {
    let addr = start().await;
    let (token, _) = sign_in(addr).await;
    let a = call(addr, "POST", "/api/v1/rooms/abc/members", Some(&token), b"").await;
    assert!(a.error(400).contains("abc"), "{}", a.body);
    call(addr, "POST", "/api/v1/rooms/99999999999999999999/members", Some(&token), b"").await.error(400);
    call(addr, "DELETE", "/api/v1/blocks/x", Some(&token), b"").await.error(400);
    let room = call(addr, "POST", "/api/v1/rooms", Some(&token), json!({"name": unique("r")}).to_string().as_bytes())
        .await
        .body["data"]["id"]
        .as_i64()
        .unwrap();
    let a = call(addr, "GET", &format!("/api/v1/rooms/{room}/messages?limit=1&limit=2"), Some(&token), b"").await;
    assert!(a.error(400).contains("limit"), "{}", a.body);
    let a = call(addr, "GET", &format!("/api/v1/rooms/{room}/messages?limit=10"), Some(&token), b"").await;
    assert_eq!((a.status, a.body["data"].clone()), (200, json!([])));
}

#[tokio::test]
async fn body_rejections_are_in_the_shape() {
    let addr = start().await;
    let (token, _) = sign_in(addr).await;
    let name = json!({"name": unique("r")}).to_string();
    // content type: missing, then not JSON
    let head =
        format!("POST /api/v1/rooms HTTP/1.1\r\nauthorization: Bearer {token}\r\ncontent-length: {}", name.len());
    raw(addr, &head, name.as_bytes()).await.error(415);
    let head = format!("{head}\r\ncontent-type: text/plain");
    raw(addr, &head, name.as_bytes()).await.error(415);
    call(addr, "POST", "/api/v1/rooms", Some(&token), b"{\"name\": ").await.error(400);
    assert_eq!(
        call(addr, "POST", "/api/v1/rooms", Some(&token), b"[1]").await.error(422),
        "the body must be a JSON object"
    );
    // over axum's default limit of 2 MiB: the whole body is sent, so the
    // server reads it all before answering
    let big = vec![b' '; 2 * 1024 * 1024 + 1];
    call(addr, "POST", "/api/v1/rooms", Some(&token), &big).await.error(413);
    // a body that does not arrive whole within the deadline
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let head = "POST /api/v1/sessions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 40";
    write.write_all(format!("{head}\r\n\r\n{{\"name\"").as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut got)).await.unwrap().unwrap();
    assert!(started.elapsed() >= BODY_TIMEOUT - Duration::from_millis(50), "{:?}", started.elapsed());
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"]["status"], 408);
    drop(write);
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths_are_in_the_shape() {
    let addr = start().await;
    let (token, _) = sign_in(addr).await;
    let a = call(addr, "PUT", "/api/v1/rooms", Some(&token), b"").await;
    assert_eq!(a.error(405), "method not allowed");
    let allow = a.header("allow").unwrap_or_default().to_ascii_uppercase();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    call(addr, "GET", "/api/v1/sessions", None, b"").await.error(405);
    call(addr, "PATCH", "/api/v1/notifications", Some(&token), b"").await.error(405);
    for path in ["/api/v1/nope", "/api/v2/rooms", "/api", "/api/", "/api/v1/rooms/1/members/2"] {
        assert_eq!(call(addr, "GET", path, Some(&token), b"").await.error(404), "no such endpoint", "{path}");
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let addr = start().await;
    let (token, _) = sign_in(addr).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let a = raw(addr, &format!("GET /api/v1/rooms HTTP/1.1\r\nauthorization: {scheme} {token}"), b"").await;
        assert_eq!(a.status, 200, "{scheme}: {}", a.body);
    }
    for value in [format!("Basic {token}"), format!("Bearer{token}"), "Bearer".to_owned(), "Bearer forged".to_owned()] {
        let a = raw(addr, &format!("GET /api/v1/rooms HTTP/1.1\r\nauthorization: {value}"), b"").await;
        a.error(401);
        assert_eq!(a.header("www-authenticate"), Some("Bearer"), "{value}");
    }
    raw(addr, "GET /api/v1/rooms HTTP/1.1", b"").await.error(401);
}

#[tokio::test]
async fn notifications_are_bounded_like_messages() {
    let addr = start().await;
    let (token, _) = sign_in(addr).await;
    let (_, to) = sign_in(addr).await;
    let send = |message: Value| {
        let token = token.clone();
        async move {
            let body = json!({"user_id": to, "message": message}).to_string();
            call(addr, "POST", "/api/v1/notifications", Some(&token), body.as_bytes()).await
        }
    };
    assert_eq!(send(json!("x".repeat(MAX_BODY))).await.status, 201);
    // the longest message in four-byte characters fits the byte bound
    assert_eq!(send(json!("😀".repeat(MAX_BODY))).await.status, 201);
    let a = send(json!("x".repeat(MAX_BODY + 1))).await;
    a.error(413);
    assert_eq!(a.body["error"]["fields"]["message"], "should be at most 10000 characters");
    let a = send(json!("😀".repeat(MAX_BODY + 1))).await;
    a.error(413);
    assert_eq!(a.body["error"]["fields"]["message"], "should be at most 10000 characters");
    // a body over the byte bound is refused before it is parsed
    let over = vec![b' '; fawkes_chat::api::NOTIFICATION_MAX_BYTES + 1];
    call(addr, "POST", "/api/v1/notifications", Some(&token), &over).await.error(413);
    let a = send(json!("  ")).await;
    assert_eq!(
        (a.error(422), a.body["error"]["fields"]["message"].clone()),
        ("invalid parameters".into(), json!("can't be blank"))
    );
    send(json!(42)).await.error(422);
}

#[tokio::test]
async fn notifications_are_rate_limited_per_sender() {
    let addr = start().await;
    let (token, _) = sign_in(addr).await;
    let (other, _) = sign_in(addr).await;
    let (_, to) = sign_in(addr).await;
    let body = json!({"user_id": to, "message": "hi"}).to_string();
    // thirty at once: a burst of 20 passes, and what refilled meanwhile
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let (token, body) = (token.clone(), body.clone());
            tokio::spawn(
                async move { call(addr, "POST", "/api/v1/notifications", Some(&token), body.as_bytes()).await },
            )
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    let sent = answers.iter().filter(|a| a.status == 201).count();
    assert!(sent >= 20 && sent <= 20 + refilled, "{sent} sent, {refilled} refilled");
    for a in answers.iter().filter(|a| a.status != 201) {
        a.error(429);
    }
    let limited = answers.iter().find(|a| a.status != 201).expect("some are rate limited");
    assert_eq!(limited.error(429), "rate limited");
    let wait = limited.body["error"]["retry_after"].as_u64().unwrap();
    assert!((1..=100).contains(&wait), "at 10 a second a token is at most 100 ms away: {wait}");
    assert_eq!(limited.header("retry-after"), Some("1"));
    // another sender is not concerned
    let a = call(addr, "POST", "/api/v1/notifications", Some(&other), body.as_bytes()).await;
    assert_eq!(a.status, 201, "{}", a.body);
    // and the first may send again once the wait is over
    tokio::time::sleep(Duration::from_millis(wait + 10)).await;
    let a = call(addr, "POST", "/api/v1/notifications", Some(&token), body.as_bytes()).await;
    assert_eq!(a.status, 201, "{}", a.body);
}
