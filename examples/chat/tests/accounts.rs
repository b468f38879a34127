//! Accounts and what text comes in: registration and sign-in with
//! passwords, names unique after NFKC and case folding, look-alike and
//! invisible tricks refused, sessions that end at sign-out and expire,
//! sign-in rate limits, name-only sign-in only behind its flag; and NUL and
//! other control characters refused with the error shape wherever text
//! enters, over the API and over the channel. Over real HTTP, served by
//! `fawkes::serve` (which gives handlers the client's address). SQLite by
//! default; CHAT_TEST_DATABASE_URL=postgres://... for PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fawkes::SocketService;
use fawkes_chat::socket::ChatSocket;
use fawkes_test::{any_payload, assert_reply, connect};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static N: AtomicU64 = AtomicU64::new(0);

const PASSWORD: &str = "correct horse battery staple";

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}{}{}", t % 1_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

struct Server {
    addr: SocketAddr,
    service: SocketService<ChatSocket>,
}

async fn start_with(session_max_age: Duration, dev_sign_in: bool) -> Server {
    let url = match std::env::var("CHAT_TEST_DATABASE_URL") {
        Ok(u) => u,
        Err(_) => {
            let dir = std::env::temp_dir().join(unique("fawkes-chat-accounts-"));
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}?mode=rwc", dir.join("chat.db").display())
        }
    };
    let config = fawkes_chat::Config {
        secret_key_base: Some("chat-test-secret-key-base-0123456789abcdef".into()),
        session_max_age,
        dev_sign_in,
        ..fawkes_chat::Config::new(url)
    };
    let (router, service, _) = fawkes_chat::build(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(fawkes::serve(listener, router).into_future());
    Server { addr, service }
}

async fn start() -> Server {
    start_with(fawkes_chat::DEFAULT_SESSION_MAX_AGE, false).await
}

/// Status, `Retry-After` header and JSON body of a request.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let retry = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("retry-after").then(|| v.trim().to_owned())
    });
    let rest = if head.to_lowercase().contains("transfer-encoding: chunked") {
        rest.split("\r\n").nth(1).unwrap_or("").to_owned()
    } else {
        rest.to_owned()
    };
    (status, retry, serde_json::from_str(&rest).unwrap_or(Value::Null))
}

/// Asserts a 422 in the API's shape whose `fields[field]` is `why`.
#[track_caller]
fn invalid(answer: (u16, Option<String>, Value), field: &str, why: &str) {
    let (status, _, v) = answer;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["status"], 422, "{v}");
    assert_eq!(v["error"]["message"], "invalid parameters", "{v}");
    assert_eq!(v["error"]["fields"][field], why, "{v}");
}

async fn register(s: &Server, name: &str) -> (String, i64) {
    let (status, _, v) =
        http(s.addr, "POST", "/api/v1/users", None, Some(json!({"name": name, "password": PASSWORD}))).await;
    assert_eq!(status, 201, "{v}");
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'), "{v}");
    (v["token"].as_str().unwrap().to_owned(), v["user"]["id"].as_i64().unwrap())
}

async fn sign_in(s: &Server, name: &str, password: &str) -> (u16, Option<String>, Value) {
    http(s.addr, "POST", "/api/v1/sessions", None, Some(json!({"name": name, "password": password}))).await
}

#[tokio::test]
async fn names_are_unique_after_normalisation_and_passwords_are_checked() {
    let s = start().await;
    let name = unique("Alice");
    let (token, id) = register(&s, &name).await;
    assert_eq!(http(s.addr, "GET", "/api/v1/rooms", Some(&token), None).await.0, 200);
    // the same name in other case and compatibility forms is taken
    let fullwidth: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { char::from_u32(c as u32 + 0xFEE0).unwrap() } else { c })
        .collect();
    for same in [name.to_uppercase(), name.to_lowercase(), fullwidth, format!("  {name} ")] {
        let body = json!({"name": same, "password": PASSWORD});
        invalid(http(s.addr, "POST", "/api/v1/users", None, Some(body)).await, "name", "has already been taken");
    }
    // sign in by any form of the name, with the password
    let (status, _, v) = sign_in(&s, &name.to_lowercase(), PASSWORD).await;
    assert_eq!((status, v["user"]["id"].as_i64(), v["user"]["name"].as_str()), (201, Some(id), Some(name.as_str())));
    let second = v["token"].as_str().unwrap().to_owned();
    assert_ne!(second, token, "a session each");
    // a wrong password and an unknown name get the same answer
    for (who, password) in [(name.as_str(), "wrong password"), ("nobody-at-all", PASSWORD)] {
        let (status, _, v) = sign_in(&s, who, password).await;
        assert_eq!((status, v["error"]["message"].as_str()), (401, Some("invalid name or password")), "{v}");
    }
    // without a password there is no name-only sign-in (no flag)
    let (status, _, v) = http(s.addr, "POST", "/api/v1/sessions", None, Some(json!({"name": name}))).await;
    assert_eq!((status, v["error"]["fields"]["password"].as_str()), (422, Some("must be a string")), "{v}");
    let short = json!({"name": unique("bob"), "password": "short"});
    invalid(
        http(s.addr, "POST", "/api/v1/users", None, Some(short)).await,
        "password",
        "should be at least 8 characters",
    );
    let long = json!({"name": unique("bob"), "password": "x".repeat(257)});
    invalid(
        http(s.addr, "POST", "/api/v1/users", None, Some(long)).await,
        "password",
        "should be at most 256 characters",
    );
}

#[tokio::test]
async fn invisible_bidi_control_and_look_alike_names_are_refused() {
    let s = start().await;
    let base = unique("mallory");
    for (name, why) in [
        (format!("{base}\u{200b}"), "must not contain invisible characters"),
        (format!("\u{feff}{base}"), "must not contain invisible characters"),
        (format!("{base}\u{202e}"), "must not contain bidirectional control characters"),
        (format!("{base}\u{0}"), "must not contain control characters"),
        (format!("{base}\u{1b}[2J"), "must not contain control characters"),
        (format!("{base}\n"), "must not contain control characters"),
        (format!("p\u{430}ypal{base}"), "must not mix Latin, Greek and Cyrillic letters"),
        ("   ".to_owned(), "can't be blank"),
        ("x".repeat(41), "should be at most 40 characters"),
    ] {
        let body = json!({"name": name, "password": PASSWORD});
        invalid(http(s.addr, "POST", "/api/v1/users", None, Some(body.clone())).await, "name", why);
        invalid(http(s.addr, "POST", "/api/v1/sessions", None, Some(body)).await, "name", why);
    }
    let body = json!({"name": base, "password": format!("{PASSWORD}\u{0}")});
    invalid(
        http(s.addr, "POST", "/api/v1/users", None, Some(body)).await,
        "password",
        "must not contain control characters",
    );
}

#[tokio::test]
async fn sign_out_ends_the_session_and_closes_its_sockets() {
    let s = start().await;
    let name = unique("carol");
    let (token, _) = register(&s, &name).await;
    let (_, _, v) = sign_in(&s, &name, PASSWORD).await;
    let other = v["token"].as_str().unwrap().to_owned();
    let socket = connect(&s.service, json!({"token": token})).await.unwrap();
    let kept = connect(&s.service, json!({"token": other})).await.unwrap();
    let (status, _, _) = http(s.addr, "DELETE", "/api/v1/sessions", Some(&token), None).await;
    assert_eq!(status, 204);
    assert!(socket.wait_closed(Duration::from_secs(5)).await, "the session's socket is closed");
    let (status, _, v) = http(s.addr, "GET", "/api/v1/rooms", Some(&token), None).await;
    assert_eq!((status, v["error"]["message"].as_str()), (401, Some("session expired or signed out")), "{v}");
    assert!(connect(&s.service, json!({"token": token})).await.is_err(), "the socket refuses it");
    // the other session goes on
    assert!(!kept.wait_closed(Duration::from_millis(300)).await);
    assert_eq!(http(s.addr, "GET", "/api/v1/rooms", Some(&other), None).await.0, 200);
    assert!(connect(&s.service, json!({"token": other})).await.is_ok());
}

#[tokio::test]
async fn sessions_expire() {
    let s = start_with(Duration::from_secs(1), false).await;
    let (token, _) = register(&s, &unique("dave")).await;
    assert_eq!(http(s.addr, "GET", "/api/v1/rooms", Some(&token), None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _, v) = http(s.addr, "GET", "/api/v1/rooms", Some(&token), None).await;
    assert_eq!((status, v["error"]["status"].as_u64()), (401, Some(401)), "{v}");
    assert!(connect(&s.service, json!({"token": token})).await.is_err());
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_name_and_per_address() {
    let s = start().await;
    let name = unique("erin");
    register(&s, &name).await;
    // five tries a name, then one every 12 s
    for _ in 0..5 {
        assert_eq!(sign_in(&s, &name, "wrong password").await.0, 401);
    }
    let (status, retry, v) = sign_in(&s, &name, PASSWORD).await;
    assert_eq!((status, v["error"]["message"].as_str()), (429, Some("rate limited")), "{v}");
    let wait = v["error"]["retry_after"].as_u64().unwrap();
    assert!((1..=12_000).contains(&wait), "{wait}");
    assert_eq!(retry, Some(wait.div_ceil(1000).to_string()));
    // another name is not concerned, until the address's limit: 20 at
    // once (the registration and the six tries above took 7)
    let mut statuses = Vec::new();
    for i in 0..16 {
        statuses.push(sign_in(&s, &format!("{name}x{i}"), "wrong password").await.0);
    }
    assert!(statuses[..13].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

#[tokio::test]
async fn name_only_sign_in_needs_the_development_flag() {
    let s = start_with(fawkes_chat::DEFAULT_SESSION_MAX_AGE, true).await;
    let name = unique("frank");
    let (status, _, v) = http(s.addr, "POST", "/api/v1/sessions", None, Some(json!({"name": name}))).await;
    assert_eq!(status, 201, "{v}");
    let id = v["user"]["id"].as_i64().unwrap();
    let (_, _, v) = http(s.addr, "POST", "/api/v1/sessions", None, Some(json!({"name": name.to_uppercase()}))).await;
    assert_eq!(v["user"]["id"].as_i64(), Some(id), "{v}");
    // invisible tricks are refused there too
    let (status, _, _) =
        http(s.addr, "POST", "/api/v1/sessions", None, Some(json!({"name": format!("{name}\u{200b}")}))).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn control_characters_are_refused_wherever_text_enters() {
    let s = start().await;
    let (token, _) = register(&s, &unique("grace")).await;
    let (_, to) = register(&s, &unique("heidi")).await;
    let t = Some(token.as_str());
    // room names: NUL, controls, blank
    for (name, why) in [
        (json!("lobby\u{0}"), "must not contain control characters"),
        (json!("lob\u{7}by"), "must not contain control characters"),
        (json!(""), "can't be blank"),
        (json!("  "), "can't be blank"),
        (json!(null), "must be a string"),
    ] {
        invalid(http(s.addr, "POST", "/api/v1/rooms", t, Some(json!({"name": name}))).await, "name", why);
    }
    let (status, _, v) = http(s.addr, "POST", "/api/v1/rooms", t, Some(json!({"name": unique("room")}))).await;
    assert_eq!(status, 201, "{v}");
    let room = v["data"]["id"].as_i64().unwrap();
    // messages over the API and notifications
    let path = format!("/api/v1/rooms/{room}/messages");
    for body in ["hi\u{0}", "\u{1b}[31mred", "\u{85}"] {
        invalid(
            http(s.addr, "POST", &path, t, Some(json!({"body": body}))).await,
            "body",
            "must not contain control characters",
        );
        let note = json!({"user_id": to, "message": body});
        invalid(
            http(s.addr, "POST", "/api/v1/notifications", t, Some(note)).await,
            "message",
            "must not contain control characters",
        );
    }
    // line breaks and tabs are text
    let (status, _, _) = http(s.addr, "POST", &path, t, Some(json!({"body": "two\nlines\tand a tab"}))).await;
    assert_eq!(status, 201);
    invalid(http(s.addr, "GET", &format!("{path}?before=%00"), t, None).await, "before", "must be a message id");
    let cid = json!({"body": "x", "client_id": "a\u{0}b"});
    invalid(http(s.addr, "POST", &path, t, Some(cid)).await, "client_id", "must be 1 to 64 letters, digits, - or _");

    // over the channel: an error reply, the channel stays, nothing stored
    let socket = connect(&s.service, json!({"token": token})).await.unwrap();
    let (_, ch) = socket.join(&format!("room:{room}"), json!({})).await.unwrap();
    for _ in 0..2 {
        let r = ch.push("new_message", json!({"body": "nul\u{0}here", "client_id": "nul-1"}));
        assert_reply!(
            ch,
            r,
            "error",
            json!({"reason": "invalid", "errors": {"body": "must not contain control characters"}})
        );
    }
    let r = ch.push("update_status", json!({"status": "busy\u{0}"}));
    assert_reply!(ch, r, "error", any_payload);
    let r = ch.push("new_message", json!({"body": "after", "client_id": "after-1"}));
    assert_reply!(ch, r, "ok", any_payload);
    let (_, _, v) = http(s.addr, "GET", &format!("{path}?limit=100"), t, None).await;
    let bodies: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["two\nlines\tand a tab", "after"]);
}
