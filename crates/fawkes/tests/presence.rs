//! Presence through channels: state and diff shapes, several metas per key,
//! updates, removal when a channel ends, the fetch hook and coalescing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fawkes::*;
use fawkes_test::{any_payload, assert_push, assert_reply, connect, TestChannel};
use serde_json::{json, Value};

struct PSocket {
    presence: Presence,
}

impl Socket for PSocket {
    type Assigns = String;
    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<String, ConnectError> {
        params.get_str("user_id").map(str::to_owned).ok_or(ConnectError::Refused)
    }
}

struct Lobby;

impl Channel<PSocket> for Lobby {
    type Info = ();

    async fn join(_: &str, _: Payload, ctx: &mut ChannelContext<PSocket, ()>) -> Result<Join<Self>, ChannelError> {
        ctx.channel_ref().send(())?;
        Ok(Join::ok(Lobby))
    }

    async fn handle_info(&mut self, _: (), ctx: &mut ChannelContext<PSocket, ()>) -> Result<HandleInfo, ChannelError> {
        let p = ctx.handler().presence.clone();
        let state = p.list(ctx.topic()).await;
        ctx.push("presence_state", Value::Object(state))?;
        let user = ctx.assigns().clone();
        p.track(ctx, &user, json!({"status": "online"}))?;
        Ok(HandleInfo::Continue)
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<PSocket, ()>,
    ) -> Result<HandleIn, ChannelError> {
        let p = ctx.handler().presence.clone();
        let user = ctx.assigns().clone();
        match event {
            "status" => {
                let status = payload.to_value()?["status"].clone();
                p.update(ctx, &user, |_| json!({"status": status}))?;
                Ok(HandleIn::ok(json!({})))
            }
            "track_again" => match p.track(ctx, &user, json!({})) {
                Err(PresenceError::AlreadyTracked) => Ok(HandleIn::error(json!({"reason": "already tracked"}))),
                other => Ok(HandleIn::ok(json!({"other": format!("{other:?}")}))),
            },
            "untrack" => {
                p.untrack(ctx, &user);
                Ok(HandleIn::ok(json!({})))
            }
            "get" => Ok(HandleIn::ok(p.get_by_key(ctx.topic(), &user).await.unwrap_or(Value::Null))),
            "list" => Ok(HandleIn::ok(Value::Object(p.list(ctx.topic()).await))),
            "crash" => Err("crash".into()),
            _ => Ok(HandleIn::NoReply),
        }
    }
}

fn service(presence: Presence, endpoint: &Endpoint) -> SocketService<PSocket> {
    SocketHandler::new(PSocket { presence }).channel::<Lobby>("lobby:*").build(endpoint)
}

fn metas(v: &Value, key: &str) -> Vec<Value> {
    v[key]["metas"].as_array().cloned().unwrap_or_default()
}

async fn next_diff(ch: &TestChannel) -> Value {
    assert_push!(ch, "presence_diff", any_payload).to_value().unwrap()
}

#[tokio::test]
async fn state_then_diffs_in_the_official_shapes() {
    let endpoint = Endpoint::local();
    let svc = service(Presence::new(&endpoint), &endpoint);
    let a = connect(&svc, json!({"user_id": "alice"})).await.unwrap();
    let (_, ca) = a.join("lobby:1", json!({})).await.unwrap();
    assert_push!(ca, "presence_state", json!({}));
    let d = next_diff(&ca).await;
    assert_eq!(d["leaves"], json!({}));
    let m = metas(&d["joins"], "alice");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["status"], "online");
    assert_eq!(m[0]["phx_ref"].as_str().unwrap().len(), 16);

    // a second socket of another user: its state lists alice
    let b = connect(&svc, json!({"user_id": "bob"})).await.unwrap();
    let (_, cb) = b.join("lobby:1", json!({})).await.unwrap();
    let state = assert_push!(cb, "presence_state", any_payload).to_value().unwrap();
    assert_eq!(metas(&state, "alice").len(), 1);
    let d = next_diff(&ca).await;
    assert_eq!(metas(&d["joins"], "bob").len(), 1);

    // a second socket of alice: two metas under one key
    let a2 = connect(&svc, json!({"user_id": "alice"})).await.unwrap();
    let (_, ca2) = a2.join("lobby:1", json!({})).await.unwrap();
    assert_push!(ca2, "presence_state", any_payload);
    let _ = next_diff(&ca).await;
    let r = ca.push("list", json!({}));
    let list = assert_reply!(ca, r, "ok", any_payload).to_value().unwrap();
    let ma = metas(&list, "alice");
    assert_eq!(ma.len(), 2);
    assert_ne!(ma[0]["phx_ref"], ma[1]["phx_ref"]);
    let r = ca.push("get", json!({}));
    let got = assert_reply!(ca, r, "ok", any_payload).to_value().unwrap();
    assert_eq!(got["metas"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn update_is_a_leave_and_a_join_with_phx_ref_prev() {
    let endpoint = Endpoint::local();
    let svc = service(Presence::new(&endpoint), &endpoint);
    let a = connect(&svc, json!({"user_id": "alice"})).await.unwrap();
    let (_, ca) = a.join("lobby:u", json!({})).await.unwrap();
    let first = next_diff(&ca).await;
    let old_ref = metas(&first["joins"], "alice")[0]["phx_ref"].clone();
    let r = ca.push("status", json!({"status": "away"}));
    assert_reply!(ca, r, "ok", json!({}));
    let d = next_diff(&ca).await;
    let joined = &metas(&d["joins"], "alice")[0];
    assert_eq!(joined["status"], "away");
    assert_eq!(joined["phx_ref_prev"], old_ref);
    assert_ne!(joined["phx_ref"], old_ref);
    assert_eq!(metas(&d["leaves"], "alice")[0]["phx_ref"], old_ref);
    let r = ca.push("track_again", json!({}));
    assert_reply!(ca, r, "error", json!({"reason": "already tracked"}));
}

#[tokio::test]
async fn presences_leave_with_their_channel_however_it_ends() {
    let endpoint = Endpoint::local();
    let presence = Presence::new(&endpoint);
    let svc = service(presence.clone(), &endpoint);
    let watcher = connect(&svc, json!({"user_id": "w"})).await.unwrap();
    let (_, cw) = watcher.join("lobby:e", json!({})).await.unwrap();
    let _ = next_diff(&cw).await;
    for how in ["leave", "crash", "close", "untrack"] {
        let s = connect(&svc, json!({"user_id": how})).await.unwrap();
        let (_, c) = s.join("lobby:e", json!({})).await.unwrap();
        let d = next_diff(&cw).await;
        assert_eq!(metas(&d["joins"], how).len(), 1, "{how}");
        match how {
            "leave" => {
                c.leave();
            }
            "crash" => {
                c.push("crash", json!({}));
            }
            "close" => s.close(),
            _ => {
                c.push("untrack", json!({}));
            }
        }
        let d = next_diff(&cw).await;
        assert_eq!(metas(&d["leaves"], how).len(), 1, "{how}");
        assert!(presence.get_by_key("lobby:e", how).await.is_none(), "{how}");
    }
    assert_eq!(presence.list("lobby:e").await.keys().collect::<Vec<_>>(), vec!["w"]);
}

#[tokio::test]
async fn fetch_enriches_lists_and_diffs() {
    let endpoint = Endpoint::local();
    let presence = Presence::builder(&endpoint)
        .fetch(|topic, mut entries| async move {
            for (key, e) in entries.iter_mut() {
                e["user"] = json!({"name": format!("{key}@{topic}")});
            }
            entries
        })
        .build();
    let svc = service(presence, &endpoint);
    let a = connect(&svc, json!({"user_id": "al"})).await.unwrap();
    let (_, ca) = a.join("lobby:f", json!({})).await.unwrap();
    let d = next_diff(&ca).await;
    assert_eq!(d["joins"]["al"]["user"]["name"], "al@lobby:f");
    let r = ca.push("list", json!({}));
    let list = assert_reply!(ca, r, "ok", any_payload).to_value().unwrap();
    assert_eq!(list["al"]["user"]["name"], "al@lobby:f");
    assert_eq!(metas(&list, "al").len(), 1);
}

/// With a window, a burst of changes reaches a subscriber as one diff, and
/// applying it gives the same presences as the changes one by one.
#[tokio::test]
async fn coalesced_diffs_reach_the_same_state() {
    let endpoint = Endpoint::local();
    let presence = Presence::builder(&endpoint).diff_window(Duration::from_millis(50)).build();
    let svc = service(presence.clone(), &endpoint);
    let w = connect(&svc, json!({"user_id": "w"})).await.unwrap();
    let (_, cw) = w.join("lobby:c", json!({})).await.unwrap();
    let mut sockets = Vec::new();
    for i in 0..20 {
        let s = connect(&svc, json!({"user_id": format!("u{}", i % 7)})).await.unwrap();
        let (_, c) = s.join("lobby:c", json!({})).await.unwrap();
        sockets.push((s, c));
    }
    for (i, (s, c)) in sockets.iter().enumerate() {
        match i % 4 {
            0 => s.close(),
            1 => {
                c.push("status", json!({"status": "busy"}));
            }
            _ => {}
        }
    }
    // Apply diffs as the client does (joins, then leaves) until quiet.
    let mut view: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let mut diffs = 0;
    while let Some(p) = cw.wait_push("presence_diff", &any_payload, Duration::from_millis(300)).await {
        diffs += 1;
        let d = p.to_value().unwrap();
        for (k, v) in d["joins"].as_object().unwrap() {
            let e = view.entry(k.clone()).or_default();
            for m in v["metas"].as_array().unwrap() {
                if !e.iter().any(|x| x["phx_ref"] == m["phx_ref"]) {
                    e.push(m.clone());
                }
            }
        }
        for (k, v) in d["leaves"].as_object().unwrap() {
            if let Some(e) = view.get_mut(k) {
                for m in v["metas"].as_array().unwrap() {
                    e.retain(|x| x["phx_ref"] != m["phx_ref"]);
                }
                if e.is_empty() {
                    view.remove(k);
                }
            }
        }
    }
    assert!(diffs < 10, "{diffs} diffs for 46 changes");
    let truth = presence.list("lobby:c").await;
    let mut want: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for (k, v) in truth {
        want.insert(k, v["metas"].as_array().unwrap().clone());
    }
    let refs = |m: &std::collections::BTreeMap<String, Vec<Value>>| -> Vec<(String, Vec<String>)> {
        m.iter()
            .map(|(k, v)| {
                let mut r: Vec<String> = v.iter().map(|x| x["phx_ref"].as_str().unwrap().to_owned()).collect();
                r.sort();
                (k.clone(), r)
            })
            .collect()
    };
    assert_eq!(refs(&view), refs(&want));
}

/// `Presence::new` outside a tokio runtime panics with a message that says
/// so, at the caller's line rather than inside tokio.
#[test]
fn presence_new_outside_a_runtime_panics_at_the_caller() {
    use std::sync::{Arc, Mutex};
    let endpoint = fawkes::Endpoint::local();
    let seen: Arc<Mutex<Option<(String, String)>>> = Arc::default();
    let previous = Arc::new(std::panic::take_hook());
    let (s, p) = (seen.clone(), previous.clone());
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|m| (*m).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if message.contains("outside a tokio runtime") {
            let file = info.location().map(|l| l.file().to_owned()).unwrap_or_default();
            *s.lock().unwrap() = Some((message, file));
        } else {
            p(info);
        }
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fawkes::Presence::new(&endpoint)));
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| previous(info)));
    assert!(result.is_err(), "no panic");
    let (message, file) = seen.lock().unwrap().clone().expect("the panic was seen");
    assert!(message.contains("Presence::new"), "{message}");
    assert!(file.ends_with("tests/presence.rs"), "panicked at {file}");
}
