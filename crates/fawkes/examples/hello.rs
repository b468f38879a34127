//! The README's example ("A socket and a channel"), kept identical to it: a
//! socket and a channel, served on 127.0.0.1:4000.
//!
//!     cargo run -p fawkes --example hello

use fawkes::{
    axum, Channel, ChannelError, ConnectError, ConnectInfo, Ctx, Endpoint, HandleIn, Join, Params, Payload, Socket,
    SocketHandler,
};
use serde_json::json;

struct UserSocket;

impl Socket for UserSocket {
    type Assigns = String; // the user id, read by every channel

    async fn connect(&self, params: &Params, _info: &ConnectInfo) -> Result<String, ConnectError> {
        params.get_str("user_id").map(str::to_owned).ok_or(ConnectError::Refused)
    }

    // all of a user's connections can be closed with endpoint.disconnect("user_socket:<id>")
    fn id(&self, user: &String) -> Option<String> {
        Some(format!("user_socket:{user}"))
    }
}

struct Room;

impl Channel<UserSocket> for Room {
    type Info = ();

    async fn join(topic: &str, _payload: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
        if topic == "room:private" {
            return Ok(Join::refuse(json!({"reason": "unauthorized"})));
        }
        ctx.push("welcome", json!({"user": ctx.assigns()}))?; // sent after the join reply
        Ok(Join::ok(Room))
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut Ctx<Self, UserSocket>,
    ) -> Result<HandleIn, ChannelError> {
        match event {
            "new_msg" => {
                ctx.broadcast("new_msg", payload)?; // every subscriber, on every node
                Ok(HandleIn::ok(json!({})))
            }
            _ => Ok(HandleIn::error(json!({"reason": "unknown event"}))),
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt::init(); // channel crashes and configuration errors are logged here
    let endpoint = Endpoint::local();
    let app = axum::Router::new()
        // your own routes here; endpoint.broadcast(...) works from any handler
        .merge(endpoint.socket("/socket", SocketHandler::new(UserSocket).channel::<Room>("room:*")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    fawkes::serve(listener, app).await
}
