//! What people do with messages and rooms: edit and delete their own
//! (broadcast, and the history shows the result), author names from the
//! users table, `@name` mentions notifying through the notifications
//! channel, notifications kept for a reload, blocks applied everywhere.
//! Over real HTTP and through fawkes-test. SQLite by default;
//! CHAT_TEST_DATABASE_URL=postgres://... for PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use fawkes::SocketService;
use fawkes_chat::socket::ChatSocket;
use fawkes_test::{any_payload, assert_push, assert_reply, connect, refute_push, TestChannel, TestSocket};
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

async fn start() -> Server {
    let url = match std::env::var("CHAT_TEST_DATABASE_URL") {
        Ok(u) => u,
        Err(_) => {
            let dir = std::env::temp_dir().join(unique("fawkes-chat-features-"));
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}?mode=rwc", dir.join("chat.db").display())
        }
    };
    let config = fawkes_chat::Config {
        secret_key_base: Some("chat-test-secret-key-base-0123456789abcdef".into()),
        ..fawkes_chat::Config::new(url)
    };
    let (router, service, _) = fawkes_chat::build(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Server { addr, service }
}

async fn http(addr: SocketAddr, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
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

/// Registers `name`: token and id.
async fn register(s: &Server, name: &str) -> (String, i64) {
    let mut st = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let body = json!({"name": name, "password": PASSWORD}).to_string();
    let req = format!("POST /api/v1/users HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    st.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    st.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let v: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    (v["token"].as_str().unwrap().to_owned(), v["user"]["id"].as_i64().unwrap())
}

/// A room made by `owner` and joined (as a member) by the others.
async fn room(s: &Server, owner: &str, others: &[&str]) -> i64 {
    let (status, v) = http(s.addr, "POST", "/api/v1/rooms", owner, Some(json!({"name": unique("room")}))).await;
    assert_eq!(status, 201, "{v}");
    let id = v["data"]["id"].as_i64().unwrap();
    for t in others {
        assert_eq!(http(s.addr, "POST", &format!("/api/v1/rooms/{id}/members"), t, None).await.0, 201);
    }
    id
}

async fn join(s: &Server, token: &str, room: i64) -> (TestSocket, TestChannel) {
    let socket = connect(&s.service, json!({"token": token})).await.unwrap();
    let (_, ch) = socket.join(&format!("room:{room}"), json!({})).await.unwrap();
    (socket, ch)
}

async fn history(s: &Server, token: &str, room: i64) -> Vec<Value> {
    let (status, v) = http(s.addr, "GET", &format!("/api/v1/rooms/{room}/messages?limit=100"), token, None).await;
    assert_eq!(status, 200, "{v}");
    v["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn authors_edit_and_delete_their_messages_and_everyone_sees_it() {
    let s = start().await;
    let alice = unique("alice");
    let (ta, a) = register(&s, &alice).await;
    let (tb, _) = register(&s, &unique("bob")).await;
    let id = room(&s, &ta, &[&tb]).await;
    let (_sa, ca) = join(&s, &ta, id).await;
    let (_sb, cb) = join(&s, &tb, id).await;
    let r = ca.push("new_message", json!({"body": "helo"}));
    let reply = assert_reply!(ca, r, "ok", any_payload).to_value().unwrap();
    let m = reply["message_id"].as_i64().unwrap();
    assert_push!(cb, "new_message", |v: &Value| v["id"] == m && v["user_name"] == alice.as_str());

    // bob can neither edit nor delete it
    let r = cb.push("edit_message", json!({"id": m, "body": "mine now"}));
    assert_reply!(cb, r, "error", json!({"reason": "forbidden"}));
    let path = format!("/api/v1/rooms/{id}/messages/{m}");
    let (status, v) = http(s.addr, "PATCH", &path, &tb, Some(json!({"body": "mine"}))).await;
    assert_eq!((status, v["error"]["message"].as_str()), (403, Some("not your message")), "{v}");
    assert_eq!(http(s.addr, "DELETE", &path, &tb, None).await.0, 403);
    // alice edits over the channel: broadcast to the room
    let r = ca.push("edit_message", json!({"id": m, "body": "hello"}));
    assert_reply!(ca, r, "ok", |v: &Value| v["message"]["body"] == "hello");
    assert_push!(cb, "message_edited", |v: &Value| v["id"] == m && v["body"] == "hello" && v["edited_at"].is_string());
    // bad input on an edit: the error shape and a reply, nothing changed
    let r = ca.push("edit_message", json!({"id": m, "body": "nul\u{0}"}));
    assert_reply!(
        ca,
        r,
        "error",
        json!({"reason": "invalid", "errors": {"body": "must not contain control characters"}})
    );
    let (status, v) = http(s.addr, "PATCH", &path, &ta, Some(json!({"body": "\u{0}"}))).await;
    assert_eq!((status, v["error"]["fields"]["body"].as_str()), (422, Some("must not contain control characters")));
    let r = ca.push("edit_message", json!({"id": 999_999_999, "body": "x"}));
    assert_reply!(ca, r, "error", json!({"reason": "not_found"}));
    // and over the API
    let (status, v) = http(s.addr, "PATCH", &path, &ta, Some(json!({"body": "hello, bob"}))).await;
    assert_eq!((status, v["data"]["body"].as_str()), (200, Some("hello, bob")), "{v}");
    assert_push!(cb, "message_edited", |v: &Value| v["body"] == "hello, bob");
    let got = history(&s, &tb, id).await;
    assert_eq!((got[0]["body"].as_str(), got[0]["edited_at"].is_string()), (Some("hello, bob"), true));

    // a second message, deleted over the API, then the first over the channel
    let r = ca.push("new_message", json!({"body": "oops"}));
    let m2 = assert_reply!(ca, r, "ok", any_payload).to_value().unwrap()["message_id"].as_i64().unwrap();
    assert_eq!(http(s.addr, "DELETE", &format!("/api/v1/rooms/{id}/messages/{m2}"), &ta, None).await.0, 204);
    assert_push!(cb, "message_deleted", |v: &Value| v["id"] == m2 && v["deleted"] == true && v["body"] == "");
    let r = ca.push("delete_message", json!({"id": m}));
    assert_reply!(ca, r, "ok", any_payload);
    assert_push!(cb, "message_deleted", |v: &Value| v["id"] == m);
    // deleted stays deleted; the history keeps their places, without text
    let r = ca.push("edit_message", json!({"id": m, "body": "back"}));
    assert_reply!(ca, r, "error", json!({"reason": "not_found"}));
    let got = history(&s, &tb, id).await;
    let shown: Vec<(i64, bool, &str, i64)> = got
        .iter()
        .map(|v| {
            (
                v["id"].as_i64().unwrap(),
                v["deleted"].as_bool().unwrap(),
                v["body"].as_str().unwrap(),
                v["user_id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown, [(m, true, "", a), (m2, true, "", a)]);
}

#[tokio::test]
async fn mentions_notify_members_and_notifications_are_kept() {
    let s = start().await;
    let alice = unique("alice");
    let bob = unique("Bob");
    let (ta, a) = register(&s, &alice).await;
    let (tb, b) = register(&s, &bob).await;
    let (tc, c) = register(&s, &unique("carol")).await;
    let id = room(&s, &ta, &[&tb]).await;
    let sb = connect(&s.service, json!({"token": tb})).await.unwrap();
    let (_, nb) = sb.join(&format!("notifications:{b}"), json!({})).await.unwrap();
    let sc = connect(&s.service, json!({"token": tc})).await.unwrap();
    let (_, nc) = sc.join(&format!("notifications:{c}"), json!({})).await.unwrap();
    let (_sa, ca) = join(&s, &ta, id).await;
    // bob, in another case and with punctuation after; carol is not a member
    let body = format!("hey @{}, look (and @nobody-here)", bob.to_lowercase());
    let r = ca.push("new_message", json!({"body": body}));
    let m = assert_reply!(ca, r, "ok", any_payload).to_value().unwrap()["message_id"].as_i64().unwrap();
    let note = assert_push!(nb, "new_notification", |v: &Value| v["kind"] == "mention").to_value().unwrap();
    assert_eq!(
        (note["room_id"].as_i64(), note["message_id"].as_i64(), note["from"]["id"].as_i64(), note["message"].as_str()),
        (Some(id), Some(m), Some(a), Some(body.as_str()))
    );
    refute_push!(nc, "new_notification", any_payload);
    // mentioned through the API too; not oneself
    let body = format!("@{bob} again, says @{alice}");
    let (status, _) =
        http(s.addr, "POST", &format!("/api/v1/rooms/{id}/messages"), &ta, Some(json!({"body": body}))).await;
    assert_eq!(status, 201);
    assert_push!(nb, "new_notification", |v: &Value| v["message"] == body.as_str());
    // kept: a reload reads them, oldest first
    let (status, v) = http(s.addr, "GET", "/api/v1/notifications", &tb, None).await;
    assert_eq!(status, 200, "{v}");
    let kept: Vec<&str> = v["data"].as_array().unwrap().iter().map(|n| n["message"].as_str().unwrap()).collect();
    assert_eq!(kept.len(), 2, "{v}");
    assert_eq!(kept[1], body);
    let (_, v) = http(s.addr, "GET", "/api/v1/notifications", &ta, None).await;
    assert_eq!(v["data"], json!([]), "her own mention does not notify her");
    // bob blocks alice: her mentions no longer reach him
    assert_eq!(http(s.addr, "POST", "/api/v1/blocks", &tb, Some(json!({"user_id": a}))).await.0, 201);
    let r = ca.push("new_message", json!({"body": format!("@{bob} are you there?")}));
    assert_reply!(ca, r, "ok", any_payload);
    refute_push!(nb, "new_notification", any_payload);
    let (_, v) = http(s.addr, "GET", "/api/v1/notifications", &tb, None).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_status_is_the_users_in_every_tab_and_survives_reloads() {
    let s = start().await;
    let (ta, a) = register(&s, &unique("alice")).await;
    let (tb, _) = register(&s, &unique("bob")).await;
    let id = room(&s, &ta, &[&tb]).await;
    let other = room(&s, &ta, &[]).await;
    let (_s1, tab1) = join(&s, &ta, id).await;
    let (_s2, tab2) = join(&s, &ta, id).await;
    // a tab in another room
    let (_s3, tab3) = join(&s, &ta, other).await;
    let r = tab1.push("update_status", json!({"status": "busy"}));
    assert_reply!(tab1, r, "ok", json!({}));
    // every tab's meta follows
    for tab in [&tab2, &tab3] {
        assert_push!(tab, "presence_diff", |v: &Value| {
            v["joins"][a.to_string()]["metas"].as_array().is_some_and(|m| m.iter().all(|m| m["status"] == "busy"))
        });
    }
    // a new tab (a reload) starts busy, and the others stay busy
    let (_s4, tab4) = join(&s, &ta, id).await;
    let state = assert_push!(tab4, "presence_state", any_payload).to_value().unwrap();
    let metas = state[a.to_string()]["metas"].as_array().unwrap().clone();
    assert_eq!(metas.len(), 2, "{state}");
    assert!(metas.iter().all(|m| m["status"] == "busy"), "{state}");
    let (_sb, cb) = join(&s, &tb, id).await;
    let seen = assert_push!(cb, "presence_state", any_payload).to_value().unwrap();
    let metas = seen[a.to_string()]["metas"].as_array().unwrap().clone();
    assert_eq!(metas.len(), 3, "{seen}");
    assert!(metas.iter().all(|m| m["status"] == "busy"), "{seen}");
}

#[tokio::test]
async fn blocks_apply_to_history_typing_edits_and_notifications() {
    let s = start().await;
    let (ta, a) = register(&s, &unique("alice")).await;
    let bob = unique("bob");
    let (tb, b) = register(&s, &bob).await;
    let id = room(&s, &ta, &[&tb]).await;
    let (_sa, ca) = join(&s, &ta, id).await;
    let r = ca.push("new_message", json!({"body": "from alice"}));
    let m = assert_reply!(ca, r, "ok", any_payload).to_value().unwrap()["message_id"].as_i64().unwrap();
    // bob blocks alice
    assert_eq!(http(s.addr, "POST", "/api/v1/blocks", &tb, Some(json!({"user_id": a}))).await.0, 201);
    let (status, v) = http(s.addr, "GET", "/api/v1/blocks", &tb, None).await;
    assert_eq!((status, v["data"][0]["user_id"].as_i64()), (200, Some(a)), "{v}");
    // REST history and the history on join leave her out; alice still sees all
    assert_eq!(history(&s, &tb, id).await, Vec::<Value>::new());
    assert_eq!(history(&s, &ta, id).await.len(), 1);
    let (_sb, cb) = join(&s, &tb, id).await;
    assert_push!(cb, "message_history", json!({"messages": []}));
    // her typing, edits and deletions do not reach him either
    let r = ca.push("typing", json!({"typing": true}));
    assert_reply!(ca, r, "ok", json!({}));
    let r = ca.push("edit_message", json!({"id": m, "body": "edited"}));
    assert_reply!(ca, r, "ok", any_payload);
    refute_push!(cb, "user_typing", any_payload);
    refute_push!(cb, "message_edited", any_payload);
    // his own typing still reaches her
    let r = cb.push("typing", json!({"typing": true}));
    assert_reply!(cb, r, "ok", json!({}));
    assert_push!(ca, "user_typing", |v: &Value| v["user_id"] == b);
    // unblocked: all of it is back
    assert_eq!(http(s.addr, "DELETE", &format!("/api/v1/blocks/{a}"), &tb, None).await.0, 204);
    assert_eq!(history(&s, &tb, id).await.len(), 1);
    let r = ca.push("typing", json!({"typing": false}));
    assert_reply!(ca, r, "ok", json!({}));
    assert_push!(cb, "user_typing", |v: &Value| v["user_id"] == a);
    let (_, v) = http(s.addr, "GET", "/api/v1/blocks", &tb, None).await;
    assert_eq!(v["data"], json!([]));
}

#[tokio::test]
async fn rooms_are_unique_searchable_paginated_leavable_and_deletable_by_their_owner() {
    let s = start().await;
    let (ta, _) = register(&s, &unique("alice")).await;
    let (tb, _) = register(&s, &unique("bob")).await;
    let tag = unique("t");
    let name = format!("Lobby {tag}");
    let (status, v) = http(s.addr, "POST", "/api/v1/rooms", &ta, Some(json!({"name": name}))).await;
    assert_eq!(status, 201, "{v}");
    let lobby = v["data"]["id"].as_i64().unwrap();
    // the same name in another case or width is taken
    for same in [name.to_uppercase(), format!("ＬＯＢＢＹ {tag}")] {
        let (status, v) = http(s.addr, "POST", "/api/v1/rooms", &tb, Some(json!({"name": same}))).await;
        assert_eq!((status, v["error"]["fields"]["name"].as_str()), (422, Some("has already been taken")), "{v}");
    }
    // 7 more rooms with the tag; pages of 3 by search
    let mut ids = vec![lobby];
    for i in 0..7 {
        let (_, v) = http(s.addr, "POST", "/api/v1/rooms", &tb, Some(json!({"name": format!("room {i} {tag}")}))).await;
        ids.push(v["data"]["id"].as_i64().unwrap());
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let q = format!("/api/v1/rooms?q={}&limit=3&after={after}", tag.to_uppercase());
        let (status, v) = http(s.addr, "GET", &q, &ta, None).await;
        assert_eq!(status, 200, "{v}");
        let page: Vec<i64> = v["data"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
        assert!(page.len() <= 3);
        seen.extend(page);
        match v["next"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let (_, v) = http(s.addr, "GET", &format!("/api/v1/rooms?q=room%206%20{tag}"), &ta, None).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = http(s.addr, "GET", "/api/v1/rooms?q=%25", &ta, None).await;
    assert_eq!(v["data"], json!([]), "% is a character, not a wildcard");
    let (status, _) = http(s.addr, "GET", "/api/v1/rooms?q=a%00b", &ta, None).await;
    assert_eq!(status, 422);

    // bob joins, then leaves: he is no longer a member
    assert_eq!(http(s.addr, "POST", &format!("/api/v1/rooms/{lobby}/members"), &tb, None).await.0, 201);
    let (_, v) = http(s.addr, "GET", "/api/v1/me/rooms", &tb, None).await;
    assert!(v["data"].as_array().unwrap().iter().any(|r| r["id"] == lobby), "{v}");
    assert_eq!(http(s.addr, "POST", &format!("/api/v1/rooms/{lobby}/leave"), &tb, None).await.0, 204);
    let (_, v) = http(s.addr, "GET", "/api/v1/me/rooms", &tb, None).await;
    assert!(!v["data"].as_array().unwrap().iter().any(|r| r["id"] == lobby), "{v}");
    assert_eq!(http(s.addr, "GET", &format!("/api/v1/rooms/{lobby}/messages"), &tb, None).await.0, 403);
    // only the owner deletes; its pages are told, and the name is free again
    assert_eq!(http(s.addr, "POST", &format!("/api/v1/rooms/{lobby}/members"), &tb, None).await.0, 201);
    let (_sb, cb) = join(&s, &tb, lobby).await;
    let (status, v) = http(s.addr, "DELETE", &format!("/api/v1/rooms/{lobby}"), &tb, None).await;
    assert_eq!((status, v["error"]["message"].as_str()), (403, Some("only the room's owner may delete it")));
    assert_eq!(http(s.addr, "DELETE", &format!("/api/v1/rooms/{lobby}"), &ta, None).await.0, 204);
    assert_push!(cb, "room_deleted", json!({"room_id": lobby}));
    assert_eq!(http(s.addr, "GET", &format!("/api/v1/rooms/{lobby}/messages"), &ta, None).await.0, 404);
    let socket = connect(&s.service, json!({"token": ta})).await.unwrap();
    assert!(socket.join(&format!("room:{lobby}"), json!({})).await.is_err());
    let (status, _) = http(s.addr, "POST", "/api/v1/rooms", &tb, Some(json!({"name": name}))).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn unread_counts_follow_read_positions_and_direct_conversations_are_private() {
    let s = start().await;
    let alice = unique("alice");
    let bob = unique("bob");
    let (ta, a) = register(&s, &alice).await;
    let (tb, b) = register(&s, &bob).await;
    let (tc, _) = register(&s, &unique("carol")).await;
    let id = room(&s, &ta, &[&tb]).await;
    let path = format!("/api/v1/rooms/{id}/messages");
    let mut last = 0;
    for i in 0..3 {
        let (_, v) = http(s.addr, "POST", &path, &ta, Some(json!({"body": format!("m{i}")}))).await;
        last = v["data"]["id"].as_i64().unwrap();
    }
    let unread = |token: String| async move {
        let (_, v) = http(s.addr, "GET", "/api/v1/me/rooms", &token, None).await;
        v["data"].as_array().unwrap().iter().find(|r| r["id"] == id).map(|r| r["unread"].as_i64().unwrap())
    };
    assert_eq!(unread(tb.clone()).await, Some(3));
    assert_eq!(unread(ta.clone()).await, Some(0), "one's own messages are read");
    let read = format!("/api/v1/rooms/{id}/read");
    assert_eq!(http(s.addr, "PUT", &read, &tb, Some(json!({"message_id": last - 1}))).await.0, 204);
    assert_eq!(unread(tb.clone()).await, Some(1));
    // never back
    assert_eq!(http(s.addr, "PUT", &read, &tb, Some(json!({"message_id": 1}))).await.0, 204);
    assert_eq!(unread(tb.clone()).await, Some(1));
    assert_eq!(http(s.addr, "PUT", &read, &tb, Some(json!({"message_id": last}))).await.0, 204);
    assert_eq!(unread(tb.clone()).await, Some(0));
    // carol joins after all that: nothing unread for her
    assert_eq!(http(s.addr, "POST", &format!("/api/v1/rooms/{id}/members"), &tc, None).await.0, 201);
    assert_eq!(unread(tc.clone()).await, Some(0));

    // a direct conversation: the same room from either side, named after the other
    let (status, v) = http(s.addr, "POST", "/api/v1/direct", &ta, Some(json!({"user_id": b}))).await;
    assert_eq!(
        (status, v["data"]["kind"].as_str(), v["data"]["name"].as_str()),
        (201, Some("direct"), Some(bob.as_str()))
    );
    let dm = v["data"]["id"].as_i64().unwrap();
    let (status, v) = http(s.addr, "POST", "/api/v1/direct", &tb, Some(json!({"user_id": a}))).await;
    assert_eq!((status, v["data"]["id"].as_i64()), (200, Some(dm)));
    let (_, v) = http(s.addr, "GET", "/api/v1/me/rooms", &tb, None).await;
    let listed = v["data"].as_array().unwrap().iter().find(|r| r["id"] == dm).cloned().unwrap();
    assert_eq!((listed["name"].as_str(), listed["kind"].as_str()), (Some(alice.as_str()), Some("direct")));
    // not listed among rooms, and closed to others
    let (_, v) = http(s.addr, "GET", "/api/v1/rooms?limit=100", &tc, None).await;
    assert!(!v["data"].as_array().unwrap().iter().any(|r| r["id"] == dm));
    assert_eq!(http(s.addr, "POST", &format!("/api/v1/rooms/{dm}/members"), &tc, None).await.0, 403);
    let socket = connect(&s.service, json!({"token": tc})).await.unwrap();
    assert!(socket.join(&format!("room:{dm}"), json!({})).await.is_err());
    // a block closes it
    assert_eq!(http(s.addr, "POST", "/api/v1/blocks", &tb, Some(json!({"user_id": a}))).await.0, 201);
    let (status, _) = http(s.addr, "POST", "/api/v1/direct", &ta, Some(json!({"user_id": b}))).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_history_names_authors_who_left() {
    let s = start().await;
    let (ta, _) = register(&s, &unique("alice")).await;
    let bob = unique("bob");
    let (tb, b) = register(&s, &bob).await;
    let id = room(&s, &ta, &[&tb]).await;
    let path = format!("/api/v1/rooms/{id}/messages");
    assert_eq!(http(s.addr, "POST", &path, &tb, Some(json!({"body": "bye all"}))).await.0, 201);
    assert_eq!(http(s.addr, "POST", &format!("/api/v1/rooms/{id}/leave"), &tb, None).await.0, 204);
    let got = history(&s, &ta, id).await;
    assert_eq!((got[0]["user_id"].as_i64(), got[0]["user_name"].as_str()), (Some(b), Some(bob.as_str())));
    let (_sa, ca) = join(&s, &ta, id).await;
    assert_push!(ca, "message_history", |v: &Value| v["messages"][0]["user_name"] == bob.as_str());
}
