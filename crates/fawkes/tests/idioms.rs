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

/// `ctx.subtopic()` is what the route's `*` matched (`"room:" <> id`), empty
/// for an exact route; `Ctx<C, S>` names the context without `Info`.
#[tokio::test]
async fn subtopic_is_the_part_matched_by_the_star() {
    struct Echo;
    impl Channel<AppSocket> for Echo {
        type Info = ();
        async fn join(topic: &str, _: Payload, ctx: &mut Ctx<Self, AppSocket>) -> Result<Join<Self>, ChannelError> {
            Ok(Join::ok_with(Echo, json!({"topic": topic, "subtopic": ctx.subtopic()})))
        }
    }
    let endpoint = Endpoint::local();
    let socket = AppSocket { presence: Presence::new(&endpoint), ticks: Arc::new(AtomicUsize::new(0)) };
    let svc = SocketHandler::new(socket).channel::<Echo>("lobby").channel::<Echo>("project:*").build(&endpoint);
    let client = fawkes_test::socket(&svc, "ada".to_owned());
    for (topic, sub) in [("project:42", "42"), ("project:", ""), ("project:a:b", "a:b"), ("lobby", "")] {
        let (reply, _) = client.join(topic, json!({})).await.unwrap();
        assert_eq!(reply.to_value().unwrap(), json!({"topic": topic, "subtopic": sub}));
    }
}

/// The endpoint holds the secret key base: tokens it signs verify, typed;
/// without one, signing says why and verifying refuses.
#[test]
fn the_endpoint_signs_and_verifies_tokens() {
    use fawkes::token::{MaxAge, SignError, VerifyError};
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Claims {
        user: String,
    }
    let endpoint = Endpoint::local();
    let claims = Claims { user: "ada".into() };
    assert_eq!(endpoint.sign("user socket", &claims), Err(SignError::NoSecretKeyBase));
    assert_eq!(endpoint.set_secret_key_base("short"), Err(SignError::SecretTooShort));
    let forged =
        fawkes::token::sign("another secret key base, long enough", "user socket", &claims, &Default::default())
            .unwrap();
    assert_eq!(endpoint.verify::<Claims>("user socket", Some(&forged), MaxAge::Infinity), Err(VerifyError::Invalid));
    endpoint.set_secret_key_base("the endpoint's secret key base").unwrap();
    let token = endpoint.sign("user socket", &claims).unwrap();
    assert_eq!(endpoint.verify("user socket", Some(&token), MaxAge::Seconds(60.0)), Ok(claims));
    assert_eq!(endpoint.verify::<Claims>("other salt", Some(&token), MaxAge::Infinity), Err(VerifyError::Invalid));
    assert_eq!(endpoint.verify::<u64>("user socket", Some(&token), MaxAge::Infinity), Err(VerifyError::Data));
    assert_eq!(endpoint.verify::<Claims>("user socket", Some(&forged), MaxAge::Infinity), Err(VerifyError::Invalid));
    assert_eq!(endpoint.verify::<Claims>("user socket", Some(&token), MaxAge::Seconds(0.0)), Err(VerifyError::Expired));
}
