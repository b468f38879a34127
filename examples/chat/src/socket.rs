//! The socket and channels: `room:<id>` (history, messages, typing,
//! presence with a status, per-recipient block lists) and the private
//! `notifications:<user_id>`.

use std::time::Duration;

use fawkes::{
    Channel, ChannelContext, ChannelError, ConnectError, ConnectInfo, HandleIn, HandleInfo, HandleOut, Join, Params,
    Payload, Socket,
};
use serde_json::{json, Value};

use crate::accounts::User;
use crate::chat::PostError;
use crate::App;

/// The chat's socket: `connect` verifies the sign-in token.
#[derive(Clone, Debug)]
pub struct ChatSocket {
    /// The application.
    pub app: App,
}

impl Socket for ChatSocket {
    type Assigns = User;

    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<User, ConnectError> {
        let id = self.app.accounts.verify(params.get_str("token")).map_err(|_| ConnectError::Refused)?;
        self.app.accounts.get(id).await.map_err(|e| ConnectError::Failed(Box::new(e)))?.ok_or(ConnectError::Refused)
    }

    fn id(&self, user: &User) -> Option<String> {
        Some(format!("user_socket:{}", user.id))
    }
}

/// One joined room.
#[derive(Debug)]
pub struct RoomChannel {
    room: i64,
}

/// What a room channel sends itself.
#[derive(Debug)]
pub enum RoomInfo {
    /// Push presence and track the user; push the latest messages
    /// (`message_history`) when `history`.
    AfterJoin {
        /// Whether to push the latest messages: not on a rejoin from a
        /// history position, which gets what it missed (or `history_gap`).
        history: bool,
    },
}

const STATUSES: [&str; 3] = ["online", "away", "busy"];

/// The `new_message` rate per user: a burst of 10, then 5 per second.
const MESSAGE_BURST: f64 = 10.0;
const MESSAGE_RATE: f64 = 5.0;

impl App {
    /// Takes a token from `user`'s message bucket, or says how long to wait
    /// (the channel's and the API's sends share it).
    pub(crate) fn allow_message(&self, user: i64) -> Result<(), Duration> {
        self.message_buckets.take(user, MESSAGE_RATE, MESSAGE_BURST)
    }
}

impl Channel<ChatSocket> for RoomChannel {
    type Info = RoomInfo;
    const INTERCEPT: &'static [&'static str] = &["new_message"];

    async fn join(
        topic: &str,
        params: Payload,
        ctx: &mut ChannelContext<ChatSocket, RoomInfo>,
    ) -> Result<Join<Self>, ChannelError> {
        let Some(room) = topic.strip_prefix("room:").and_then(|id| id.parse::<i64>().ok()) else {
            return Ok(Join::refuse(json!({"reason": "not_found"})));
        };
        let app = &ctx.handler().app;
        if app.chat.room(room).await?.is_none() {
            return Ok(Join::refuse(json!({"reason": "not_found"})));
        }
        if !app.chat.is_member(room, ctx.assigns().id).await? {
            return Ok(Join::refuse(json!({"reason": "not_a_member"})));
        }
        // A rejoin with `{"since": position}` gets the broadcasts it missed
        // (replayed by the endpoint's history, in order, before live ones),
        // or `history_gap` when they are no longer all kept, after which the
        // client reads what it lacks from the API: the latest messages would
        // only repeat what it has.
        let since = params.to_value().ok().and_then(|p| p.get("since").cloned()).unwrap_or(Value::Null);
        ctx.channel_ref().send(RoomInfo::AfterJoin { history: since.is_null() })?;
        Ok(Join::ok(RoomChannel { room }))
    }

    async fn handle_info(
        &mut self,
        info: RoomInfo,
        ctx: &mut ChannelContext<ChatSocket, RoomInfo>,
    ) -> Result<HandleInfo, ChannelError> {
        match info {
            RoomInfo::AfterJoin { history } => {
                let app = ctx.handler().app.clone();
                if history {
                    let messages = app.chat.history(self.room, None, None, 50).await?;
                    ctx.push("message_history", json!({"messages": messages}))?;
                }
                let state = app.presence.list(ctx.topic()).await;
                ctx.push("presence_state", Value::Object(state))?;
                let user = ctx.assigns().id.to_string();
                app.presence.track(ctx, &user, json!({"status": "online", "online_at": crate::db::now_iso()}))?;
            }
        }
        Ok(HandleInfo::Continue)
    }

    async fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<ChatSocket, RoomInfo>,
    ) -> Result<HandleIn, ChannelError> {
        let app = ctx.handler().app.clone();
        let me = ctx.assigns().id;
        let p = payload.to_value().unwrap_or(Value::Null);
        match event {
            "new_message" => {
                if let Err(wait) = app.allow_message(me) {
                    return Ok(HandleIn::error(
                        json!({"reason": "rate_limited", "retry_after": wait.as_millis().max(1) as u64}),
                    ));
                }
                let body = match crate::api::message_body(&p) {
                    Ok(b) => b,
                    Err(why) => return Ok(HandleIn::error(json!({"reason": "invalid", "errors": {"body": why}}))),
                };
                let client_id = match crate::api::message_client_id(&p) {
                    Ok(id) => id,
                    Err(why) => return Ok(HandleIn::error(json!({"reason": "invalid", "errors": {"client_id": why}}))),
                };
                let posted = match app.chat.post(self.room, me, &body, client_id.as_deref()).await {
                    Ok(posted) => posted,
                    Err(e @ PostError::ClientIdTaken) => {
                        return Ok(HandleIn::error(
                            json!({"reason": "invalid", "errors": {"client_id": e.to_string()}}),
                        ))
                    }
                    Err(PostError::Database(e)) => return Err(e.into()),
                };
                // A retried send (the client's reply was lost, or the official
                // client resent a push buffered while it was disconnected) gets
                // the same answer, and nothing is stored or broadcast again.
                // A new one goes out whatever the fan-out limit says (messages
                // have their own limit, checked above).
                if posted.created {
                    ctx.endpoint().broadcast(ctx.topic(), "new_message", json!(posted.message))?;
                }
                Ok(HandleIn::ok(json!({"message_id": posted.message.id})))
            }
            "typing" => {
                let typing = p.get("typing").and_then(Value::as_bool).unwrap_or(false);
                ctx.broadcast_from("user_typing", json!({"user_id": me, "typing": typing}))?;
                Ok(HandleIn::ok(json!({})))
            }
            "update_status" => {
                let status = p.get("status").and_then(Value::as_str).unwrap_or("");
                if !STATUSES.contains(&status) {
                    return Ok(HandleIn::error(
                        json!({"reason": "invalid", "errors": {"status": "must be online, away or busy"}}),
                    ));
                }
                let status = status.to_owned();
                app.presence.update(ctx, &me.to_string(), |old| {
                    let mut m = old.clone();
                    m.remove("phx_ref");
                    m.remove("phx_ref_prev");
                    m.insert("status".into(), Value::String(status));
                    Value::Object(m)
                })?;
                Ok(HandleIn::ok(json!({})))
            }
            _ => Ok(HandleIn::error(json!({"reason": "unknown_event"}))),
        }
    }

    /// Applies the recipient's block list.
    async fn handle_out(
        &mut self,
        _: &str,
        payload: Payload,
        ctx: &mut ChannelContext<ChatSocket, RoomInfo>,
    ) -> Result<HandleOut, ChannelError> {
        // runs for every recipient: read only the author, and the block
        // list is shared, not copied
        #[derive(serde::Deserialize)]
        struct Author {
            user_id: Option<i64>,
        }
        let author = payload.decode::<Author>()?.user_id;
        let blocked = ctx.handler().app.accounts.blocked_by(ctx.assigns().id).await?;
        Ok(match author {
            Some(a) if blocked.contains(&a) => HandleOut::Drop,
            _ => HandleOut::Push(payload),
        })
    }
}

/// `notifications:<user_id>`: only that user may join.
#[derive(Debug)]
pub struct NotificationsChannel;

impl Channel<ChatSocket> for NotificationsChannel {
    type Info = ();

    async fn join(
        topic: &str,
        _: Payload,
        ctx: &mut ChannelContext<ChatSocket, ()>,
    ) -> Result<Join<Self>, ChannelError> {
        if topic.strip_prefix("notifications:") == Some(ctx.assigns().id.to_string().as_str()) {
            Ok(Join::ok(NotificationsChannel))
        } else {
            Ok(Join::refuse(json!({"reason": "unauthorized"})))
        }
    }
}
