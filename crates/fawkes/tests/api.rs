//! The server API's routes on a real listener: the OpenAPI document matches
//! the routes served, keys are required, bad requests get a status and a
//! JSON error. (Its effects seen by the official client: e2e/js/test/api.test.js.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use fawkes::api::{Api, OPENAPI, ROUTES};
use serde_json::{json, Value};
use support::{handler, http, Log};

async fn serve_api(api: Api) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = fawkes::axum::Router::new().nest("/api", api.router());
    tokio::spawn(async move { fawkes::serve(listener, app).await });
    addr
}

async fn post(addr: SocketAddr, route: &str, body: &[u8], key: Option<&str>) -> (u16, Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    let (status, _, body) = http(addr, "POST", &format!("/api{route}"), &headers, body).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_openapi_document_is_served_and_names_exactly_the_routes() {
    let endpoint = fawkes::Endpoint::local();
    let addr = serve_api(Api::new(&endpoint).key("k")).await;
    let (status, _, body) = http(addr, "GET", "/api/openapi.json", &[], b"").await;
    assert_eq!(status, 200);
    let served: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(served, serde_json::from_str::<Value>(OPENAPI).unwrap());
    assert_eq!(served["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = served["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
        .collect();
    let routes: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, routes);
    // every documented POST route is served: an empty object is a request
    // it reads (200) or refuses for a missing field (400), never 404/405
    for (method, path) in &routes {
        if method == "post" {
            let (status, body) = post(addr, path, b"{}", Some("k")).await;
            assert!(
                status == 200 || status == 400 || status == 404 && body["error"] == "presence is not enabled",
                "{path}: {status} {body}"
            );
            assert!(body.is_object(), "{path}: a JSON answer");
        }
    }
}

#[tokio::test]
async fn calls_need_a_key_and_bad_bodies_get_json_errors() {
    let (_, endpoint) = support::serve(handler(Log::default())).await;
    let addr = serve_api(Api::new(&endpoint).key("old").key("new")).await;
    let publish = json!({"topic": "room:a", "event": "e", "payload": {}}).to_string();
    assert_eq!(post(addr, "/publish", publish.as_bytes(), None).await, (401, json!({"error": "unauthorized"})));
    assert_eq!(post(addr, "/publish", publish.as_bytes(), Some("nope")).await.0, 401);
    // either key is accepted (rotation)
    assert_eq!(post(addr, "/publish", publish.as_bytes(), Some("old")).await, (200, json!({"status": "ok"})));
    assert_eq!(post(addr, "/publish", publish.as_bytes(), Some("new")).await, (200, json!({"status": "ok"})));
    assert_eq!(endpoint.metrics().snapshot().broadcasts, 2);

    let (status, body) = post(addr, "/publish", b"{nope", Some("new")).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("invalid request"), "{body}");
    let (status, body) = post(addr, "/publish", br#"{"topic": "room:a"}"#, Some("new")).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("event"), "{body}");
    let (status, body) =
        post(addr, "/publish", br#"{"topic": "room:a", "event": "e", "payload": 3}"#, Some("new")).await;
    assert_eq!((status, body), (400, json!({"error": "broadcast payloads must be JSON objects or binary"})));
    // presence without a Presence
    assert_eq!(
        post(addr, "/presence", br#"{"topic": "room:a"}"#, Some("new")).await,
        (404, json!({"error": "presence is not enabled"}))
    );
    // a batch over the limit
    let commands: Vec<Value> = (0..=fawkes::api::MAX_BATCH).map(|_| json!({"topic": "t", "event": "e"})).collect();
    let (status, _) = post(addr, "/batch", json!({ "commands": commands }).to_string().as_bytes(), Some("new")).await;
    assert_eq!(status, 400);
    // a body over the limit
    let big = vec![b' '; fawkes::api::MAX_BODY + 1];
    let (status, body) = post(addr, "/publish", &big, Some("new")).await;
    assert_eq!(status, 413);
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn without_keys_every_call_is_refused() {
    let endpoint = fawkes::Endpoint::local();
    let addr = serve_api(Api::new(&endpoint)).await;
    assert_eq!(post(addr, "/topics", b"{}", Some("")).await.0, 401);
    assert_eq!(post(addr, "/topics", b"{}", None).await.0, 401);
}
