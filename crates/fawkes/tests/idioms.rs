//! Phoenix's everyday channel idioms, one line each: an extra topic
//! followed from the channel (`Endpoint.subscribe`), `send_after`,
//! `send_interval`, presence tracked from `ctx.handler()`'s own presence; and
//! all of them ended with the channel however it ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fawkes::*;
use fawkes_test::{any_payload, assert_push, assert_reply, connect, refute_push};
use serde_json::{json, Value};

struct AppSocket {
    presence: Presence,
    ticks: Arc<AtomicUsize>,
}

impl Socket for AppSocket {
    type Assigns = String;
    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<String, ConnectError> {
        params.get_str("user_id").map(str::to_owned).ok_or(ConnectError::Refused)
    }
}

#[derive(Clone)]
enum Info {
    Tick,
    Later(u64),
    Alert(Broadcast),
}

impl From<Broadcast> for Info {
    fn from(b: Broadcast) -> Info {
        Info::Alert(b)
    }
}

struct Dashboard;

impl Channel<AppSocket> for Dashboard {
    type Info = Info;

    async fn join(_: &str, _: Payload, ctx: &mut ChannelContext<AppSocket, Info>) -> Result<Join<Self>, ChannelError> {
        ctx.subscribe("ops:alerts");
        ctx.send_interval(Duration::from_millis(50), Info::Tick);
        ctx.send_after(Duration::from_millis(30), Info::Later(7));
        // presence from the socket handler, with the context borrowed once
        ctx.handler().presence.track(ctx, ctx.assigns(), json!({"status": "viewing"}))?;
        Ok(Join::ok(Dashboard))
    }

    async fn handle_in(
        &mut self,
        event: &str,
        _: Payload,
        ctx: &mut ChannelContext<AppSocket, Info>,
    ) -> Result<HandleIn, ChannelError> {
        match event {
            "away" => {
                ctx.handler().presence.update(ctx, ctx.assigns(), |_| json!({"status": "away"}))?;
                Ok(HandleIn::ok(json!({})))
            }
            "crash" => Err("crash".into()),
            _ => Ok(HandleIn::ok(json!({}))),
        }
    }

    async fn handle_info(
        &mut self,
        info: Info,
        ctx: &mut ChannelContext<AppSocket, Info>,
    ) -> Result<HandleInfo, ChannelError> {
        match info {
            Info::Tick => {
                ctx.handler().ticks.fetch_add(1, Ordering::Relaxed);
                ctx.push("tick", json!({}))?;
            }
            Info::Later(n) => ctx.push("later", json!({"n": n}))?,
            Info::Alert(b) => ctx.push("alert", json!({"event": b.event, "payload": b.payload.to_value()?}))?,
        }
        Ok(HandleInfo::Continue)
    }
}

fn service() -> (SocketService<AppSocket>, Endpoint, Presence, Arc<AtomicUsize>) {
    let endpoint = Endpoint::local();
    let presence = Presence::new(&endpoint);
    let ticks = Arc::new(AtomicUsize::new(0));
    let svc = SocketHandler::new(AppSocket { presence: presence.clone(), ticks: ticks.clone() })
        .channel::<Dashboard>("project:*")
        .build(&endpoint);
    (svc, endpoint, presence, ticks)
}

#[tokio::test]
async fn timers_subscriptions_and_presence_in_one_line_each() {
    let (svc, endpoint, presence, _) = service();
    let socket = connect(&svc, json!({"user_id": "ada"})).await.unwrap();
    let (_, ch) = socket.join("project:1", json!({})).await.unwrap();
    assert_push!(ch, "later", json!({"n": 7}));
    assert_push!(ch, "tick", json!({}));
    assert_push!(ch, "tick", json!({}));
    endpoint.broadcast("ops:alerts", "disk_full", json!({"host": "db1"})).unwrap();
    assert_push!(ch, "alert", json!({"event": "disk_full", "payload": {"host": "db1"}}));
    let listed = presence.list("project:1").await;
    assert_eq!(listed["ada"]["metas"][0]["status"], "viewing");
    let r = ch.push("away", json!({}));
    assert_reply!(ch, r, "ok", any_payload);
    assert_eq!(presence.list("project:1").await["ada"]["metas"][0]["status"], "away");
}

/// However the channel ends, its timers stop, its extra subscription goes,
/// and its presence leaves.
#[tokio::test]
async fn all_of_it_ends_with_the_channel() {
    for how in ["leave", "crash", "close", "duplicate"] {
        let (svc, endpoint, presence, ticks) = service();
        let socket = connect(&svc, json!({"user_id": "ada"})).await.unwrap();
        let (_, ch) = socket.join("project:2", json!({})).await.unwrap();
        assert_push!(ch, "tick", json!({}));
        assert_eq!(endpoint.pubsub().subscriber_count("ops:alerts"), 1);
        match how {
            "leave" => {
                let r = ch.leave();
                assert_reply!(ch, r, "ok", any_payload);
            }
            "crash" => {
                ch.push("crash", json!({}));
            }
            "close" => socket.close(),
            _ => {
                socket.join("project:2", json!({})).await.unwrap();
            }
        }
        let expected = usize::from(how == "duplicate");
        for _ in 0..100 {
            if endpoint.pubsub().subscriber_count("ops:alerts") == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(endpoint.pubsub().subscriber_count("ops:alerts"), expected, "{how}");
        let metas =
            |v: &serde_json::Map<String, Value>| v.get("ada").map_or(0, |e| e["metas"].as_array().unwrap().len());
        assert_eq!(metas(&presence.list("project:2").await), expected, "{how}");
        if expected == 0 {
            let before = ticks.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(ticks.load(Ordering::Relaxed), before, "{how}: the timer stopped");
            refute_push!(ch, "alert", any_payload);
        }
    }
}
