//! The guide: channels and presence, from a first topic to several nodes.
//!
//! It follows the order of Phoenix's Channels and Presence guides, and each
//! example is compiled and run with the crate's tests. What Phoenix writes
//! as a module with callbacks is a type implementing [`Channel`] here; what
//! Phoenix keeps in `socket.assigns` is the typed [`Socket::Assigns`] set by
//! `connect`. The repository's `examples/dashboard` puts most of it
//! together in one application, next to the same application in Phoenix.
//!
//! 1. [Topics and routing](#topics-and-routing)
//! 2. [Authorization](#authorization)
//! 3. [Replies and pushes](#replies-and-pushes)
//! 4. [Intercepting broadcasts](#intercepting-broadcasts)
//! 5. [External topics and timers](#external-topics-and-timers)
//! 6. [Presence in a channel](#presence-in-a-channel)
//! 7. [Testing](#testing)
//! 8. [Application state and axum](#application-state-and-axum)
//! 9. [Several nodes](#several-nodes)
//! 10. [Continuity: history and rejoins](#continuity-history-and-rejoins)
//!
//! # Topics and routing
//!
//! A client joins topics such as `"room:lobby"` or `"room:42"`. A socket
//! routes them to channel types by pattern: an exact topic, or a prefix
//! ending in `*` (Phoenix's `channel "room:*", RoomChannel`). Routes are
//! tried in order; a topic no route matches is refused with
//! `{"reason": "unmatched topic"}`, as Phoenix does.
//!
//! Inside a channel, [`ChannelContext::subtopic`] is the part of the topic
//! the `*` matched: Phoenix's `def join("room:" <> id, ...)`. [`Ctx<C, S>`]
//! names the context of channel `C` on socket `S`, so that a signature does
//! not repeat the channel's `Info` type.
//!
//! ```
//! use fawkes::{Channel, ChannelError, ConnectError, ConnectInfo, Ctx, Endpoint, Join, Params, Payload, Socket, SocketHandler};
//! use serde_json::json;
//!
//! struct UserSocket;
//!
//! impl Socket for UserSocket {
//!     type Assigns = ();
//!     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> {
//!         Ok(())
//!     }
//! }
//!
//! struct Room {
//!     id: u64,
//! }
//!
//! impl Channel<UserSocket> for Room {
//!     type Info = ();
//!
//!     async fn join(_topic: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
//!         // "room:42" -> "42"; "room:lobby" is refused with a reason
//!         match ctx.subtopic().parse() {
//!             Ok(id) => Ok(Join::ok_with(Room { id }, json!({"id": id}))),
//!             Err(_) => Ok(Join::refuse(json!({"reason": "no such room"}))),
//!         }
//!     }
//! }
//!
//! let endpoint = Endpoint::local();
//! let router: fawkes::axum::Router = endpoint.socket("/socket", SocketHandler::new(UserSocket).channel::<Room>("room:*"));
//! # let _ = router;
//! ```
//!
//! Routing a channel to a socket it is not written for is refused at
//! compile time, with a message that says what to write:
//!
//! ```compile_fail
//! # use fawkes::*;
//! # struct UserSocket;
//! # impl Socket for UserSocket {
//! #     type Assigns = ();
//! #     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> { Ok(()) }
//! # }
//! # struct AdminSocket;
//! # impl Socket for AdminSocket {
//! #     type Assigns = ();
//! #     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> { Ok(()) }
//! # }
//! struct Room;
//! impl Channel<AdminSocket> for Room {
//!     type Info = ();
//!     async fn join(_: &str, _: Payload, _: &mut Ctx<Self, AdminSocket>) -> Result<Join<Self>, ChannelError> {
//!         Ok(Join::ok(Room))
//!     }
//! }
//! // error[E0277]: `Room` is not a channel of socket `UserSocket`
//! //   = note: write `impl fawkes::Channel<UserSocket> for Room` (with at least `type Info` and `async fn join`)
//! SocketHandler::new(UserSocket).channel::<Room>("room:*");
//! ```
//!
//! # Authorization
//!
//! Authenticate once per connection in [`Socket::connect`], usually with a
//! Phoenix.Token the page got from the server and sends as a connect param
//! (`new Socket("/socket", {params: {token}})`). The endpoint holds the
//! secret key base, as Phoenix's does: [`Endpoint::sign`] makes tokens
//! (from an HTTP handler, for the page), [`Endpoint::verify`] checks them
//! and gives back their data as any `Deserialize` type. Tokens are
//! byte-compatible with `Phoenix.Token` for the same secret key base.
//!
//! Authorize each topic in [`Channel::join`]: [`Join::refuse`] answers the
//! client's join with an error reply and starts nothing.
//!
//! Install a `tracing` subscriber at startup (`tracing_subscriber::fmt::init()`):
//! Fawkes logs through `tracing` what it cannot return to you, such as
//! [`Endpoint::verify`] called before a secret key base was set (every
//! token then fails to verify) or a channel that crashed.
//!
//! ```
//! use fawkes::token::MaxAge;
//! use fawkes::*;
//! use serde::{Deserialize, Serialize};
//! use serde_json::json;
//!
//! #[derive(Serialize, Deserialize)]
//! struct User {
//!     id: u64,
//!     projects: Vec<u64>,
//! }
//!
//! struct UserSocket {
//!     endpoint: Endpoint,
//! }
//!
//! impl Socket for UserSocket {
//!     type Assigns = User;
//!     async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<User, ConnectError> {
//!         let two_weeks = MaxAge::Seconds(14.0 * 86_400.0);
//!         self.endpoint.verify("user socket", params.get_str("token"), two_weeks).map_err(|_| ConnectError::Refused)
//!     }
//!     // all of a user's connections can be closed with endpoint.disconnect("user:7")
//!     fn id(&self, user: &User) -> Option<String> {
//!         Some(format!("user:{}", user.id))
//!     }
//! }
//!
//! struct Project;
//!
//! impl Channel<UserSocket> for Project {
//!     type Info = ();
//!     async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
//!         let id: u64 = ctx.subtopic().parse()?;
//!         if !ctx.assigns().projects.contains(&id) {
//!             return Ok(Join::refuse(json!({"reason": "unauthorized"})));
//!         }
//!         Ok(Join::ok(Project))
//!     }
//! }
//!
//! let endpoint = Endpoint::local();
//! endpoint.set_secret_key_base("at least twenty bytes of secret key base").unwrap();
//! // in the HTTP handler that renders the page:
//! let token = endpoint.sign("user socket", &User { id: 7, projects: vec![1, 2] }).unwrap();
//! # let _ = token;
//! let _router = endpoint.socket("/socket", SocketHandler::new(UserSocket { endpoint: endpoint.clone() }).channel::<Project>("project:*"));
//! ```
//!
//! # Replies and pushes
//!
//! [`Channel::handle_in`] handles a client's event and returns a
//! [`HandleIn`]: a reply (`ok`, `error` or any status), no reply, or stop.
//! Besides replying, a channel can [`push`](ChannelContext::push) to this
//! client only, [`broadcast`](ChannelContext::broadcast) to every
//! subscriber of the topic on every node, or
//! [`broadcast_from`](ChannelContext::broadcast_from) to all but this client.
//! [`Endpoint::broadcast`] does the same from anywhere else (an HTTP
//! handler, a background job).
//!
//! A payload is a `serde_json::Value` (`json!`), a `serde_json::Map` (what
//! [`Presence::list`] returns), `Bytes` (binary, V2 clients) or a
//! [`Payload`]; any other `Serialize` value becomes one with
//! [`Payload::json`]. Anything else is a compile error that says so (see
//! [`IntoPayload`]).
//!
//! Returning `Err` from a callback crashes the channel, as an exception in a
//! Phoenix channel does: the client gets `phx_error` and rejoins, and
//! nothing else on the socket is harmed. Use `HandleIn::error` for errors
//! that are the client's to handle.
//!
//! ```
//! # use fawkes::*;
//! # struct UserSocket;
//! # impl Socket for UserSocket {
//! #     type Assigns = String;
//! #     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<String, ConnectError> { Ok("ada".into()) }
//! # }
//! use serde_json::json;
//!
//! #[derive(serde::Serialize)]
//! struct Message<'a> {
//!     body: &'a str,
//!     by: &'a str,
//! }
//!
//! struct Room;
//!
//! impl Channel<UserSocket> for Room {
//!     type Info = ();
//!
//!     async fn join(_: &str, _: Payload, _: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
//!         Ok(Join::ok(Room))
//!     }
//!
//!     async fn handle_in(&mut self, event: &str, payload: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<HandleIn, ChannelError> {
//!         match event {
//!             "new_msg" => {
//!                 let body = payload.to_value()?["body"].as_str().unwrap_or_default().to_owned();
//!                 if body.is_empty() {
//!                     return Ok(HandleIn::error(json!({"reason": "empty"})));
//!                 }
//!                 ctx.broadcast("new_msg", Payload::json(&Message { body: &body, by: ctx.assigns() })?)?;
//!                 Ok(HandleIn::ok(json!({})))
//!             }
//!             "ping" => {
//!                 ctx.push("pong", json!({}))?;
//!                 Ok(HandleIn::NoReply)
//!             }
//!             _ => Ok(HandleIn::error(json!({"reason": "unknown event"}))),
//!         }
//!     }
//! }
//! ```
//!
//! A reply can also come later, from another task, through
//! [`ChannelContext::reply_ref`] (Phoenix's `socket_ref` and `reply/2`).
//!
//! # Intercepting broadcasts
//!
//! A broadcast is encoded once and written to every subscriber without
//! visiting their channels. To change or drop it per subscriber, list its
//! event in [`Channel::INTERCEPT`]: each subscriber's
//! [`Channel::handle_out`] then decides, with [`HandleOut::Push`] or
//! [`HandleOut::Drop`]. `handle_out` is called only for the events listed
//! there: a broadcast of any other event goes out unchanged, without
//! calling it. It costs one encoding per subscriber: intercept only the
//! events that need it.
//!
//! ```
//! # use fawkes::*;
//! # struct UserSocket;
//! # impl Socket for UserSocket {
//! #     type Assigns = bool;
//! #     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<bool, ConnectError> { Ok(false) }
//! # }
//! use serde_json::{Map, Value};
//!
//! struct Deploys;
//!
//! impl Channel<UserSocket> for Deploys {
//!     type Info = ();
//!     const INTERCEPT: &'static [&'static str] = &["deploy_started"];
//!
//!     async fn join(_: &str, _: Payload, _: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
//!         Ok(Join::ok(Deploys))
//!     }
//!
//!     // assigns: whether the user is an admin
//!     async fn handle_out(&mut self, _event: &str, payload: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<HandleOut, ChannelError> {
//!         let mut deploy: Map<String, Value> = payload.decode()?;
//!         if !*ctx.assigns() {
//!             deploy.remove("secret");
//!         }
//!         Ok(HandleOut::Push(deploy.into()))
//!     }
//! }
//! ```
//!
//! # External topics and timers
//!
//! A channel receives its own messages in [`Channel::handle_info`], as
//! values of its `Info` type. They come from:
//!
//! * [`ChannelContext::subscribe`]: the broadcasts of another topic
//!   (Phoenix's `Endpoint.subscribe` in a channel), as `Info::from(broadcast)`;
//! * [`ChannelContext::send_after`] and [`ChannelContext::send_interval`]
//!   (`Process.send_after`, `:timer.send_interval`);
//! * [`ChannelContext::channel_ref`]: a handle to send from any task.
//!
//! Subscriptions and timers end with the channel, however it ends (leave,
//! crash, closed connection, duplicate join): nothing to clean up in
//! `terminate`.
//!
//! ```
//! # use fawkes::*;
//! # struct UserSocket;
//! # impl Socket for UserSocket {
//! #     type Assigns = ();
//! #     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> { Ok(()) }
//! # }
//! use std::time::Duration;
//! use serde_json::json;
//!
//! #[derive(Clone)]
//! enum Info {
//!     Tick,
//!     Alert(Broadcast),
//! }
//!
//! impl From<Broadcast> for Info {
//!     fn from(b: Broadcast) -> Info {
//!         Info::Alert(b)
//!     }
//! }
//!
//! struct Dashboard;
//!
//! impl Channel<UserSocket> for Dashboard {
//!     type Info = Info;
//!
//!     async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
//!         ctx.subscribe("ops:alerts");
//!         ctx.send_interval(Duration::from_secs(5), Info::Tick);
//!         Ok(Join::ok(Dashboard))
//!     }
//!
//!     async fn handle_info(&mut self, info: Info, ctx: &mut Ctx<Self, UserSocket>) -> Result<HandleInfo, ChannelError> {
//!         match info {
//!             Info::Tick => ctx.push("tick", json!({}))?,
//!             Info::Alert(alert) => ctx.push("alert", alert.payload)?,
//!         }
//!         Ok(HandleInfo::Continue)
//!     }
//! }
//! ```
//!
//! # Presence in a channel
//!
//! A [`Presence`] tracks who is on each topic, across nodes, and sends
//! clients `presence_state` and `presence_diff` in the format of the
//! official client's `Presence`. Build one per application and keep it in
//! the socket handler, where every channel reaches it through
//! [`ChannelContext::handler`]. Track in `join`, push the current list as
//! `presence_state` (pushes made in `join` are sent after the join reply,
//! so there is no need for Phoenix's `:after_join` message), and change the
//! meta with [`Presence::update`]. The presence leaves with the channel.
//!
//! ```
//! use fawkes::*;
//! use serde_json::json;
//!
//! struct UserSocket {
//!     presence: Presence,
//! }
//!
//! impl Socket for UserSocket {
//!     type Assigns = String;
//!     async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<String, ConnectError> {
//!         params.get_str("user").map(str::to_owned).ok_or(ConnectError::Refused)
//!     }
//! }
//!
//! struct Room;
//!
//! impl Channel<UserSocket> for Room {
//!     type Info = ();
//!
//!     async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
//!         let presence = &ctx.handler().presence;
//!         presence.track(ctx, ctx.assigns(), json!({"status": "online"}))?;
//!         ctx.push("presence_state", presence.list(ctx.topic()).await)?;
//!         Ok(Join::ok(Room))
//!     }
//!
//!     async fn handle_in(&mut self, _: &str, payload: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<HandleIn, ChannelError> {
//!         let status = payload.to_value()?["status"].clone();
//!         ctx.handler().presence.update(ctx, ctx.assigns(), |_| json!({"status": status}))?;
//!         Ok(HandleIn::ok(json!({})))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // inside the runtime: a presence runs a task
//! let endpoint = Endpoint::local();
//! let presence = Presence::new(&endpoint);
//! let _router = endpoint.socket("/socket", SocketHandler::new(UserSocket { presence }).channel::<Room>("room:*"));
//! # });
//! ```
//!
//! [`Presence::builder`] adds a `fetch` hook (Phoenix's `fetch/2`: names
//! from the database in one query for a whole list or diff).
//!
//! # Testing
//!
//! The `fawkes-test` crate is Phoenix.ChannelTest: `socket(&service,
//! assigns)` gives a connected client with the assigns of your choice
//! (no token to sign), `connect` runs the real `connect`,
//! `subscribe_and_join`, `push`, and `assert_reply!`, `assert_push!`,
//! `assert_broadcast!` and their `refute_*!` wait for what the channel
//! sends. An expected payload is a pattern, as in ChannelTest: `json!({"a":
//! 1})` matches any object with `"a": 1`; a closure (`|p| p["n"] == 1`)
//! needs no annotation.
//!
//! A test drives the same service the application serves:
//! `SocketHandler::new(..).channel::<..>(..).build(&endpoint)` gives the
//! [`SocketService`]; the application mounts it with
//! `service.router("/socket")` and the test passes it to `socket` or
//! `connect`, with no server to start.
//!
//! `join` joins without subscribing the test to the topic's broadcasts;
//! `subscribe_and_join` (Phoenix.ChannelTest's) subscribes first. Use the
//! latter whenever the test asserts broadcasts: `assert_broadcast!` on a
//! channel opened with `join` fails at once, saying so. Pushes, replies and
//! the broadcasts the client receives are seen either way. The presence
//! channel above, tested:
//!
//! ```
//! # use fawkes::*;
//! # use serde_json::json;
//! # struct UserSocket { presence: Presence }
//! # impl Socket for UserSocket {
//! #     type Assigns = String;
//! #     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<String, ConnectError> { Err(ConnectError::Refused) }
//! # }
//! # struct Room;
//! # impl Channel<UserSocket> for Room {
//! #     type Info = ();
//! #     async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
//! #         let presence = &ctx.handler().presence;
//! #         presence.track(ctx, ctx.assigns(), json!({"status": "online"}))?;
//! #         ctx.push("presence_state", presence.list(ctx.topic()).await)?;
//! #         Ok(Join::ok(Room))
//! #     }
//! #     async fn handle_in(&mut self, _: &str, payload: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<HandleIn, ChannelError> {
//! #         let status = payload.to_value()?["status"].clone();
//! #         ctx.handler().presence.update(ctx, ctx.assigns(), |_| json!({"status": status}))?;
//! #         Ok(HandleIn::ok(json!({})))
//! #     }
//! # }
//! use fawkes_test::{assert_push, assert_reply, socket};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let endpoint = Endpoint::local();
//! let presence = Presence::new(&endpoint);
//! let service = SocketHandler::new(UserSocket { presence: presence.clone() }).channel::<Room>("room:*").build(&endpoint);
//!
//! // the application serves the same service: an `axum::Router` with /socket/websocket
//! let _router = service.router("/socket");
//!
//! let (_, room) = socket(&service, "ada".to_owned()).subscribe_and_join("room:1", json!({})).await.unwrap();
//! assert_push!(room, "presence_state", json!({"ada": {"metas": [{"status": "online"}]}}));
//! let r = room.push("status", json!({"status": "away"}));
//! assert_reply!(room, r, "ok", json!({}));
//! assert_push!(room, "presence_diff", |d| d["joins"]["ada"]["metas"][0]["status"] == "away");
//! assert_eq!(presence.list("room:1").await["ada"]["metas"][0]["status"], "away");
//! # });
//! ```
//!
//! Never sleep in a channel test: assert on the reply or push you expect,
//! then on what follows from it.
//!
//! # Application state and axum
//!
//! The socket handler is the natural home of application state (a database
//! pool, a [`Presence`], the [`Endpoint`]): every channel reaches it with
//! [`ChannelContext::handler`], the connection's own data with
//! [`ChannelContext::assigns`].
//!
//! Fawkes serves over axum 0.8 (with its `http1`, `json`, `tokio` and
//! `query` features) and re-exports it as [`fawkes::axum`](crate::axum),
//! so an application needs no axum dependency of its own; depending on
//! axum 0.8 directly works too (the same crate), another major version does
//! not. [`SocketService::router_with_state`] gives the socket's routes in a
//! router of the application's state type, to merge before `.with_state`:
//!
//! ```
//! # use fawkes::*;
//! # struct UserSocket;
//! # impl Socket for UserSocket {
//! #     type Assigns = ();
//! #     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> { Ok(()) }
//! # }
//! use fawkes::axum::{extract::{Path, State}, http::StatusCode, routing::post, Router};
//! use serde_json::json;
//!
//! #[derive(Clone)]
//! struct App {
//!     endpoint: Endpoint,
//! }
//!
//! async fn start_deploy(State(app): State<App>, Path(project): Path<u64>) -> StatusCode {
//!     match app.endpoint.broadcast(&format!("project:{project}"), "deploy_started", json!({})) {
//!         Ok(()) => StatusCode::ACCEPTED,
//!         Err(_) => StatusCode::SERVICE_UNAVAILABLE,
//!     }
//! }
//!
//! let endpoint = Endpoint::local();
//! let socket = SocketHandler::new(UserSocket).build(&endpoint);
//! let router: Router = Router::new()
//!     .route("/deploys/{project}", post(start_deploy))
//!     .merge(socket.router_with_state::<App>("/socket"))
//!     .with_state(App { endpoint });
//! # let _ = router;
//! ```
//!
//! [`serve`](crate::serve()) serves such a router with timeouts, a
//! connection cap and graceful shutdown: use it for a public server
//! (`axum::serve` has none of these limits).
//!
//! # Several nodes
//!
//! Give the endpoint a PubSub that spans nodes and everything above spans
//! them: broadcasts, `disconnect`, presence (replicated with
//! Phoenix.Tracker's protocol), long-poll sessions. `fawkes-redis` provides
//! one on Redis, in `phoenix_pubsub_redis`'s format, so Fawkes and Phoenix
//! nodes can share a cluster:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = fawkes_redis::connect_cluster(fawkes_redis::RedisConfig::new("redis://127.0.0.1:6379", "node-a")).await?;
//! let endpoint = fawkes::Endpoint::new(cluster.pubsub.clone());
//! // presence replicates over the same PubSub
//! let presence = fawkes::Presence::new(&endpoint);
//! # let _ = presence; Ok(()) }
//! ```
//!
//! Every node needs the same secret key base for tokens signed on one to
//! verify on another. On a node about to stop, [`Presence::leave_cluster`]
//! then [`Endpoint::drain`] let the others know at once and move clients in
//! batches.
//!
//! # Continuity: history and rejoins
//!
//! The official client rejoins its topics after a dropped connection. What
//! was broadcast meanwhile is lost unless the topic keeps a history:
//! [`Endpoint::history`] gives each broadcast of matching topics a
//! position, and a rejoin with `{"since": position}` gets what it missed,
//! in order, before live broadcasts (see [`history`](crate::history)).
//! With `fawkes_redis::Cluster::history` the history lives in Redis
//! Streams, so a client can come back on any node.
//!
//! ```
//! use std::time::Duration;
//! use fawkes::{history::HistoryConfig, Endpoint};
//!
//! let endpoint = Endpoint::local();
//! endpoint.history("project:*", HistoryConfig::new().max_messages(1000).max_age(Duration::from_secs(300)));
//! ```
//!
//! On the client, pass the join params as a function so that each rejoin
//! sends the last position seen:
//!
//! ```js
//! let since = null
//! const channel = socket.channel("project:1", () => (since ? {since} : {}))
//! channel.on("deploy_started", (payload, ref) => { since = ref; /* ... */ })
//! ```

#[allow(unused_imports)]
use crate::{
    Channel, ChannelContext, Ctx, Endpoint, HandleIn, HandleOut, IntoPayload, Join, Payload, Presence, Socket,
    SocketService,
};
