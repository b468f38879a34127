//! Presence: who is in each room, each with a status that an event changes.
//! The client's `Presence` (phoenix.js) reads `presence_state` and
//! `presence_diff` as it does from Phoenix.

use fawkes::*;
use serde_json::json;

/// Connections carry the user's name (`name` connect param).
#[derive(Debug)]
pub struct UserSocket {
    /// Who is in each room.
    pub presence: Presence,
}

impl Socket for UserSocket {
    type Assigns = String;
    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<String, ConnectError> {
        params.get_str("name").map(str::to_owned).ok_or(ConnectError::Refused)
    }
}

/// The channel of `room:*`.
#[derive(Debug)]
pub struct Room;

impl Channel<UserSocket> for Room {
    type Info = ();

    async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
        let presence = &ctx.handler().presence;
        presence.track(ctx, ctx.assigns(), json!({"status": "online"}))?;
        // pushed after the join reply: no `:after_join` message needed
        ctx.push("presence_state", presence.list(ctx.topic()).await)?;
        Ok(Join::ok(Room))
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut Ctx<Self, UserSocket>,
    ) -> Result<HandleIn, ChannelError> {
        match event {
            "set_status" => {
                let status = payload.to_value()?["status"].clone();
                ctx.handler().presence.update(ctx, ctx.assigns(), |_| json!({"status": status}))?;
                Ok(HandleIn::ok(json!({})))
            }
            _ => Ok(HandleIn::error(json!({"reason": "unknown event"}))),
        }
    }
}

/// The socket service (inside a Tokio runtime: a presence runs a task).
pub fn service(endpoint: &Endpoint) -> SocketService<UserSocket> {
    SocketHandler::new(UserSocket { presence: Presence::new(endpoint) }).channel::<Room>("room:*").build(endpoint)
}
