//! Rooms: `room:<id>` topics routed to one channel type, the id read from
//! the topic, a reply to the sender and a broadcast to the room.

use fawkes::*;
use serde_json::json;

/// Anyone may connect; the `name` connect param names them.
#[derive(Debug)]
pub struct UserSocket;

impl Socket for UserSocket {
    type Assigns = String;
    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<String, ConnectError> {
        Ok(params.get_str("name").unwrap_or("anonymous").to_owned())
    }
}

/// The channel of `room:<id>`; rooms are numbered.
#[derive(Debug)]
pub struct Room {
    id: u64,
}

impl Channel<UserSocket> for Room {
    type Info = ();

    async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
        match ctx.subtopic().parse() {
            Ok(id) => Ok(Join::ok_with(Room { id }, json!({"room": id}))),
            Err(_) => Ok(Join::refuse(json!({"reason": "rooms are numbered"}))),
        }
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut Ctx<Self, UserSocket>,
    ) -> Result<HandleIn, ChannelError> {
        match event {
            "shout" => {
                let body = payload.to_value()?["body"].clone();
                ctx.broadcast("shout", json!({"body": body, "by": ctx.assigns(), "room": self.id}))?;
                Ok(HandleIn::ok(json!({})))
            }
            _ => Ok(HandleIn::error(json!({"reason": "unknown event"}))),
        }
    }
}

/// The application: the socket at `/socket`.
pub fn app(endpoint: &Endpoint) -> axum::Router {
    endpoint.socket("/socket", SocketHandler::new(UserSocket).channel::<Room>("room:*"))
}
