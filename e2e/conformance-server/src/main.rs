//! The conformance server: implements `shared/conformance/CONTRACT.md` on
//! Fawkes, so that the official Phoenix client can drive it from outside.
//!
//! Environment: `PORT` (4001, on 127.0.0.1; the chat has 4000),
//! `SOCKET_TIMEOUT_MS` (60000), `PRESENCE_DIFF_WINDOW_MS` (0: one presence
//! diff per change), `RATE_LIMITS` (`on`; `off`: no join and event rate
//! limits, for load tests), `REDIS_URL` and `NODE_NAME` (join the cluster of
//! every node on that Redis: broadcasts, disconnects, presence and long-poll
//! sessions span them; an empty `REDIS_URL` is none; `rediss://`,
//! `redis+sentinel://` and `redis+cluster://` URLs too, see
//! [`fawkes_redis`]), `REDIS_CA_FILE`, `REDIS_CERT_FILE` and `REDIS_KEY_FILE`
//! (TLS), `REDIS_SHARDED` (sharded fan-out over that many channels),
//! `PHOENIX_PUBSUB_NAME` with `REDIS_URL` (join a Phoenix application's
//! cluster: its PubSub's channel, `PhxRef.PubSub` say, and presence as its
//! Phoenix.Presence, `PHOENIX_PRESENCE_NAME`, by default `<App>Web.Presence`
//! for `<App>.PubSub`, with `PHOENIX_PRESENCE_POOL_SIZE` shards, 1 by
//! default), `RUST_LOG` (`warn`). `GET /metrics` serves the endpoint's
//! counters and the Redis adapter's for Prometheus. `API_KEY`: the bearer
//! key of the server API ([`fawkes::api`]) nested at `/api/v1` (without it,
//! every call there is refused); the contract's `/api/broadcast` and
//! `/api/disconnect` are that API's publish and disconnect, without a key. Ctrl-C or SIGTERM stops
//! it gracefully: the other nodes are told at once that its presences are
//! gone.
//! `GET /autobahn` is a plain WebSocket echo on the socket's WebSocket layer
//! (permessage-deflate on, messages up to 64 MiB) for the Autobahn testsuite.
//!
//! A bad value in any of these, a port already in use or a Redis that
//! cannot be reached stops the server at start-up with one line on stderr
//! that names what failed and where, and exit status 1.

use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use fawkes::api::Api;
use fawkes::{
    Channel, ChannelContext, ChannelError, ConnectError, ConnectInfo, Endpoint, HandleIn, HandleInfo, HandleOut, Join,
    Params, Payload, Presence, Socket, SocketHandler,
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
    ) -> Result<HandleOut, ChannelError> {
        let to = payload.to_value().ok().and_then(|v| v.get("to").and_then(Value::as_str).map(str::to_owned));
        Ok(match (ctx.assigns(), to) {
            (Some(me), Some(to)) if *me == to => HandleOut::Push(payload),
            _ => HandleOut::Drop,
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

    async fn handle_info(
        &mut self,
        _: (),
        ctx: &mut ChannelContext<UserSocket, ()>,
    ) -> Result<HandleInfo, ChannelError> {
        let presence = ctx.handler().presence.clone();
        let state = presence.list(ctx.topic()).await;
        ctx.push("presence_state", Value::Object(state))?;
        presence.track(ctx, &self.user, json!({"status": self.status}))?;
        Ok(HandleInfo::Continue)
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<UserSocket, ()>,
    ) -> Result<HandleIn, ChannelError> {
        let presence = ctx.handler().presence.clone();
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

/// The contract's `POST /api/broadcast`: the server API's publish, without
/// a key.
async fn api_broadcast(State(api): State<Api>, body: axum::body::Bytes) -> axum::response::Response {
    match fawkes::api::parse::<fawkes::api::Publish>(&body).and_then(|p| api.publish(p)) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The contract's `POST /api/disconnect` (`{"user_id": u}`, a string or a
/// number): the server API's disconnect of socket id `user_socket:<u>`,
/// without a key.
async fn api_disconnect(State(api): State<Api>, body: axum::body::Bytes) -> axum::response::Response {
    let user = match fawkes::api::parse::<Value>(&body) {
        Ok(v) => match v.get("user_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return fawkes::api::ApiError::bad_request("user_id is required").into_response(),
        },
        Err(e) => return e.into_response(),
    };
    match api.disconnect(fawkes::api::Disconnect { socket_id: format!("user_socket:{user}") }) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The largest message `GET /autobahn` echoes: four times the largest that
/// Autobahn's 9.* cases send.
const AUTOBAHN_MAX_MESSAGE: usize = 64 << 20;

/// What the environment asks for.
struct Settings {
    port: u16,
    timeout: Duration,
    presence_window: Duration,
    rate_limits: bool,
    /// The Redis config (but the node's name) and this node's name, when given.
    redis: Option<(fawkes_redis::RedisConfig, Option<String>)>,
    /// The Phoenix application whose cluster this node joins.
    phoenix: Option<fawkes_redis::env::PhoenixApp>,
    log: tracing_subscriber::EnvFilter,
    /// The server API's key (`/api/v1/*`); without it every call is refused.
    api_key: Option<String>,
}

/// A variable's value; `None` when it is not set.
fn var(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(format!("{name} must be valid UTF-8, got {:?}", v.to_string_lossy()))
        }
    }
}

/// A number of milliseconds from `min` to a day.
fn millis(name: &str, default: u64, min: u64) -> Result<Duration, String> {
    const DAY: u64 = 86_400_000;
    match var(name)? {
        None => Ok(Duration::from_millis(default)),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|ms| (min..=DAY).contains(ms))
            .map(Duration::from_millis)
            .ok_or_else(|| format!("{name} must be a number of milliseconds ({min} to {DAY}), got {v:?}")),
    }
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let log = match var("RUST_LOG")? {
            None => tracing_subscriber::EnvFilter::new("warn"),
            Some(v) => tracing_subscriber::EnvFilter::try_new(&v)
                .map_err(|e| format!("RUST_LOG must be a log filter such as \"warn\" ({e}), got {v:?}"))?,
        };
        let port = match var("PORT")? {
            None => 4001,
            Some(v) => v.parse().map_err(|_| format!("PORT must be a port number (0-65535), got {v:?}"))?,
        };
        let timeout = millis("SOCKET_TIMEOUT_MS", 60_000, 1)?;
        let api_key = var("API_KEY")?.filter(|k| !k.is_empty());
        let presence_window = millis("PRESENCE_DIFF_WINDOW_MS", 0, 0)?;
        let rate_limits = match var("RATE_LIMITS")?.as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(v) => return Err(format!("RATE_LIMITS must be \"on\" or \"off\", got {v:?}")),
        };
        let node = var("NODE_NAME")?;
        if node.as_deref() == Some("") {
            return Err("NODE_NAME must not be empty".into());
        }
        let redis = fawkes_redis::env::config_from_env()?.map(|config| (config, node));
        let phoenix = fawkes_redis::env::PhoenixApp::from_env(redis.is_some())?;
        Ok(Settings { port, timeout, presence_window, rate_limits, redis, phoenix, log, api_key })
    }
}

/// An I/O error as people read it: `address already in use`, without the
/// operating system's error number.
fn reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    // the system's messages are capitalized sentences with a number
    match text.rfind(" (os error ") {
        Some(at) if e.raw_os_error().is_some() => {
            let mut chars = text[..at].chars();
            chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
        }
        _ => text,
    }
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what service managers send):
/// both stop the server gracefully.
async fn stop_requested() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conformance-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let settings = Settings::from_env()?;
    tracing_subscriber::fmt().with_env_filter(settings.log).init();
    let port = settings.port;
    let timeout = settings.timeout;
    let window = settings.presence_window;
    // for load tests that compare with servers that have no rate limits
    let rate_limits_off = !settings.rate_limits;
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {}", reason(&e)))?;
    let addr = listener.local_addr().map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {}", reason(&e)))?;

    // REDIS_URL: join the cluster of every node on that Redis
    let endpoint = match settings.redis {
        Some((mut config, node)) => {
            config.node_name = node.unwrap_or_else(|| format!("fawkes-{}@127.0.0.1", addr.port()));
            if let Some(app) = &settings.phoenix {
                config = config.phoenix_pubsub(&app.pubsub);
            }
            let sharded = config.shards > 0;
            let cluster = fawkes_redis::connect_cluster(config).await.map_err(|e| match e {
                fawkes_redis::RedisError::Url(url) => format!(
                    "REDIS_URL must be redis://[[user]:password@]host[:port][/db] (or rediss://, \
                     redis+sentinel://host:port/master, redis+cluster://host:port,...), got {url:?}"
                ),
                e => e.to_string(),
            })?;
            let endpoint = Endpoint::new(cluster.pubsub);
            if !sharded {
                // history:* topics are kept in Redis, for every node
                endpoint.set_shared_history(cluster.history);
            }
            endpoint
        }
        None => Endpoint::local(),
    };
    let mut presence = Presence::builder(&endpoint).diff_window(window);
    if let Some(app) = &settings.phoenix {
        presence = presence.phoenix(&app.presence).pool_size(app.pool_size);
    }
    let presence = presence.build();
    let leaving = presence.clone();
    // `history:*` is `room:*` with history: the last 1000 broadcasts, at
    // most 5 minutes old
    endpoint.history(
        "history:*",
        fawkes::history::HistoryConfig::new().max_messages(1000).max_age(Duration::from_secs(300)),
    );
    let socket = SocketHandler::new(UserSocket { presence: presence.clone() })
        .channel::<Room>("room:*")
        .channel::<Room>("history:*")
        .channel::<PresenceRoom>("presence:*")
        .configure(|c| {
            c.timeout = timeout;
            c.longpoll = true;
            if rate_limits_off {
                c.join_rate = None;
                c.socket_event_rate = None;
                c.channel_event_rate = None;
                c.fanout_rate = None;
            }
        });
    // Autobahn's 9.* cases send messages of up to 16 MiB
    let mut echo = fawkes::websocket::EchoConfig::default();
    echo.max_message_size = AUTOBAHN_MAX_MESSAGE;
    let mut api = Api::new(&endpoint).presence(presence.clone());
    if let Some(key) = &settings.api_key {
        api = api.key(key.clone());
    }
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|State(endpoint): State<Endpoint>| async move {
                ([(axum::http::header::CONTENT_TYPE, fawkes::telemetry::CONTENT_TYPE)], endpoint.prometheus())
            }),
        )
        .route("/autobahn", fawkes::websocket::echo(echo))
        .with_state(endpoint.clone())
        .merge(
            Router::new()
                .route("/api/broadcast", post(api_broadcast))
                .route("/api/disconnect", post(api_disconnect))
                .with_state(api.clone()),
        )
        .nest("/api/v1", api.router())
        .merge(endpoint.socket("/socket", socket));

    tracing::warn!("conformance server listening on http://{addr}");
    let shutdown_endpoint = endpoint.clone();
    fawkes::serve(listener, app)
        .with_graceful_shutdown(async move {
            stop_requested().await;
            leaving.leave_cluster();
            // connections close in batches, as Phoenix's drainer closes them
            shutdown_endpoint.drain(fawkes::Drain::default()).await;
        })
        .await
        .map_err(|e| format!("serving on {addr} failed: {}", reason(&e)))?;
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.pubsub().flush()).await;
    Ok(())
}
