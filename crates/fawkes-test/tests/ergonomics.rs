//! What a channel test reads like: a socket with assigns and no token,
//! payloads matched as ChannelTest patterns, closures without annotations,
//! and failures that fit on a screen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fawkes::*;
use fawkes_test::{assert_broadcast, assert_push, assert_reply, connect, refute_broadcast, refute_push, socket, Exact};
use serde_json::json;

struct UserSocket;

impl Socket for UserSocket {
    type Assigns = String;
    async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<String, ConnectError> {
        Err(ConnectError::Refused)
    }
    fn id(&self, user: &String) -> Option<String> {
        Some(format!("user:{user}"))
    }
}

#[derive(Clone)]
struct Tick;

struct Room;

impl Channel<UserSocket> for Room {
    type Info = Tick;

    async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
        ctx.send_interval(Duration::from_millis(5), Tick);
        ctx.push("hello", json!({"user": ctx.assigns(), "room": ctx.subtopic(), "id": ctx.socket_id()}))?;
        Ok(Join::ok(Room))
    }

    async fn handle_in(
        &mut self,
        _: &str,
        p: Payload,
        ctx: &mut Ctx<Self, UserSocket>,
    ) -> Result<HandleIn, ChannelError> {
        ctx.broadcast("said", json!({"by": ctx.assigns(), "what": p.to_value()?, "at": 1}))?;
        Ok(HandleIn::ok(json!({"n": 1, "extra": "x".repeat(5000)})))
    }

    async fn handle_info(&mut self, _: Tick, ctx: &mut Ctx<Self, UserSocket>) -> Result<HandleInfo, ChannelError> {
        ctx.push("tick", json!({"big": "y".repeat(5000)}))?;
        Ok(HandleInfo::Continue)
    }
}

fn service() -> SocketService<UserSocket> {
    SocketHandler::new(UserSocket).channel::<Room>("room:*").build(&Endpoint::local())
}

#[tokio::test]
async fn a_socket_with_assigns_needs_no_connect() {
    let svc = service();
    assert!(connect(&svc, json!({})).await.is_err(), "connect refuses everyone");
    let (_, room) = socket(&svc, "ada".to_owned()).subscribe_and_join("room:42", json!({})).await.unwrap();
    assert_push!(room, "hello", Exact(json!({"user": "ada", "room": "42", "id": "user:ada"})));
}

#[tokio::test]
async fn patterns_and_closures_match_as_in_channel_test() {
    let svc = service();
    let (_, room) = socket(&svc, "ada".to_owned()).subscribe_and_join("room:1", json!({})).await.unwrap();
    // a subset of the keys, recursively
    assert_push!(room, "hello", json!({"room": "1"}));
    let r = room.push("say", json!({"body": "hi", "lang": "en"}));
    assert_reply!(room, r, "ok", json!({"n": 1}));
    assert_broadcast!(room, "said", json!({"what": {"body": "hi"}}));
    // closures need no annotation
    let r = room.push("say", json!({"body": "again"}));
    assert_reply!(room, r, "ok", |p| p["extra"].as_str().map(str::len) == Some(5000));
    assert_broadcast!(room, "said", |p| p["what"]["body"] == "again");
    assert_push!(room, "tick", |p| p["big"].is_string(), Duration::from_secs(1));
    // a value that differs is not a match; nor is an exact value with fewer keys
    refute_push!(room, "hello", json!({"room": "2"}));
    refute_push!(room, "tick", Exact(json!({})));
}

/// A failed assertion with thousands of ticks pending says so in a few
/// hundred characters, not thousands of frames.
#[tokio::test]
async fn a_failure_is_short_with_a_fast_tick() {
    let svc = service();
    let (_, room) = socket(&svc, "ada".to_owned()).join("room:1", json!({})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pending = room.pending();
    let failed = tokio::spawn(async move {
        assert_push!(room, "never", json!({}), Duration::from_millis(50));
    })
    .await
    .unwrap_err();
    let message = failed.into_panic();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("× push \"tick\""), "{message}");
    assert!(message.contains("no push \"never\""), "{message}");
    assert!(message.len() < 1200, "{} characters: {message}", message.len());
    // dozens of ticks, each carrying 5000 bytes, were pending
    let ticks: usize = pending.split(" frames").next().unwrap().parse().unwrap();
    assert!(ticks > 10, "{pending}");
}

/// `assert_broadcast!` on a channel opened with `join` (which does not
/// subscribe the test) fails at once and says to use `subscribe_and_join`.
#[tokio::test]
async fn assert_broadcast_after_join_says_to_subscribe() {
    let svc = service();
    let (_, room) = socket(&svc, "ada".to_owned()).join("room:1", json!({})).await.unwrap();
    assert!(!room.is_subscribed());
    let r = room.push("say", json!({"body": "hi"}));
    assert_reply!(room, r, "ok", json!({"n": 1}));
    let failed = tokio::spawn(async move {
        assert_broadcast!(room, "said", json!({}), Duration::from_secs(30));
    });
    let failed = tokio::time::timeout(Duration::from_secs(5), failed).await.expect("fails at once").unwrap_err();
    let message = failed.into_panic();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("joined with `join`, which does not subscribe"), "{message}");
    assert!(message.contains("use `subscribe_and_join`"), "{message}");
    assert!(message.contains("pending: "), "{message}");
}

/// `refute_broadcast!` on a channel opened with `join` cannot see a
/// broadcast: it fails at once rather than pass without checking.
#[tokio::test]
async fn refute_broadcast_after_join_fails_rather_than_pass_unchecked() {
    let svc = service();
    let (_, room) = socket(&svc, "ada".to_owned()).join("room:1", json!({})).await.unwrap();
    let failed = tokio::spawn(async move {
        refute_broadcast!(room, "said", json!({}), Duration::from_secs(30));
    });
    let failed = tokio::time::timeout(Duration::from_secs(5), failed).await.expect("fails at once").unwrap_err();
    let message = failed.into_panic();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("use `subscribe_and_join`"), "{message}");
}

/// A subscribed channel's failure lists what is pending, as `assert_push!`.
#[tokio::test]
async fn assert_broadcast_failure_lists_the_pending_frames() {
    let svc = service();
    let (_, room) = socket(&svc, "ada".to_owned()).subscribe_and_join("room:1", json!({})).await.unwrap();
    assert!(room.is_subscribed());
    let failed = tokio::spawn(async move {
        assert_broadcast!(room, "never", json!({}), Duration::from_millis(50));
    })
    .await
    .unwrap_err();
    let message = failed.into_panic();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("no broadcast \"never\""), "{message}");
    assert!(message.contains("push \"hello\""), "{message}");
    assert!(!message.contains("subscribe_and_join"), "{message}");
}
