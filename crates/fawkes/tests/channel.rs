//! Channel behaviour through the in-memory transport, for V1 and V2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use fawkes::protocol::Message;
use fawkes::{Endpoint, Payload, Ref, Vsn};
use fawkes_test::{
    any_payload, assert_broadcast, assert_push, assert_reply, connect_with, refute_push, refute_reply, TestSocket,
};
use serde_json::json;
use support::{handler, Log};

async fn client(vsn: Vsn, user: Option<&str>) -> (TestSocket, Log, Endpoint) {
    let log = Log::default();
    let endpoint = Endpoint::local();
    let service = handler(log.clone()).build(&endpoint);
    let params = match user {
        Some(u) => json!({"user_id": u}),
        None => json!({}),
    };
    (connect_with(&service, params, vsn, Default::default()).await.unwrap(), log, endpoint)
}

async fn each_vsn<F, Fut>(f: F)
where
    F: Fn(Vsn) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for vsn in Vsn::ALL {
        f(vsn).await;
    }
}

#[tokio::test]
async fn join_replies_then_pushes_in_order() {
    each_vsn(|vsn| async move {
        let (socket, _, _) = client(vsn, Some("u1")).await;
        let (reply, room) = socket.subscribe_and_join("room:lobby", json!({"a": 1})).await.unwrap();
        assert_eq!(reply, json!({"topic": "room:lobby", "params": {"a": 1}}));
        assert_push!(room, "joined", json!({"user_id": "u1"}));
        assert_push!(room, "after_join", json!({}));
    })
    .await;
}

#[tokio::test]
async fn refused_crashed_and_unmatched_joins() {
    each_vsn(|vsn| async move {
        let (socket, _, _) = client(vsn, None).await;
        assert_eq!(socket.join("room:private", json!({})).await.unwrap_err(), json!({"reason": "unauthorized"}));
        assert_eq!(socket.join("room:crash_on_join", json!({})).await.unwrap_err(), json!({"reason": "join crashed"}));
        assert_eq!(socket.join("room:panic_on_join", json!({})).await.unwrap_err(), json!({"reason": "join crashed"}));
        assert_eq!(socket.join("nope:1", json!({})).await.unwrap_err(), json!({"reason": "unmatched topic"}));
        // the socket still works
        let (_, room) = socket.join("room:after", json!({})).await.unwrap();
        let r = room.push("echo", json!({"ok": true}));
        assert_reply!(room, r, "ok", json!({"ok": true}));
    })
    .await;
}

#[tokio::test]
async fn handle_in_replies_ok_error_custom_or_not_at_all() {
    each_vsn(|vsn| async move {
        let (socket, _, _) = client(vsn, None).await;
        let (_, room) = socket.join("room:1", json!({})).await.unwrap();
        let r = room.push("echo", json!({"n": [1, 2]}));
        assert_reply!(room, r, "ok", json!({"n": [1, 2]}));
        let r = room.push("error", json!({"why": "x"}));
        assert_reply!(room, r, "error", json!({"why": "x"}));
        let r = room.push("custom_status", json!({}));
        assert_reply!(room, r, "accepted", json!({}));
        let r = room.push("noreply", json!({}));
        refute_reply!(room, r);
        let r = room.push("echo", json!("not an object"));
        assert_reply!(room, r, "ok", json!("not an object"));
    })
    .await;
}

#[tokio::test]
async fn stop_replies_then_closes_and_the_topic_can_be_joined_again() {
    each_vsn(|vsn| async move {
        let (socket, log, _) = client(vsn, None).await;
        let (_, room) = socket.join("room:s", json!({})).await.unwrap();
        let r = room.push("stop", json!({}));
        assert_reply!(room, r, "ok", json!({}));
        assert_push!(room, "phx_close", json!({}));
        // pushes from terminate follow the phx_close
        assert_push!(room, "terminating", any_payload);
        assert!(log.contains("room:s:Normal"));
        let (_, again) = socket.join("room:s", json!({})).await.unwrap();
        let r = again.push("echo", json!({}));
        assert_reply!(again, r, "ok", json!({}));
    })
    .await;
}

#[tokio::test]
async fn a_crash_sends_phx_error_on_that_topic_only() {
    each_vsn(|vsn| async move {
        let (socket, log, _) = client(vsn, None).await;
        let (_, mut a) = socket.join("room:a", json!({})).await.unwrap();
        let (_, b) = socket.join("room:b", json!({})).await.unwrap();
        // a V2 push must be an object (V1 has no such check)
        let events: &[&str] = if vsn == Vsn::V2 {
            &["raise", "panic", "no_such_event", "push_list"]
        } else {
            &["raise", "panic", "no_such_event"]
        };
        for &event in events {
            let r = a.push(event, json!({}));
            // terminate runs, and its pushes come before the phx_error
            assert_push!(a, "terminating", any_payload);
            assert_push!(a, "phx_error", json!({}));
            refute_reply!(a, r, Duration::from_millis(10));
            let r = b.push("echo", json!({"still": "up"}));
            assert_reply!(b, r, "ok", json!({"still": "up"}));
            // rejoin works
            let (_, again) = socket.join("room:a", json!({})).await.unwrap();
            let r = again.push("count", json!({}));
            assert_reply!(again, r, "ok", json!({"count": 1}));
            a = again;
        }
        assert!(log.0.lock().unwrap().iter().any(|l| l.starts_with("room:a:Crashed")));
        refute_push!(b, "phx_error", any_payload);
    })
    .await;
}

#[tokio::test]
async fn stop_with_an_error_reason_sends_phx_error() {
    let (socket, _, _) = client(Vsn::V2, None).await;
    let (_, room) = socket.join("room:e", json!({})).await.unwrap();
    room.push("stop_error", json!({}));
    assert_push!(room, "phx_error", json!({}));
}

#[tokio::test]
async fn leave_replies_ok_then_closes_and_terminate_runs() {
    each_vsn(|vsn| async move {
        let (socket, log, _) = client(vsn, None).await;
        let (_, room) = socket.join("room:l", json!({})).await.unwrap();
        let r = room.leave();
        assert_reply!(room, r, "ok", json!({}));
        assert_push!(room, "phx_close", json!({}));
        assert_push!(room, "terminating", json!({"reason": "Left"}));
        assert!(log.contains("room:l:Left"));
        // the topic is no longer joined
        let r = room.push("echo", json!({}));
        assert_reply!(room, r, "error", json!({"reason": "unmatched topic"}));
        // leaving a topic never joined is ok
        let r = room.leave();
        assert_reply!(room, r, "ok", json!({}));
    })
    .await;
}

#[tokio::test]
async fn broadcast_reaches_every_subscriber_and_broadcast_from_skips_the_sender() {
    each_vsn(|vsn| async move {
        let endpoint = Endpoint::local();
        let service = handler(Log::default()).build(&endpoint);
        let a = connect_with(&service, json!({"user_id": "a"}), vsn, Default::default()).await.unwrap();
        let b = connect_with(&service, json!({"user_id": "b"}), Vsn::V2, Default::default()).await.unwrap();
        let (_, ra) = a.subscribe_and_join("room:x", json!({})).await.unwrap();
        let (_, rb) = b.join("room:x", json!({})).await.unwrap();
        let r = ra.push("broadcast", json!({"m": 1}));
        assert_reply!(ra, r, "ok", json!({}));
        assert_broadcast!(ra, "broadcast", json!({"m": 1}));
        assert_push!(ra, "broadcast", json!({"m": 1}));
        assert_push!(rb, "broadcast", json!({"m": 1}));
        let r = ra.push("broadcast_from", json!({"m": 2}));
        assert_reply!(ra, r, "ok", json!({}));
        assert_push!(rb, "broadcast", json!({"m": 2}));
        refute_push!(ra, "broadcast", json!({"m": 2}));
        // from outside any channel
        endpoint.broadcast("room:x", "news", json!({"n": 3})).unwrap();
        assert_push!(ra, "news", json!({"n": 3}));
        assert_push!(rb, "news", json!({"n": 3}));
        // broadcast payloads must be objects
        assert!(endpoint.broadcast("room:x", "news", json!([1])).is_err());
    })
    .await;
}

/// An Elixir term a Phoenix node sent to a channel's topic (for its
/// processes' `handle_info`) reaches no client and counts as ignored; the
/// event that carries such terms cannot be broadcast.
#[tokio::test]
async fn phoenix_terms_on_a_channel_topic_reach_no_client() {
    use fawkes::pubsub::{PubSub, RemoteMessage, Target, TERM_EVENT};
    let endpoint = Endpoint::new(PubSub::local("me"));
    let service = handler(Log::default()).build(&endpoint);
    let a = connect_with(&service, json!({"user_id": "a"}), Vsn::V2, Default::default()).await.unwrap();
    let (_, room) = a.join("room:x", json!({})).await.unwrap();
    let term = Payload::binary(vec![131, 100, 0, 2, b'h', b'i']);
    let sent = endpoint.pubsub().deliver_remote(RemoteMessage {
        target: Target::Except("phx1".into()),
        broadcast: fawkes::Broadcast::new("room:x", TERM_EVENT, term.clone()),
    });
    assert_eq!((sent.delivered, sent.ignored), (0, 1));
    refute_push!(room, TERM_EVENT, any_payload);
    assert!(matches!(
        endpoint.broadcast("room:x", TERM_EVENT, term),
        Err(fawkes::BroadcastError::ReservedEvent(e)) if e == TERM_EVENT
    ));
}

#[tokio::test]
async fn intercepted_events_go_through_handle_out_per_subscriber() {
    each_vsn(|vsn| async move {
        let endpoint = Endpoint::local();
        let service = handler(Log::default()).build(&endpoint);
        let a = connect_with(&service, json!({"user_id": "a"}), vsn, Default::default()).await.unwrap();
        let b = connect_with(&service, json!({"user_id": "b"}), vsn, Default::default()).await.unwrap();
        let anon = connect_with(&service, json!({}), vsn, Default::default()).await.unwrap();
        let (_, ra) = a.join("room:f", json!({})).await.unwrap();
        let (_, rb) = b.join("room:f", json!({})).await.unwrap();
        let (_, rn) = anon.join("room:f", json!({})).await.unwrap();
        let r = ra.push("filtered", json!({"to": "b"}));
        assert_reply!(ra, r, "ok", json!({}));
        assert_push!(rb, "filtered", json!({"to": "b"}));
        refute_push!(ra, "filtered", any_payload);
        refute_push!(rn, "filtered", any_payload);
    })
    .await;
}

#[tokio::test]
async fn handle_info_and_late_replies() {
    each_vsn(|vsn| async move {
        let (socket, _, _) = client(vsn, None).await;
        let (_, room) = socket.join("room:i", json!({})).await.unwrap();
        let r = room.push("info", json!({"x": 1}));
        assert_reply!(room, r, "ok", json!({}));
        assert_push!(room, "info", json!({"x": 1}));
        let r = room.push("later", json!({}));
        assert_reply!(room, r, "ok", json!({"later": true}));
        let r = room.push("info_stop", json!({}));
        assert_reply!(room, r, "ok", json!({}));
        assert_push!(room, "phx_close", json!({}));
    })
    .await;
}

#[tokio::test]
async fn duplicate_join_replies_then_closes_the_old_join() {
    let (socket, _, _) = client(Vsn::V2, None).await;
    let (_, old) = socket.join("room:d", json!({})).await.unwrap();
    let (_, new) = socket.join("room:d", json!({})).await.unwrap();
    // the stale phx_close carries the old join ref
    assert_push!(old, "phx_close", json!({}));
    let r = new.push("count", json!({}));
    assert_reply!(new, r, "ok", json!({"count": 1}));
}

#[tokio::test]
async fn at_most_100_channels_per_socket() {
    let endpoint = Endpoint::local();
    let service = handler(Log::default()).configure(|c| c.join_rate = None).build(&endpoint);
    let socket = connect_with(&service, json!({}), Vsn::V2, Default::default()).await.unwrap();
    let mut joined = Vec::new();
    for i in 0..100 {
        joined.push(socket.join(&format!("room:{i}"), json!({})).await.unwrap().1);
    }
    assert_eq!(socket.join("room:100", json!({})).await.unwrap_err(), json!({"reason": "too many channels joined"}));
    let r = joined[0].leave();
    assert_reply!(joined[0], r, "ok", json!({}));
    assert_push!(joined[0], "phx_close", json!({}));
    assert!(socket.join("room:100", json!({})).await.is_ok());
}

#[tokio::test]
async fn messages_with_a_stale_join_ref_are_ignored() {
    let (socket, _, _) = client(Vsn::V2, None).await;
    let (_, room) = socket.join("room:st", json!({})).await.unwrap();
    socket.send(&Message {
        join_ref: Some(Ref::from("999")),
        ref_: Some(Ref::from("s1")),
        topic: "room:st".into(),
        event: "echo".into(),
        payload: Payload::empty(),
    });
    refute_reply!(room, Ref::from("s1"));
    let r = room.push("echo", json!({}));
    assert_reply!(room, r, "ok", json!({}));
}

#[tokio::test]
async fn heartbeats_are_answered_by_the_socket() {
    each_vsn(|vsn| async move {
        let (socket, _, _) = client(vsn, None).await;
        assert!(socket.heartbeat().await);
        let (_, _room) = socket.join("room:h", json!({})).await.unwrap();
        assert!(socket.heartbeat().await);
    })
    .await;
}

#[tokio::test]
async fn disconnect_by_socket_id_closes_every_connection_of_that_id() {
    let endpoint = Endpoint::local();
    let service = handler(Log::default()).build(&endpoint);
    let a1 = connect_with(&service, json!({"user_id": "a"}), Vsn::V2, Default::default()).await.unwrap();
    let a2 = connect_with(&service, json!({"user_id": "a"}), Vsn::V1, Default::default()).await.unwrap();
    let b = connect_with(&service, json!({"user_id": "b"}), Vsn::V2, Default::default()).await.unwrap();
    let (_, rb) = b.join("room:z", json!({})).await.unwrap();
    endpoint.disconnect("user_socket:a").unwrap();
    assert!(a1.wait_closed(Duration::from_secs(2)).await);
    assert!(a2.wait_closed(Duration::from_secs(2)).await);
    let r = rb.push("echo", json!({}));
    assert_reply!(rb, r, "ok", json!({}));
}

#[tokio::test]
async fn closing_the_connection_terminates_every_channel() {
    let (socket, log, endpoint) = client(Vsn::V2, None).await;
    let (_, _a) = socket.join("room:c1", json!({})).await.unwrap();
    let (_, _b) = socket.join("room:c2", json!({})).await.unwrap();
    assert_eq!(endpoint.metrics().snapshot().channels, 2);
    socket.close();
    for _ in 0..100 {
        if log.contains("room:c1:Closed") && log.contains("room:c2:Closed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(log.contains("room:c1:Closed") && log.contains("room:c2:Closed"), "{:?}", log.0);
    assert_eq!(endpoint.pubsub().subscriber_count("room:c1"), 0);
}

#[tokio::test]
async fn a_slow_join_does_not_block_other_topics() {
    let (socket, _, _) = client(Vsn::V2, None).await;
    let (_, fast) = socket.join("room:fast", json!({})).await.unwrap();
    let slow = {
        let s = socket.clone();
        tokio::spawn(async move { s.join("room:slow_join", json!({})).await.map(|_| ()) })
    };
    let r = fast.push("echo", json!({}));
    assert_reply!(fast, r, "ok", json!({}), Duration::from_millis(150));
    assert!(slow.await.unwrap().is_ok());
}

#[tokio::test]
async fn messages_sent_during_a_join_are_handled_after_it_in_order() {
    let (socket, _, _) = client(Vsn::V2, None).await;
    let join_ref = Ref::from("j1");
    let msg = |r: &str, event: &str| Message {
        join_ref: Some(join_ref.clone()),
        ref_: Some(Ref::from(r)),
        topic: "room:slow_join".into(),
        event: event.into(),
        payload: Payload::empty(),
    };
    socket.send(&msg("j1", "phx_join"));
    for i in 0..20 {
        socket.send(&msg(&format!("c{i}"), "count"));
    }
    let room = socket.channel("room:slow_join", join_ref.clone());
    assert_reply!(room, Ref::from("j1"), "ok", json!({}));
    for i in 0..20 {
        assert_reply!(room, Ref::from(format!("c{i}")), "ok", json!({"count": i + 1}));
    }
}

#[tokio::test]
async fn messages_sent_during_a_refused_join_get_unmatched_topic() {
    let (socket, _, _) = client(Vsn::V2, None).await;
    let m = |r: &str, event: &str| Message {
        join_ref: Some(Ref::from("p")),
        ref_: Some(Ref::from(r)),
        topic: "room:private".into(),
        event: event.into(),
        payload: Payload::empty(),
    };
    socket.send(&m("p", "phx_join"));
    socket.send(&m("e1", "echo"));
    let room = socket.channel("room:private", Ref::from("p"));
    assert_reply!(room, Ref::from("p"), "error", json!({"reason": "unauthorized"}));
    assert_reply!(room, Ref::from("e1"), "error", json!({"reason": "unmatched topic"}));
}
