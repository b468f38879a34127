//! The conformance server: implements `shared/conformance/CONTRACT.md` on
//! Fawkes, so that the official Phoenix client can drive it from outside.
//!
//! Environment: `PORT` (4000), `SOCKET_TIMEOUT_MS` (60000),
//! `PRESENCE_DIFF_WINDOW_MS` (0: one presence diff per change),
//! `RATE_LIMITS=off` (no join and event rate limits, for load tests),
//! `REDIS_URL` and `NODE_NAME` (join the cluster of every node on that
//! Redis: broadcasts, disconnects, presence and long-poll sessions span
//! them). `GET /metrics` serves the endpoint's counters for Prometheus.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use fawkes::{
    Channel, ChannelContext, ChannelError, ConnectError, ConnectInfo, Endpoint, Flow, HandleIn, Join, Outgoing, Params,
    Payload, Presence, Socket, SocketHandler,
};
use serde_json::{json, Value};

/// The socket: `token=invalid` is refused; `user_id` names the socket.
struct UserSocket {
    presence: Presence,
}

impl Socket for UserSocket {
    /// The user id, when the client gave one.
    type Assigns = Option<String>;

    async fn connect(&self, params: &Params, _info: &ConnectInfo) -> Result<Self::Assigns, ConnectError> {
        if params.get_str("token") == Some("invalid") {
            return Err(ConnectError::Refused);
        }
        Ok(params.get_str("user_id").map(str::to_owned))
    }

    fn id(&self, user: &Self::Assigns) -> Option<String> {
        user.as_ref().map(|u| format!("user_socket:{u}"))
    }
}

/// The `room:*` channel of the contract.
struct Room;

impl Channel<UserSocket> for Room {
    type Info = ();
    const INTERCEPT: &'static [&'static str] = &["filtered"];

    async fn join(
        topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext<UserSocket, ()>,
    ) -> Result<Join<Self>, ChannelError> {
        match topic {
            "room:private" => Ok(Join::refuse(json!({"reason": "unauthorized"}))),
            "room:crash_on_join" => Err("crash on join".into()),
            _ => {
                let params = payload.to_value()?;
                // Pushed after the join reply.
                ctx.push("joined", json!({"user_id": ctx.assigns()}))?;
                Ok(Join::ok_with(Room, json!({"topic": topic, "params": params})))
            }
        }
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<UserSocket, ()>,
    ) -> Result<HandleIn, ChannelError> {
        Ok(match event {
            "echo" | "binary_echo" => HandleIn::ok(payload),
            "error" => HandleIn::error(payload),
            "broadcast" => {
                ctx.broadcast("broadcast", payload)?;
                HandleIn::ok(json!({}))
            }
            "broadcast_from" => {
                ctx.broadcast_from("broadcast", payload)?;
                HandleIn::ok(json!({}))
            }
            "push_back" => {
                ctx.push("pushed", payload)?;
                HandleIn::ok(json!({}))
            }
            "filtered" => {
                ctx.broadcast("filtered", payload)?;
                HandleIn::ok(json!({}))
            }
            "noreply" => HandleIn::NoReply,
            "stop" => HandleIn::stop_ok(json!({})),
            "raise" => return Err("raise".into()),
            other => return Err(format!("no handler for {other:?}").into()),
        })
    }

    async fn handle_out(
        &mut self,
        _event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<UserSocket, ()>,
    ) -> Result<Outgoing, ChannelError> {
        let to = payload.to_value().ok().and_then(|v| v.get("to").and_then(Value::as_str).map(str::to_owned));
        Ok(match (ctx.assigns(), to) {
            (Some(me), Some(to)) if *me == to => Outgoing::Push(payload),
            _ => Outgoing::Drop,
        })
    }
}

/// The `presence:*` channel of the contract.
struct PresenceRoom {
    user: String,
    status: String,
}

impl Channel<UserSocket> for PresenceRoom {
    type Info = ();

    async fn join(
        _topic: &str,
        payload: Payload,
        ctx: &mut ChannelContext<UserSocket, ()>,
    ) -> Result<Join<Self>, ChannelError> {
        let Some(user) = ctx.assigns().clone() else {
            return Ok(Join::refuse(json!({"reason": "user_id required"})));
        };
        let status = payload
            .to_value()
            .ok()
            .and_then(|p| p.get("status").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "online".into());
        // presence_state and the tracking happen after the join reply
        ctx.channel_ref().send(())?;
        Ok(Join::ok(PresenceRoom { user, status }))
    }

    async fn handle_info(&mut self, _: (), ctx: &mut ChannelContext<UserSocket, ()>) -> Result<Flow, ChannelError> {
        let presence = ctx.socket().presence.clone();
        let state = presence.list(ctx.topic()).await;
        ctx.push("presence_state", Value::Object(state))?;
        presence.track(ctx, &self.user, json!({"status": self.status}))?;
        Ok(Flow::Continue)
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<UserSocket, ()>,
    ) -> Result<HandleIn, ChannelError> {
        let presence = ctx.socket().presence.clone();
        match event {
            "update_status" => {
                let status = payload.to_value()?.get("status").cloned().unwrap_or(Value::Null);
                presence.update(ctx, &self.user, |_| json!({"status": status}))?;
                Ok(HandleIn::ok(json!({})))
            }
            "list" => Ok(HandleIn::ok(Value::Object(presence.list(ctx.topic()).await))),
            other => Err(format!("no handler for {other:?}").into()),
        }
    }
}

fn bad_request(msg: impl Into<String>) -> axum::response::Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg.into()}))).into_response()
}

async fn api_broadcast(State(endpoint): State<Endpoint>, body: axum::body::Bytes) -> axum::response::Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("invalid JSON: {e}")),
    };
    let (Some(topic), Some(event)) = (v.get("topic").and_then(Value::as_str), v.get("event").and_then(Value::as_str))
    else {
        return bad_request("topic and event are required strings");
    };
    let payload = v.get("payload").cloned().unwrap_or_else(|| json!({}));
    match endpoint.broadcast(topic, event, payload) {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

async fn api_disconnect(State(endpoint): State<Endpoint>, body: axum::body::Bytes) -> axum::response::Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("invalid JSON: {e}")),
    };
    let user = match v.get("user_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return bad_request("user_id is required"),
    };
    match endpoint.disconnect(&format!("user_socket:{user}")) {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))).into_response(),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let port = env_u64("PORT", 4000);
    let timeout = Duration::from_millis(env_u64("SOCKET_TIMEOUT_MS", 60_000));

    let window = Duration::from_millis(env_u64("PRESENCE_DIFF_WINDOW_MS", 0));
    // for load tests that compare with servers that have no rate limits
    let rate_limits_off = std::env::var("RATE_LIMITS").is_ok_and(|v| v == "off");
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }

    // REDIS_URL: join the cluster of every node on that Redis
    let endpoint = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let node = std::env::var("NODE_NAME").unwrap_or_else(|_| format!("fawkes-{port}@127.0.0.1"));
            let pubsub = fawkes_redis::connect(fawkes_redis::RedisConfig::new(url, node))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Endpoint::new(pubsub)
        }
        _ => Endpoint::local(),
    };
    let presence = Presence::builder(&endpoint).diff_window(window).build();
    let leaving = presence.clone();
    let socket = SocketHandler::new(UserSocket { presence })
        .channel::<Room>("room:*")
        .channel::<PresenceRoom>("presence:*")
        .configure(|c| {
            c.timeout = timeout;
            c.longpoll = true;
            if rate_limits_off {
                c.join_rate = None;
                c.socket_event_rate = None;
                c.channel_event_rate = None;
            }
        });
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(endpoint): State<Endpoint>| async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    endpoint.metrics().snapshot().prometheus(),
                )
            }),
        )
        .route("/api/broadcast", post(api_broadcast))
        .route("/api/disconnect", post(api_disconnect))
        .with_state(endpoint.clone())
        .merge(endpoint.socket("/socket", socket));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", u16::try_from(port).unwrap_or(4000))).await?;
    tracing::warn!("conformance server listening on http://127.0.0.1:{port}");
    let shutdown_endpoint = endpoint.clone();
    fawkes::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            leaving.leave_cluster();
            shutdown_endpoint.shutdown();
        })
        .await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.pubsub().flush()).await;
    Ok(())
}
