//! The chat end to end below the browser: the JSON API over real HTTP, and
//! the channels through fawkes-test. SQLite by default; set
//! CHAT_TEST_DATABASE_URL=postgres://... to run the same tests on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use fawkes::SocketService;
use fawkes_chat::socket::ChatSocket;
use fawkes_test::{any_payload, assert_push, assert_reply, connect, refute_push, TestChannel, TestSocket};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

static N: AtomicU64 = AtomicU64::new(0);

const PASSWORD: &str = "correct horse battery staple";

/// A name unique to this test run (the PostgreSQL database is shared).
fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}{}{}", t % 1_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

struct Server {
    addr: SocketAddr,
    service: SocketService<ChatSocket>,
    url: String,
    _dir: Option<std::path::PathBuf>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Stops the node: its listener, its connections and what it kept in
    /// memory (topic histories) are gone; the database stays.
    async fn stop(self) {
        self.service.endpoint().shutdown();
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn start() -> Server {
    start_node(None, None).await
}

/// A node whose `/metrics` needs a bearer token.
async fn start_with_metrics_token(token: &str) -> SocketAddr {
    let dir = std::env::temp_dir().join(unique("fawkes-chat-test-"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = fawkes_chat::Config {
        secret_key_base: Some("chat-test-secret-key-base-0123456789abcdef".into()),
        metrics_token: Some(token.to_owned()),
        ..fawkes_chat::Config::new(format!("sqlite://{}?mode=rwc", dir.join("chat.db").display()))
    };
    let (router, _, _) = fawkes_chat::build(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

#[tokio::test]
async fn metrics_can_require_a_bearer_token() {
    let addr = start_with_metrics_token("scrape-secret").await;
    let (status, v) = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!((status, v), (401, json!({"error": "unauthorized"})));
    let (status, _) = http(addr, "GET", "/metrics", Some("wrong"), None).await;
    assert_eq!(status, 401);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: Bearer scrape-secret\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("fawkes_connections"), "{answer}");
}

/// A chat node: on `database` (a fresh one when `None`) and, with `pubsub`,
/// in a cluster.
async fn start_node(database: Option<(String, Option<std::path::PathBuf>)>, pubsub: Option<fawkes::PubSub>) -> Server {
    let (url, dir) = database.unwrap_or_else(|| match std::env::var("CHAT_TEST_DATABASE_URL") {
        Ok(u) => (u, None),
        Err(_) => {
            let dir = std::env::temp_dir().join(unique("fawkes-chat-test-"));
            std::fs::create_dir_all(&dir).unwrap();
            (format!("sqlite://{}?mode=rwc", dir.join("chat.db").display()), Some(dir))
        }
    });
    let config = fawkes_chat::Config {
        secret_key_base: Some("chat-test-secret-key-base-0123456789abcdef".into()),
        pubsub,
        ..fawkes_chat::Config::new(url.clone())
    };
    let (router, service, _) = fawkes_chat::build(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, router).await });
    Server { addr, service, url, _dir: dir, task }
}

async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
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
    let rest = if head.to_lowercase().contains("transfer-encoding: chunked") {
        rest.split("\r\n").nth(1).unwrap_or("").to_owned()
    } else {
        rest.to_owned()
    };
    (status, serde_json::from_str(&rest).unwrap_or(Value::Null))
}

async fn sign_in(s: &Server, name: &str) -> (String, i64) {
    let body = json!({"name": name, "password": PASSWORD});
    let (status, v) = http(s.addr, "POST", "/api/v1/users", None, Some(body)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["user"]["name"], name);
    (v["token"].as_str().unwrap().to_owned(), v["user"]["id"].as_i64().unwrap())
}

async fn room(s: &Server, token: &str) -> i64 {
    let (status, v) = http(s.addr, "POST", "/api/v1/rooms", Some(token), Some(json!({"name": unique("room")}))).await;
    assert_eq!(status, 201, "{v}");
    v["data"]["id"].as_i64().unwrap()
}

async fn join(s: &Server, token: &str, room: i64) -> (TestSocket, TestChannel) {
    let socket = connect(&s.service, json!({"token": token})).await.unwrap();
    let (_, ch) = socket.join(&format!("room:{room}"), json!({})).await.unwrap();
    (socket, ch)
}

#[tokio::test]
async fn the_api_answers_in_its_documented_shapes() {
    let s = start().await;
    let (status, v) = http(s.addr, "POST", "/api/v1/sessions", None, Some(json!({"name": "  "}))).await;
    assert_eq!(
        (status, v["error"]["status"].clone(), v["error"]["fields"]["name"].clone()),
        (422, json!(422), json!("can't be blank"))
    );
    let (status, v) = http(s.addr, "GET", "/api/v1/rooms", None, None).await;
    assert_eq!((status, fawkes_chat::error_status(&v)), (401, Some(401)));
    let (status, _) = http(s.addr, "GET", "/api/v1/rooms", Some("forged"), None).await;
    assert_eq!(status, 401);
    let (token, _) = sign_in(&s, &unique("alice")).await;
    let id = room(&s, &token).await;
    let (status, v) = http(s.addr, "GET", "/api/v1/rooms", Some(&token), None).await;
    assert_eq!(status, 200);
    assert!(v["data"].as_array().unwrap().iter().any(|r| r["id"] == id));
    let (status, v) = http(s.addr, "POST", "/api/v1/rooms/999999999/members", Some(&token), None).await;
    assert_eq!((status, fawkes_chat::error_status(&v)), (404, Some(404)));
    let (other, _) = sign_in(&s, &unique("bob")).await;
    let (status, _) = http(s.addr, "GET", &format!("/api/v1/rooms/{id}/messages"), Some(&other), None).await;
    assert_eq!(status, 403, "history is for members");
    let (status, _) = http(s.addr, "POST", &format!("/api/v1/rooms/{id}/members"), Some(&other), None).await;
    assert_eq!(status, 201);
    let (status, v) = http(s.addr, "GET", &format!("/api/v1/rooms/{id}/messages?limit=500"), Some(&other), None).await;
    assert_eq!((status, v["error"]["fields"]["limit"].is_string()), (422, true));
    let (status, _) = http(s.addr, "GET", "/api/v1/nope", Some(&token), None).await;
    assert_eq!(status, 404);
    let (status, v) = http(s.addr, "GET", "/health", None, None).await;
    assert_eq!((status, v), (200, json!({"status": "ok"})));
    let (status, _) = http(s.addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn messages_are_validated_stored_broadcast_and_paginated() {
    let s = start().await;
    let (ta, a) = sign_in(&s, &unique("alice")).await;
    let id = room(&s, &ta).await;
    let (_sa, ca) = join(&s, &ta, id).await;
    assert_push!(ca, "message_history", json!({"messages": []}));
    for (body, why) in [
        (json!(""), "can't be blank"),
        (json!("x".repeat(10_001)), "should be at most 10000 characters"),
        (json!(42), "must be a string"),
    ] {
        let r = ca.push("new_message", json!({"body": body}));
        assert_reply!(ca, r, "error", json!({"reason": "invalid", "errors": {"body": why}}));
    }
    let r = ca.push("new_message", json!({"body": "x".repeat(10_000)}));
    let reply = assert_reply!(ca, r, "ok", any_payload).to_value().unwrap();
    let first = reply["message_id"].as_i64().unwrap();
    let pushed = assert_push!(ca, "new_message", |v: &Value| v["id"] == first).to_value().unwrap();
    assert_eq!((pushed["user_id"].as_i64(), pushed["inserted_at"].as_str().map(str::len)), (Some(a), Some(24)));
    let mut ids = vec![first];
    for i in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(220)).await;
        let r = ca.push("new_message", json!({"body": format!("m{i}")}));
        ids.push(assert_reply!(ca, r, "ok", any_payload).to_value().unwrap()["message_id"].as_i64().unwrap());
    }
    let (status, v) = http(s.addr, "GET", &format!("/api/v1/rooms/{id}/messages?limit=2"), Some(&ta), None).await;
    assert_eq!(status, 200);
    let got: Vec<i64> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(got, ids[4..].to_vec(), "newest last");
    let (_, v) =
        http(s.addr, "GET", &format!("/api/v1/rooms/{id}/messages?before={}&limit=2", ids[4]), Some(&ta), None).await;
    let got: Vec<i64> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(got, ids[2..4].to_vec());
    // a new joiner gets the history
    let (_sb, cb) = join(&s, &ta, id).await;
    let h = assert_push!(cb, "message_history", any_payload).to_value().unwrap();
    assert_eq!(h["messages"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn joining_needs_membership_and_notifications_are_private() {
    let s = start().await;
    let (ta, a) = sign_in(&s, &unique("alice")).await;
    let (tb, b) = sign_in(&s, &unique("bob")).await;
    let id = room(&s, &ta).await;
    let sb = connect(&s.service, json!({"token": tb})).await.unwrap();
    assert_eq!(sb.join(&format!("room:{id}"), json!({})).await.unwrap_err(), json!({"reason": "not_a_member"}));
    assert_eq!(sb.join(&format!("notifications:{a}"), json!({})).await.unwrap_err(), json!({"reason": "unauthorized"}));
    let (_, notes) = sb.join(&format!("notifications:{b}"), json!({})).await.unwrap();
    let (status, _) =
        http(s.addr, "POST", "/api/v1/notifications", Some(&ta), Some(json!({"user_id": b, "message": "hi bob"})))
            .await;
    assert_eq!(status, 201);
    assert_push!(notes, "new_notification", |v: &Value| v["message"] == "hi bob" && v["from"]["id"] == a);
    assert!(connect(&s.service, json!({"token": "forged"})).await.is_err());
    assert!(connect(&s.service, json!({})).await.is_err());
}

#[tokio::test]
async fn typing_goes_to_the_others_and_blocks_apply_per_recipient() {
    let s = start().await;
    let (ta, a) = sign_in(&s, &unique("alice")).await;
    let (tb, _) = sign_in(&s, &unique("bob")).await;
    let id = room(&s, &ta).await;
    http(s.addr, "POST", &format!("/api/v1/rooms/{id}/members"), Some(&tb), None).await;
    let (_sa, ca) = join(&s, &ta, id).await;
    let (_sb, cb) = join(&s, &tb, id).await;
    let r = ca.push("typing", json!({"typing": true}));
    assert_reply!(ca, r, "ok", json!({}));
    assert_push!(cb, "user_typing", json!({"user_id": a, "typing": true}));
    refute_push!(ca, "user_typing", any_payload);
    // bob blocks alice: he no longer receives her messages, she still does
    let (status, _) = http(s.addr, "POST", "/api/v1/blocks", Some(&tb), Some(json!({"user_id": a}))).await;
    assert_eq!(status, 201);
    let r = ca.push("new_message", json!({"body": "can you see this?"}));
    assert_reply!(ca, r, "ok", any_payload);
    assert_push!(ca, "new_message", |v: &Value| v["body"] == "can you see this?");
    refute_push!(cb, "new_message", |v: &Value| v["body"] == "can you see this?");
    let (status, _) = http(s.addr, "DELETE", &format!("/api/v1/blocks/{a}"), Some(&tb), None).await;
    assert_eq!(status, 204);
    let r = ca.push("new_message", json!({"body": "and now?"}));
    assert_reply!(ca, r, "ok", any_payload);
    assert_push!(cb, "new_message", |v: &Value| v["body"] == "and now?");
}

#[tokio::test]
async fn messages_are_rate_limited_per_user() {
    let s = start().await;
    let (ta, _) = sign_in(&s, &unique("alice")).await;
    let id = room(&s, &ta).await;
    let (_sa, ca) = join(&s, &ta, id).await;
    let refs: Vec<_> = (0..12).map(|i| ca.push("new_message", json!({"body": format!("spam {i}")}))).collect();
    let mut limited = 0;
    for r in refs {
        let (status, p) = ca.wait_reply(&r, std::time::Duration::from_secs(5)).await.unwrap();
        if status == "error" {
            assert_eq!(p.to_value().unwrap()["reason"], "rate_limited");
            limited += 1;
        }
    }
    assert_eq!(limited, 2, "a burst of 10 passes");
}

/// Typing and status changes reach everyone in the room: a flood of them
/// from one person's tabs is refused with `rate_limited` past a human pace,
/// the channels stay up, and others are not held back.
#[tokio::test]
async fn typing_and_status_floods_are_limited_per_user_across_tabs() {
    let s = start().await;
    let (ta, _) = sign_in(&s, &unique("alice")).await;
    let (tb, _) = sign_in(&s, &unique("bob")).await;
    let id = room(&s, &ta).await;
    http(s.addr, "POST", &format!("/api/v1/rooms/{id}/members"), Some(&tb), None).await;
    let (_s1, tab1) = join(&s, &ta, id).await;
    let (_s2, tab2) = join(&s, &ta, id).await;
    let mut refs = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..150 {
        let tab = if i % 2 == 0 { &tab1 } else { &tab2 };
        let (event, payload) = if i % 3 == 0 {
            ("update_status", json!({"status": if i % 2 == 0 { "away" } else { "busy" }}))
        } else {
            ("typing", json!({"typing": i % 2 == 0}))
        };
        refs.push((tab, tab.push(event, payload)));
    }
    let (mut ok, mut limited) = (0, 0);
    for (tab, r) in refs {
        let (status, p) = tab.wait_reply(&r, std::time::Duration::from_secs(5)).await.unwrap();
        if status == "ok" {
            ok += 1;
        } else {
            assert_eq!(p.to_value().unwrap()["reason"], "rate_limited");
            limited += 1;
        }
    }
    // a status change is stored: what refilled (20 a second) meanwhile passes too
    let refilled = (started.elapsed().as_secs_f64() * 20.0).ceil() as usize;
    assert!(
        ok >= 100 && ok <= 100 + refilled,
        "bursts of 100 per person across tabs: {ok} passed, {refilled} refilled"
    );
    assert_eq!(ok + limited, 150);
    // the channels are up and messages still go out
    let r = tab1.push("new_message", json!({"body": "still here"}));
    assert_reply!(tab1, r, "ok", any_payload);
    // bob is not limited by alice's spending
    let (_sb, cb) = join(&s, &tb, id).await;
    let r = cb.push("typing", json!({"typing": true}));
    assert_reply!(cb, r, "ok", json!({}));
}

#[tokio::test]
async fn presence_has_names_statuses_and_one_entry_per_person() {
    let s = start().await;
    let name = unique("alice");
    let (ta, a) = sign_in(&s, &name).await;
    let id = room(&s, &ta).await;
    let (_s1, c1) = join(&s, &ta, id).await;
    let d = assert_push!(c1, "presence_diff", any_payload).to_value().unwrap();
    let entry = &d["joins"][a.to_string()];
    assert_eq!(
        (entry["user"]["name"].as_str(), entry["metas"][0]["status"].as_str()),
        (Some(name.as_str()), Some("online"))
    );
    // a second tab: the same key, two metas
    let (_s2, c2) = join(&s, &ta, id).await;
    let state = assert_push!(c2, "presence_state", any_payload).to_value().unwrap();
    assert_eq!(state[a.to_string()]["metas"].as_array().unwrap().len(), 1);
    let d = assert_push!(c1, "presence_diff", any_payload).to_value().unwrap();
    assert_eq!(d["joins"][a.to_string()]["user"]["name"].as_str(), Some(name.as_str()));
    let r = c1.push("update_status", json!({"status": "away"}));
    assert_reply!(c1, r, "ok", json!({}));
    assert_push!(c2, "presence_diff", |v: &Value| v["joins"][a.to_string()]["metas"][0]["status"] == "away");
    let r = c1.push("update_status", json!({"status": "sleeping"}));
    assert_reply!(c1, r, "error", any_payload);
}

/// Two chat nodes on one database and one Redis: a message sent on one node
/// reaches members on the other, and a notification posted to one node's
/// API reaches the user's socket on the other.
#[tokio::test]
async fn two_nodes_serve_one_chat() {
    let redis = fawkes_redis::test_server::RedisServer::start();
    let cluster = |name: &str| fawkes_redis::connect(fawkes_redis::RedisConfig::new(redis.url(), name));
    let a = start_node(None, Some(cluster("chat-a").await.unwrap())).await;
    let b = start_node(Some((a.url.clone(), None)), Some(cluster("chat-b").await.unwrap())).await;
    let (ta, alice) = sign_in(&a, &unique("alice")).await;
    let (tb, bob) = sign_in(&b, &unique("bob")).await;
    let id = room(&a, &ta).await;
    let (status, _) = http(b.addr, "POST", &format!("/api/v1/rooms/{id}/members"), Some(&tb), None).await;
    assert_eq!(status, 201);
    let (_sa, ca) = join(&a, &ta, id).await;
    let (sb, cb) = join(&b, &tb, id).await;
    let r = ca.push("new_message", json!({"body": "across nodes"}));
    assert_reply!(ca, r, "ok", any_payload);
    assert_push!(cb, "new_message", |v: &Value| v["body"] == "across nodes" && v["user_id"] == alice);
    // bob blocks alice through the other node: node b's cached list follows
    let (status, _) = http(a.addr, "POST", "/api/v1/blocks", Some(&tb), Some(json!({"user_id": alice}))).await;
    assert_eq!(status, 201);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = ca.push("new_message", json!({"body": "blocked now"}));
    assert_reply!(ca, r, "ok", any_payload);
    refute_push!(cb, "new_message", |v: &Value| v["body"] == "blocked now");
    let (_, notes) = sb.join(&format!("notifications:{bob}"), json!({})).await.unwrap();
    let notify = |message: &'static str| {
        let ta = ta.clone();
        async move {
            let body = json!({"user_id": bob, "message": message});
            http(a.addr, "POST", "/api/v1/notifications", Some(&ta), Some(body)).await.0
        }
    };
    // blocked, her notifications do not reach him either (she is not told)
    assert_eq!(notify("blocked psst").await, 201);
    refute_push!(notes, "new_notification", |v: &Value| v["message"] == "blocked psst");
    let (status, _) = http(b.addr, "DELETE", &format!("/api/v1/blocks/{alice}"), Some(&tb), None).await;
    assert_eq!(status, 204);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(notify("psst").await, 201);
    assert_push!(notes, "new_notification", |v: &Value| v["message"] == "psst");
}

/// The ids of a room's messages, read from the API.
async fn stored(s: &Server, token: &str, room: i64, query: &str) -> Vec<i64> {
    let (status, v) = http(s.addr, "GET", &format!("/api/v1/rooms/{room}/messages?{query}"), Some(token), None).await;
    assert_eq!(status, 200, "{v}");
    v["data"].as_array().unwrap().iter().map(|m| m["id"].as_i64().unwrap()).collect()
}

/// A send with a client id is stored and broadcast once, however often it
/// is retried (from another tab too); the id is its author's: another user
/// may use the same one, and reusing it for another message is refused.
#[tokio::test]
async fn channel_sends_with_a_client_id_are_stored_and_broadcast_once() {
    let s = start().await;
    let (ta, a) = sign_in(&s, &unique("alice")).await;
    let (tb, _) = sign_in(&s, &unique("bob")).await;
    let id = room(&s, &ta).await;
    http(s.addr, "POST", &format!("/api/v1/rooms/{id}/members"), Some(&tb), None).await;
    let (_sa, ca) = join(&s, &ta, id).await;
    let (_sb, cb) = join(&s, &tb, id).await;
    assert_push!(cb, "message_history", json!({"messages": []}));
    let cid = "0b6f3a52-6bd1-4c8e-9d43-2f1a8c3e7a10";
    let r = ca.push("new_message", json!({"body": "once", "client_id": cid}));
    let first = assert_reply!(ca, r, "ok", any_payload).to_value().unwrap()["message_id"].as_i64().unwrap();
    let m = assert_push!(cb, "new_message", any_payload).to_value().unwrap();
    assert_eq!((m["id"].as_i64(), m["client_id"].as_str(), m["user_id"].as_i64()), (Some(first), Some(cid), Some(a)));
    // retried: the reply was lost, or the client resent a buffered push
    let r = ca.push("new_message", json!({"body": "once", "client_id": cid}));
    assert_reply!(ca, r, "ok", json!({"message_id": first}));
    // from another tab of the same person
    let (_s2, tab2) = join(&s, &ta, id).await;
    let r = tab2.push("new_message", json!({"body": "once", "client_id": cid}));
    assert_reply!(tab2, r, "ok", json!({"message_id": first}));
    refute_push!(cb, "new_message", any_payload);
    assert_eq!(stored(&s, &ta, id, "").await, vec![first], "stored once");
    // the same id for another message is a mistake, said as such
    let r = ca.push("new_message", json!({"body": "something else", "client_id": cid}));
    assert_reply!(
        ca,
        r,
        "error",
        json!({"reason": "invalid", "errors": {"client_id": "already used for another message"}})
    );
    for bad in [json!(42), json!(""), json!("not an id!"), json!("x".repeat(65))] {
        let r = ca.push("new_message", json!({"body": "hi", "client_id": bad}));
        assert_reply!(ca, r, "error", |v: &Value| v["errors"]["client_id"].is_string());
    }
    // the id is per author: bob's message with it is his own
    let r = cb.push("new_message", json!({"body": "once", "client_id": cid}));
    let bobs = assert_reply!(cb, r, "ok", any_payload).to_value().unwrap()["message_id"].as_i64().unwrap();
    assert_ne!(bobs, first);
    // without a client id, every send is a message
    let r1 = ca.push("new_message", json!({"body": "twice"}));
    let r2 = ca.push("new_message", json!({"body": "twice"}));
    let m1 = assert_reply!(ca, r1, "ok", any_payload).to_value().unwrap()["message_id"].clone();
    let m2 = assert_reply!(ca, r2, "ok", any_payload).to_value().unwrap()["message_id"].clone();
    assert_ne!(m1, m2);
    assert_eq!(stored(&s, &ta, id, "").await.len(), 4);
}

/// `POST /api/v1/rooms/:id/messages`: stored and broadcast like a channel
/// send; retried with its client id, the same message (200) and no second
/// broadcast; the channel and the API share the ids. `after` pages forward.
#[tokio::test]
async fn api_sends_are_idempotent_and_pages_read_forward() {
    let s = start().await;
    let (ta, a) = sign_in(&s, &unique("alice")).await;
    let (tb, _) = sign_in(&s, &unique("bob")).await;
    let id = room(&s, &ta).await;
    let path = format!("/api/v1/rooms/{id}/messages");
    let (status, v) = http(s.addr, "POST", &path, Some(&tb), Some(json!({"body": "hi"}))).await;
    assert_eq!((status, fawkes_chat::error_status(&v)), (403, Some(403)), "members only");
    let (status, _) =
        http(s.addr, "POST", "/api/v1/rooms/999999999/messages", Some(&ta), Some(json!({"body": "x"}))).await;
    assert_eq!(status, 404);
    http(s.addr, "POST", &format!("/api/v1/rooms/{id}/members"), Some(&tb), None).await;
    let (_sb, cb) = join(&s, &tb, id).await;
    assert_push!(cb, "message_history", json!({"messages": []}));
    let send = json!({"body": "via the API", "client_id": "api-1"});
    let (status, created) = http(s.addr, "POST", &path, Some(&ta), Some(send.clone())).await;
    assert_eq!(status, 201, "{created}");
    let message = created["data"].clone();
    assert_eq!((message["user_id"].as_i64(), message["client_id"].as_str()), (Some(a), Some("api-1")));
    assert_push!(cb, "new_message", message.clone());
    let (status, again) = http(s.addr, "POST", &path, Some(&ta), Some(send)).await;
    assert_eq!((status, again), (200, created.clone()), "the same message, not stored again");
    // the channel answers with the same id
    let (_sa, ca) = join(&s, &ta, id).await;
    let r = ca.push("new_message", json!({"body": "via the API", "client_id": "api-1"}));
    assert_reply!(ca, r, "ok", json!({"message_id": message["id"]}));
    refute_push!(cb, "new_message", any_payload);
    let (status, v) =
        http(s.addr, "POST", &path, Some(&ta), Some(json!({"body": "other", "client_id": "api-1"}))).await;
    assert_eq!((status, v["error"]["fields"]["client_id"].as_str()), (409, Some("already used for another message")));
    for (body, field) in [(json!({"body": " "}), "body"), (json!({"body": "x", "client_id": 7}), "client_id")] {
        let (status, v) = http(s.addr, "POST", &path, Some(&ta), Some(body)).await;
        assert_eq!((status, v["error"]["fields"][field].is_string()), (422, true), "{v}");
    }
    // pages forward with `after`
    let mut ids = vec![message["id"].as_i64().unwrap()];
    for i in 0..4 {
        let (status, v) = http(s.addr, "POST", &path, Some(&ta), Some(json!({"body": format!("m{i}")}))).await;
        assert_eq!(status, 201, "{v}");
        ids.push(v["data"]["id"].as_i64().unwrap());
    }
    assert_eq!(stored(&s, &ta, id, &format!("after={}&limit=2", ids[0])).await, ids[1..3].to_vec());
    assert_eq!(stored(&s, &ta, id, &format!("after={}&limit=2", ids[2])).await, ids[3..5].to_vec());
    assert_eq!(stored(&s, &ta, id, &format!("after={}", ids[4])).await, Vec::<i64>::new());
    assert_eq!(stored(&s, &ta, id, &format!("after={}&before={}", ids[0], ids[3])).await, ids[1..3].to_vec());
    let (status, v) = http(s.addr, "GET", &format!("{path}?after=x"), Some(&ta), None).await;
    assert_eq!((status, v["error"]["fields"]["after"].is_string()), (422, true));
}

/// A client of the chat's socket on a real WebSocket, as a page is.
struct Ws {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    refs: u64,
}

impl Ws {
    async fn connect(s: &Server, token: &str) -> Ws {
        let url = format!("ws://{}/socket/websocket?vsn=2.0.0&token={token}", s.addr);
        Ws { ws: tokio_tungstenite::connect_async(url).await.unwrap().0, refs: 0 }
    }

    /// Joins `room` with `params`; fails unless the join is accepted.
    async fn join(&mut self, room: i64, params: Value) {
        use futures_util::SinkExt;
        self.refs += 1;
        let r = self.refs.to_string();
        let topic = format!("room:{room}");
        let frame = json!([r, r, topic, "phx_join", params]);
        self.ws.send(WsMessage::text(frame.to_string())).await.unwrap();
        let reply = self.expect(&topic, "phx_reply").await;
        assert_eq!(reply[4]["status"], "ok", "{reply}");
    }

    /// The next frame; `None` after 500 ms without one.
    async fn next(&mut self, wait: std::time::Duration) -> Option<Value> {
        use futures_util::StreamExt;
        loop {
            let msg = tokio::time::timeout(wait, self.ws.next()).await.ok()?.expect("open").unwrap();
            if let WsMessage::Text(t) = msg {
                return Some(serde_json::from_str(&t).unwrap());
            }
        }
    }

    /// The next frame of `topic` with `event`, skipping presence frames;
    /// any other frame fails the test.
    async fn expect(&mut self, topic: &str, event: &str) -> Value {
        loop {
            let m = self.next(std::time::Duration::from_secs(5)).await.expect("a frame in time");
            if m[2] == topic && m[3] == event {
                return m;
            }
            assert!(m[3].as_str().is_some_and(|e| e.starts_with("presence_")), "expected {event} on {topic}, got {m}");
        }
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A page that rejoins with the last position it saw gets the messages
/// sent while it was away, in order, before live ones, and not the latest
/// 50 again.
#[tokio::test]
async fn a_rejoin_with_since_gets_the_missed_messages() {
    let s = start().await;
    let (ta, _) = sign_in(&s, &unique("alice")).await;
    let (tb, _) = sign_in(&s, &unique("bob")).await;
    let id = room(&s, &ta).await;
    let topic = format!("room:{id}");
    let path = format!("/api/v1/rooms/{id}/messages");
    http(s.addr, "POST", &format!("/api/v1/rooms/{id}/members"), Some(&tb), None).await;
    let mut bob = Ws::connect(&s, &tb).await;
    bob.join(id, json!({})).await;
    assert_eq!(bob.expect(&topic, "message_history").await[4], json!({"messages": []}));
    let (_, v) = http(s.addr, "POST", &path, Some(&ta), Some(json!({"body": "seen"}))).await;
    let m = bob.expect(&topic, "new_message").await;
    assert_eq!(m[4], v["data"]);
    let last = m[1].as_str().expect("a position in the ref slot").to_owned();
    assert!(last.contains('.') && last.parse::<f64>().is_err(), "{last}");
    bob.close().await;
    let mut missed = Vec::new();
    for i in 0..3 {
        let (_, v) = http(s.addr, "POST", &path, Some(&ta), Some(json!({"body": format!("missed {i}")}))).await;
        missed.push(v["data"].clone());
    }
    let mut bob = Ws::connect(&s, &tb).await;
    bob.join(id, json!({"since": last})).await;
    let mut positions = vec![last];
    for m in &missed {
        let got = bob.expect(&topic, "new_message").await;
        assert_eq!(&got[4], m, "in order");
        positions.push(got[1].as_str().unwrap().to_owned());
    }
    let (_, v) = http(s.addr, "POST", &path, Some(&ta), Some(json!({"body": "live"}))).await;
    let got = bob.expect(&topic, "new_message").await;
    assert_eq!(got[4], v["data"], "then live, with nothing in between");
    positions.push(got[1].as_str().unwrap().to_owned());
    let offsets: Vec<u64> = positions.iter().map(|p| p.split_once('.').unwrap().1.parse().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{positions:?}");
    // a rejoin that is up to date gets nothing but live messages
    bob.close().await;
    let mut bob = Ws::connect(&s, &tb).await;
    bob.join(id, json!({"since": positions.last().unwrap()})).await;
    while let Some(m) = bob.next(std::time::Duration::from_millis(300)).await {
        assert!(m[3].as_str().unwrap().starts_with("presence_"), "nothing to replay: {m}");
    }
}

/// After a restart the history is gone: a rejoin with a position of the
/// previous run gets `history_gap` (reason `epoch`) first, then what the
/// new run kept; the database has the rest, from the last message the page
/// had. A send retried across the restart is still stored once.
#[tokio::test]
async fn after_a_restart_a_rejoin_gets_a_gap_and_the_database_the_rest() {
    let s = start().await;
    let (ta, _) = sign_in(&s, &unique("alice")).await;
    let (tb, _) = sign_in(&s, &unique("bob")).await;
    let id = room(&s, &ta).await;
    let topic = format!("room:{id}");
    let path = format!("/api/v1/rooms/{id}/messages");
    http(s.addr, "POST", &format!("/api/v1/rooms/{id}/members"), Some(&tb), None).await;
    let mut bob = Ws::connect(&s, &tb).await;
    bob.join(id, json!({})).await;
    bob.expect(&topic, "message_history").await;
    http(s.addr, "POST", &path, Some(&ta), Some(json!({"body": "before"}))).await;
    let seen = bob.expect(&topic, "new_message").await;
    let (last, last_id) = (seen[1].clone(), seen[4]["id"].as_i64().unwrap());
    bob.close().await;
    // said while bob is away, then the server restarts
    let (_, v) = http(s.addr, "POST", &path, Some(&ta), Some(json!({"body": "lost 1", "client_id": "c-1"}))).await;
    let lost = v["data"]["id"].as_i64().unwrap();
    let database = (s.url.clone(), None);
    s.stop().await;
    let s = start_node(Some(database), None).await;
    // alice's retry of a send whose reply she did not get
    let (status, v) = http(s.addr, "POST", &path, Some(&ta), Some(json!({"body": "lost 1", "client_id": "c-1"}))).await;
    assert_eq!((status, v["data"]["id"].as_i64()), (200, Some(lost)));
    let (_, v) = http(s.addr, "POST", &path, Some(&ta), Some(json!({"body": "after the restart"}))).await;
    let after = v["data"].clone();
    let mut bob = Ws::connect(&s, &tb).await;
    bob.join(id, json!({"since": last})).await;
    let gap = bob.expect(&topic, "history_gap").await;
    assert_eq!((gap[4]["reason"].as_str(), &gap[4]["since"]), (Some("epoch"), &last), "{gap}");
    let first = gap[4]["from"].clone();
    let replayed = bob.expect(&topic, "new_message").await;
    assert_eq!((&replayed[4], &replayed[1]), (&after, &first), "what the new run kept, once (no retry in it)");
    assert_ne!(replayed[1], last);
    // no latest-50 push: the page reads from the last message it had
    assert!(bob.next(std::time::Duration::from_millis(300)).await.is_none_or(|m| m[3] != "message_history"));
    let from_db = stored(&s, &tb, id, &format!("after={last_id}")).await;
    assert_eq!(from_db, vec![lost, after["id"].as_i64().unwrap()]);
}

/// A block made while Redis is down cannot reach the other node's cache by
/// broadcast (delivery is at most once); once the link is back, every node
/// forgets its cached block lists, and the block holds on both nodes.
#[tokio::test]
async fn block_lists_resynchronise_after_redis_comes_back() {
    let mut redis = fawkes_redis::test_server::RedisServer::start();
    let config = |name: &str| {
        let mut c = fawkes_redis::RedisConfig::new(redis.url(), name);
        c.reconnect_every = std::time::Duration::from_millis(100);
        c.keepalive = std::time::Duration::from_millis(100);
        c.deadline = std::time::Duration::from_millis(500);
        c.connect_timeout = std::time::Duration::from_millis(500);
        c
    };
    let cluster_a = fawkes_redis::connect_cluster(config("chat-a")).await.unwrap();
    let cluster_b = fawkes_redis::connect_cluster(config("chat-b")).await.unwrap();
    let a = start_node(None, Some(cluster_a.pubsub.clone())).await;
    let b = start_node(Some((a.url.clone(), None)), Some(cluster_b.pubsub.clone())).await;
    let (ta, alice) = sign_in(&a, &unique("alice")).await;
    let (tb, _) = sign_in(&b, &unique("bob")).await;
    let (tc, _) = sign_in(&b, &unique("carol")).await;
    let id = room(&a, &ta).await;
    for t in [&tb, &tc] {
        let (status, _) = http(b.addr, "POST", &format!("/api/v1/rooms/{id}/members"), Some(t), None).await;
        assert_eq!(status, 201);
    }
    let (_sa, ca) = join(&a, &ta, id).await;
    let (_sb, cb) = join(&b, &tb, id).await;
    let (_sc, cc) = join(&b, &tc, id).await;
    // node b caches bob's (empty) block list while delivering this
    let r = ca.push("new_message", json!({"body": "before"}));
    assert_reply!(ca, r, "ok", any_payload);
    assert_push!(cb, "new_message", |v: &Value| v["body"] == "before");
    assert_push!(cc, "new_message", |v: &Value| v["body"] == "before");

    redis.stop();
    // bob blocks alice through node a: the announcement goes nowhere
    let (status, _) = http(a.addr, "POST", "/api/v1/blocks", Some(&tb), Some(json!({"user_id": alice}))).await;
    assert_eq!(status, 201);
    let (before_a, before_b) = (cluster_a.stats.reconnects(), cluster_b.stats.reconnects());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    redis.restart();
    for _ in 0..200 {
        if cluster_a.stats.reconnects() >= before_a + 2 && cluster_b.stats.reconnects() >= before_b + 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(cluster_b.stats.reconnects() >= before_b + 2, "node b did not reconnect");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = ca.push("new_message", json!({"body": "after"}));
    assert_reply!(ca, r, "ok", any_payload);
    // carol gets it, so it crossed; bob's block holds on node b
    assert_push!(cc, "new_message", |v: &Value| v["body"] == "after");
    refute_push!(cb, "new_message", |v: &Value| v["body"] == "after");

    // the adapter's counters are served with the endpoint's
    let mut s = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    assert!(raw.contains("\nfawkes_connections "), "{raw}");
    assert!(raw.contains(&format!("\nfawkes_redis_reconnects_total {}\n", cluster_a.stats.reconnects())), "{raw}");
}
