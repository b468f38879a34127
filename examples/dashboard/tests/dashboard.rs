//! The dashboard's channel and HTTP tests (compare `phoenix/test/`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fawkes::axum::{body::Body, http::Request};
use fawkes::Endpoint;
use fawkes_example_dashboard::{app, User};
use fawkes_test::{assert_push, assert_reply, connect, socket};
use serde_json::json;
use tower::ServiceExt;

#[tokio::test]
async fn only_a_valid_token_connects() {
    let endpoint = Endpoint::local();
    endpoint.set_secret_key_base("dashboard-test-secret-key-base").unwrap();
    let (_, service) = app(&endpoint, Duration::from_secs(60));
    let token = endpoint.sign("user socket", &User { id: "ada".into(), admin: false }).unwrap();
    assert!(connect(&service, json!({"token": token})).await.is_ok());
    assert!(connect(&service, json!({"token": "forged"})).await.is_err());
}

#[tokio::test]
async fn viewers_statuses_ticks_and_alerts() {
    let endpoint = Endpoint::local();
    let (_, service) = app(&endpoint, Duration::from_millis(50));
    let (_, ch) = socket(&service, User { id: "ada".into(), admin: false }).join("project:1", json!({})).await.unwrap();
    assert_push!(ch, "presence_state", json!({"ada": {"metas": [{"status": "viewing"}]}}));
    let r = ch.push("set_status", json!({"status": "away"}));
    assert_reply!(ch, r, "ok", json!({}));
    assert_push!(ch, "presence_diff", |d| d["joins"]["ada"]["metas"][0]["status"] == "away");
    assert_push!(ch, "tick", json!({}));
    endpoint.broadcast("ops:alerts", "alert", json!({"message": "disk full"})).unwrap();
    assert_push!(ch, "alert", json!({"message": "disk full"}));
}

#[tokio::test]
async fn a_deploy_reaches_viewers_and_its_secret_only_admins() {
    let endpoint = Endpoint::local();
    let (router, service) = app(&endpoint, Duration::from_secs(60));
    let (_, viewer) =
        socket(&service, User { id: "bob".into(), admin: false }).join("project:7", json!({})).await.unwrap();
    let (_, admin) =
        socket(&service, User { id: "ada".into(), admin: true }).join("project:7", json!({})).await.unwrap();
    let body = Body::from(json!({"id": 1, "secret": "s3"}).to_string());
    let req = Request::post("/deploys/7").header("content-type", "application/json").body(body).unwrap();
    assert_eq!(router.oneshot(req).await.unwrap().status(), 202);
    assert_push!(admin, "deploy_started", json!({"id": 1, "secret": "s3"}));
    assert_push!(viewer, "deploy_started", |d| d == &json!({"id": 1}));
}
