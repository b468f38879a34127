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

static N: AtomicU64 = AtomicU64::new(0);

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
}

async fn start() -> Server {
    start_node(None, None).await
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
        database_url: url.clone(),
        secret_key_base: Some("chat-test-secret-key-base-0123456789abcdef".into()),
        pubsub,
        phoenix_presence: None,
        redis_stats: None,
    };
    let (router, service, _) = fawkes_chat::build(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Server { addr, service, url, _dir: dir }
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
    let (status, v) = http(s.addr, "POST", "/api/v1/sessions", None, Some(json!({"name": name}))).await;
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
    assert!((100..=110).contains(&ok), "bursts of 100 per person across tabs: {ok} passed");
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
    let (status, _) =
        http(a.addr, "POST", "/api/v1/notifications", Some(&ta), Some(json!({"user_id": bob, "message": "psst"})))
            .await;
    assert_eq!(status, 201);
    assert_push!(notes, "new_notification", |v: &Value| v["message"] == "psst");
}
