//! Presence in a channel, tested as with Phoenix.ChannelTest.
#![allow(clippy::unwrap_used)]

use fawkes::Endpoint;
use fawkes_test::{assert_push, assert_reply, socket};
use serde_json::json;

#[tokio::test]
async fn who_is_in_the_room_and_their_status() {
    let service = fawkes_example_presence::service(&Endpoint::local());
    let (_, ada) = socket(&service, "ada".into()).join("room:1", json!({})).await.unwrap();
    assert_push!(ada, "presence_state", json!({"ada": {"metas": [{"status": "online"}]}}));
    let (_, bob) = socket(&service, "bob".into()).join("room:1", json!({})).await.unwrap();
    assert_push!(bob, "presence_state", |s| s["ada"].is_object() && s["bob"].is_object());
    assert_push!(ada, "presence_diff", json!({"joins": {"bob": {"metas": [{"status": "online"}]}}, "leaves": {}}));
    let r = bob.push("set_status", json!({"status": "away"}));
    assert_reply!(bob, r, "ok", json!({}));
    assert_push!(ada, "presence_diff", json!({"joins": {"bob": {"metas": [{"status": "away"}]}}}));
    bob.socket().close();
    assert_push!(ada, "presence_diff", json!({"joins": {}, "leaves": {"bob": {"metas": [{"status": "away"}]}}}));
    let state = service.handler().presence.list("room:1").await;
    assert_eq!(state.keys().collect::<Vec<_>>(), ["ada"]);
}
