//! Fawkes: Phoenix Channels for Rust.
//!
//! A Fawkes server speaks the Phoenix Channels protocol so exactly that the
//! official `phoenix` JavaScript client (and other Phoenix clients) cannot
//! tell it from Phoenix. The model is Phoenix's:
//!
//! * an [`Endpoint`] mounts sockets and broadcasts from anywhere;
//! * a [`Socket`] authenticates each connection once, in `connect`, and may
//!   give it an id so that all of a user's connections can be closed at once;
//! * [`Channel`]s handle topics (`room:*`), one task per joined topic, with
//!   `join`, `handle_in`, `handle_out`, `handle_info` and `terminate`; a crash
//!   in one channel harms nothing else;
//! * broadcasts go through [`PubSub`], encoded once per serializer and shared
//!   by every subscriber.
//!
//! # Getting started
//!
//! The dependencies of a new application:
//!
//! ```toml
//! [dependencies]
//! fawkes = "0.1"
//! tokio = { version = "1", features = ["rt-multi-thread", "macros", "net"] }
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//! tracing-subscriber = "0.3"
//!
//! [dev-dependencies]
//! fawkes-test = "0.1"
//! ```
//!
//! Fawkes reports through [`tracing`](https://docs.rs/tracing): a channel
//! crash, or [`Endpoint::verify`] called before a secret key base was set,
//! is logged, not returned. Install a subscriber at startup
//! (`tracing_subscriber::fmt::init()`), or these go unseen.
//!
//! # Example
//!
//! ```no_run
//! use fawkes::{Channel, ChannelError, ConnectError, ConnectInfo, Ctx, Endpoint, HandleIn, Join, Params, Payload, Socket, SocketHandler};
//! use serde_json::json;
//!
//! struct UserSocket;
//!
//! impl Socket for UserSocket {
//!     type Assigns = Option<String>;
//!     async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<Self::Assigns, ConnectError> {
//!         Ok(params.get_str("user_id").map(str::to_owned))
//!     }
//! }
//!
//! struct Room;
//!
//! impl Channel<UserSocket> for Room {
//!     type Info = ();
//!     async fn join(_topic: &str, _payload: Payload, _ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
//!         Ok(Join::ok(Room))
//!     }
//!     async fn handle_in(&mut self, event: &str, payload: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<HandleIn, ChannelError> {
//!         ctx.broadcast(event, payload)?;
//!         Ok(HandleIn::ok(json!({})))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     tracing_subscriber::fmt::init();
//!     let endpoint = Endpoint::local();
//!     let app = endpoint.socket("/socket", SocketHandler::new(UserSocket).channel::<Room>("room:*"));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
//!     fawkes::serve(listener, app).await
//! }
//! ```
//!
//! The [`guide`] walks through channels and presence in the order of
//! Phoenix's guides; testing channels without a network is the
//! `fawkes-test` crate.

pub mod admin;
pub mod api;
mod channel;
mod config;
mod conn;
mod endpoint;
pub mod guide;
mod handler;
pub mod history;
mod limits;
mod origin;
mod presence;
mod queue;
mod router;
pub mod serve;
mod server;
mod session;
mod socket;
pub mod telemetry;
pub mod transport;

/// WebSocket endpoints besides a socket's: an echo on the same WebSocket
/// layer, for conformance suites.
pub mod websocket {
    pub use crate::transport::ws_echo::{echo, EchoConfig};
}

pub use channel::RateLimited;
pub use channel::{
    BroadcastError, Channel, ChannelContext, ChannelError, ChannelRef, Ctx, HandleIn, HandleInfo, HandleOut, Join,
    PushError, ReplyRef, SendError, StopReason,
};
pub use config::{
    CheckOrigin, ForwardedHeaders, OriginConfigError, PublicUrl, RateLimit, SocketConfig, TrustedProxies,
};
pub use endpoint::{Drain, Endpoint, DEFAULT_OUTBOUND_BUDGET};
pub use handler::{SocketHandler, SocketService};
pub use presence::{Presence, PresenceBuilder, PresenceError, PresencePid, Replication};
pub use serve::{serve, Serve};
pub use socket::{ConnectError, ConnectInfo, Params, Socket};
pub use transport::local::LocalConnection;

/// The axum Fawkes is built on (0.8, with the `http1`, `json`, `tokio` and
/// `query` features): its routers merge with the application's own, so an
/// application that depends on this one needs no version of its own.
pub use axum;
pub use fawkes_protocol as protocol;
pub use fawkes_protocol::{Broadcast, Frame, IntoPayload, Message, Payload, Ref, Vsn};
pub use fawkes_pubsub as pubsub;
pub use fawkes_pubsub::{PubSub, SubscriberId, Subscription};
pub use fawkes_token as token;
pub use fawkes_tracker as tracker;

/// The README's Rust examples, compiled (and run) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
