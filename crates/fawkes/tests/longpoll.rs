//! The long-poll transport over real HTTP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{handler, http, lp, serve, Log};

fn app() -> fawkes::SocketHandler<support::AppSocket> {
    handler(Log::default()).configure(|c| {
        c.longpoll = true;
        c.longpoll_window = Duration::from_millis(300);
    })
}

fn enc(t: &str) -> String {
    url_encode(t)
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Polls until `want` frames arrived (or the polls run out).
async fn collect(addr: std::net::SocketAddr, query: &str, want: usize) -> Vec<Value> {
    let mut got = Vec::new();
    for _ in 0..20 {
        let r = lp(addr, "GET", query, "").await;
        assert!(r["status"] == 200 || r["status"] == 204, "{r}");
        for m in r["messages"].as_array().unwrap() {
            got.push(serde_json::from_str(m.as_str().expect("messages are strings")).unwrap());
        }
        if got.len() >= want {
            break;
        }
    }
    got
}

#[tokio::test]
async fn the_envelope_is_phoenix_s() {
    let (addr, _) = serve(app()).await;
    let first = lp(addr, "GET", "vsn=2.0.0&user_id=u1", "").await;
    assert_eq!(first["status"], 410);
    assert_eq!(first["messages"], json!([]));
    let token = first["token"].as_str().unwrap().to_owned();
    let q = format!("vsn=2.0.0&token={}", enc(&token));
    let body = [
        json!(["1", "1", "room:lp", "phx_join", {}]).to_string(),
        json!(["1", "2", "room:lp", "echo", {"hello": "lp"}]).to_string(),
    ]
    .join("\n");
    assert_eq!(lp(addr, "POST", &q, &body).await, json!({"status": 200}));
    let got = collect(addr, &q, 4).await;
    assert_eq!(
        got[0],
        json!(["1", "1", "room:lp", "phx_reply", {"status": "ok", "response": {"topic": "room:lp", "params": {}}}])
    );
    assert!(got.contains(&json!(["1", null, "room:lp", "joined", {"user_id": "u1"}])));
    assert!(got.contains(&json!(["1", "2", "room:lp", "phx_reply", {"status": "ok", "response": {"hello": "lp"}}])));
    // with nothing to say, a poll ends after the window
    let started = std::time::Instant::now();
    let r = lp(addr, "GET", &q, "").await;
    assert_eq!((r["status"].clone(), r["token"].as_str().unwrap()), (json!(204), token.as_str()));
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn the_token_header_and_cors_and_methods() {
    let (addr, _) = serve(app()).await;
    let token = lp(addr, "GET", "vsn=2.0.0", "").await["token"].as_str().unwrap().to_owned();
    let (status, headers, body) = http(
        addr,
        "POST",
        "/socket/longpoll?vsn=2.0.0",
        &[("x-phoenix-longpoll-token", &token), ("content-type", "application/x-ndjson")],
        json!([null, "h", "phoenix", "heartbeat", {}]).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({"status": 200}));
    assert!(headers.contains(&("access-control-allow-origin".into(), "*".into())));
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/json")));
    let (status, headers, _) = http(
        addr,
        "OPTIONS",
        "/socket/longpoll",
        &[("access-control-request-headers", "x-phoenix-longpoll-token")],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.contains(&("access-control-allow-methods".into(), "get, post, options".into())));
    assert!(headers.contains(&("access-control-allow-headers".into(), "x-phoenix-longpoll-token".into())));
    let (status, _, _) = http(addr, "PUT", "/socket/longpoll", &[], b"").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn refusals_are_status_403_in_the_body() {
    let (addr, _) = serve(app()).await;
    assert_eq!(lp(addr, "GET", "vsn=2.0.0&token=invalid", "").await, json!({"status": 403}));
    assert_eq!(lp(addr, "GET", "vsn=3.0.0", "").await, json!({"status": 403}));
    let (status, _, body) =
        http(addr, "GET", "/socket/longpoll?vsn=2.0.0", &[("origin", "http://evil.example")], b"").await;
    assert_eq!((status, serde_json::from_slice::<Value>(&body).unwrap()), (200, json!({"status": 403})));
}

#[tokio::test]
async fn posts_without_a_session_get_410_and_garbage_ends_the_session() {
    let (addr, endpoint) = serve(app()).await;
    assert_eq!(lp(addr, "POST", "vsn=2.0.0&token=nope", "[]").await, json!({"status": 410}));
    let token = lp(addr, "GET", "vsn=2.0.0", "").await["token"].as_str().unwrap().to_owned();
    let q = format!("vsn=2.0.0&token={}", enc(&token));
    assert_eq!(lp(addr, "POST", &q, "not base64 !!!").await["status"], 408);
    assert_eq!(
        lp(addr, "POST", &q, &json!([null, "h", "phoenix", "heartbeat", {}]).to_string()).await,
        json!({"status": 410})
    );
    // an undecodable frame ends the session too
    let token = lp(addr, "GET", "vsn=2.0.0", "").await["token"].as_str().unwrap().to_owned();
    let q = format!("vsn=2.0.0&token={}", enc(&token));
    assert_eq!(lp(addr, "POST", &q, "[1,2]").await["status"], 408);
    assert!(endpoint.metrics().snapshot().decode_errors >= 1);
    // a GET with a gone session opens a new one
    let again = lp(addr, "GET", &q, "").await;
    assert_eq!(again["status"], 410);
    assert_ne!(again["token"].as_str().unwrap(), token);
}

#[tokio::test]
async fn a_session_not_polled_ends_and_its_channels_terminate() {
    let log = Log::default();
    let (addr, _) = serve(handler(log.clone()).configure(|c| {
        c.longpoll = true;
        c.longpoll_window = Duration::from_millis(100);
    }))
    .await;
    let token = lp(addr, "GET", "vsn=2.0.0", "").await["token"].as_str().unwrap().to_owned();
    let q = format!("vsn=2.0.0&token={}", enc(&token));
    assert_eq!(lp(addr, "POST", &q, &json!(["1", "1", "room:idle", "phx_join", {}]).to_string()).await["status"], 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(lp(addr, "POST", &q, "[]").await, json!({"status": 410}));
    assert!(log.contains("room:idle:Closed"), "{:?}", log.0);
}

#[tokio::test]
async fn broadcasts_reach_websocket_and_long_poll_subscribers_alike_in_v1_and_v2() {
    let (addr, endpoint) = serve(app()).await;
    let t2 = lp(addr, "GET", "vsn=2.0.0", "").await["token"].as_str().unwrap().to_owned();
    let q2 = format!("vsn=2.0.0&token={}", enc(&t2));
    lp(addr, "POST", &q2, &json!(["1", "1", "room:x", "phx_join", {}]).to_string()).await;
    // V1: the whole body is one frame
    let t1 = lp(addr, "GET", "vsn=1.0.0", "").await["token"].as_str().unwrap().to_owned();
    let q1 = format!("vsn=1.0.0&token={}", enc(&t1));
    let (status, _, _) = http(
        addr,
        "POST",
        &format!("/socket/longpoll?{q1}"),
        &[("content-type", "application/json")],
        json!({"topic": "room:x", "event": "phx_join", "payload": {}, "ref": "1"}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    collect(addr, &q2, 3).await;
    collect(addr, &q1, 3).await;
    endpoint.broadcast("room:x", "news", json!({"n": 1})).unwrap();
    assert!(collect(addr, &q2, 1).await.contains(&json!([null, null, "room:x", "news", {"n": 1}])));
    assert!(collect(addr, &q1, 1)
        .await
        .contains(&json!({"topic": "room:x", "event": "news", "payload": {"n": 1}, "ref": null})));
}

#[tokio::test]
async fn disconnect_ends_the_session_and_limits_hold() {
    let (addr, endpoint) = serve(handler(Log::default()).configure(|c| {
        c.longpoll = true;
        c.longpoll_window = Duration::from_millis(300);
        c.longpoll_max_sessions = 2;
        c.longpoll_max_body = 1000;
    }))
    .await;
    let t = lp(addr, "GET", "vsn=2.0.0&user_id=d", "").await["token"].as_str().unwrap().to_owned();
    let q = format!("vsn=2.0.0&token={}", enc(&t));
    let _other = lp(addr, "GET", "vsn=2.0.0", "").await;
    assert_eq!(lp(addr, "GET", "vsn=2.0.0", "").await, json!({"status": 403}), "at the session limit");
    let (status, _, _) = http(
        addr,
        "POST",
        &format!("/socket/longpoll?{q}"),
        &[("content-type", "application/x-ndjson")],
        "x".repeat(2000).as_bytes(),
    )
    .await;
    assert_eq!(status, 413);
    endpoint.disconnect("user_socket:d").unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(lp(addr, "POST", &q, "[]").await, json!({"status": 410}));
}

/// The endpoint's shutdown ends long-poll sessions, including one opened
/// after it.
#[tokio::test]
async fn shutdown_ends_sessions() {
    let (addr, endpoint) = serve(app()).await;
    let before = lp(addr, "GET", "vsn=2.0.0", "").await["token"].as_str().unwrap().to_owned();
    endpoint.shutdown();
    let after = lp(addr, "GET", "vsn=2.0.0", "").await["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for t in [before, after] {
        let q = format!("vsn=2.0.0&token={}", enc(&t));
        assert_eq!(lp(addr, "POST", &q, "[]").await, json!({"status": 410}));
    }
}

/// Two nodes whose PubSubs are linked in memory: what one publishes, the
/// other receives, as over Redis.
struct Link(std::sync::Mutex<Vec<fawkes::PubSub>>);

impl fawkes::pubsub::Adapter for Link {
    fn publish(&self, msg: fawkes::pubsub::RemoteMessage) -> Result<(), fawkes::pubsub::PubSubError> {
        let nodes = self.0.lock().unwrap().clone();
        for ps in nodes {
            ps.deliver_remote(msg.clone());
        }
        Ok(())
    }
}

async fn serve_on(endpoint: fawkes::Endpoint) -> std::net::SocketAddr {
    let app = endpoint.socket("/socket", app());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn a_request_reaching_another_node_is_carried_to_the_session_s_node() {
    let link = std::sync::Arc::new(Link(std::sync::Mutex::new(Vec::new())));
    let (pa, pb) =
        (fawkes::PubSub::with_adapter("node-a", link.clone()), fawkes::PubSub::with_adapter("node-b", link.clone()));
    link.0.lock().unwrap().extend([pa.clone(), pb.clone()]);
    let (a, b) = (serve_on(fawkes::Endpoint::new(pa)).await, serve_on(fawkes::Endpoint::new(pb.clone())).await);
    let token = lp(a, "GET", "vsn=2.0.0&user_id=x", "").await["token"].as_str().unwrap().to_owned();
    let q = format!("vsn=2.0.0&token={}", enc(&token));
    // POST and GET on node b, for a session of node a
    let body = [
        json!(["1", "1", "room:relay", "phx_join", {}]).to_string(),
        json!(["1", "2", "room:relay", "echo", {"via": "b"}]).to_string(),
    ]
    .join("\n");
    assert_eq!(lp(b, "POST", &q, &body).await, json!({"status": 200}));
    let got = collect(b, &q, 3).await;
    assert!(
        got.contains(&json!(["1", "2", "room:relay", "phx_reply", {"status": "ok", "response": {"via": "b"}}])),
        "{got:?}"
    );
    // a broadcast made on node b reaches the session on node a
    fawkes::Endpoint::new(pb).broadcast("room:relay", "news", json!({"from": "b"})).unwrap();
    assert!(collect(a, &q, 1).await.contains(&json!([null, null, "room:relay", "news", {"from": "b"}])));
    // a session gone from node a: node b opens a new session on GET, 410 on POST
    let dead = format!("vsn=2.0.0&token={}", enc(&format!("{}.nope", token.split('.').next().unwrap())));
    assert_eq!(lp(b, "POST", &dead, "[]").await, json!({"status": 410}));
    let fresh = lp(b, "GET", &dead, "").await;
    assert_eq!(fresh["status"], 410);
    assert_ne!(fresh["token"], json!(token));
}
