//! The socket and channels: `room:<id>` (history, messages, typing,
//! presence with a status, per-recipient block lists) and the private
//! `notifications:<user_id>`.

use std::time::Duration;

use fawkes::{
    Channel, ChannelContext, ChannelError, ConnectError, ConnectInfo, HandleIn, HandleInfo, HandleOut, Join, Params,
    Payload, Socket,
};
use serde_json::{json, Value};

use crate::accounts::{AccountError, User};
use crate::chat::{ChangeError, PostError};
use crate::App;

/// The chat's socket: `connect` checks the session token (`token`).
#[derive(Clone, Debug)]
pub struct ChatSocket {
    /// The application.
    pub app: App,
}

/// A connected socket's assigns: who, and in which session.
#[derive(Clone, Debug)]
pub struct Me {
    /// The signed-in user.
    pub user: User,
    /// The session's id.
    pub session: String,
}

/// The socket id of a session's sockets: a `disconnect` broadcast on it
/// closes them (at sign-out), as Phoenix's `MyAppWeb.Endpoint.broadcast(
/// socket_id, "disconnect", %{})` does.
pub fn session_socket_id(session: &str) -> String {
    format!("session_socket:{session}")
}

impl Socket for ChatSocket {
    type Assigns = Me;

    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<Me, ConnectError> {
        match self.app.accounts.session(params.get_str("token")).await {
            Ok((user, session)) => Ok(Me { user, session }),
            Err(AccountError::Database(e)) => Err(ConnectError::Failed(Box::new(e))),
            Err(_) => Err(ConnectError::Refused),
        }
    }

    fn id(&self, me: &Me) -> Option<String> {
        Some(session_socket_id(&me.session))
    }
}

/// One joined room.
#[derive(Debug)]
pub struct RoomChannel {
    room: i64,
    /// The status this channel's presence shows.
    status: String,
}

/// The topic where a user's status changes are announced to all of their
/// channels (every tab, every room, every node).
fn status_topic(user: i64) -> String {
    format!("user_status:{user}")
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
    /// A broadcast of a topic the channel follows: the user's status
    /// changed (`status` on `user_status:<id>`).
    Followed(fawkes::Broadcast),
}

impl From<fawkes::Broadcast> for RoomInfo {
    fn from(b: fawkes::Broadcast) -> RoomInfo {
        RoomInfo::Followed(b)
    }
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
    const INTERCEPT: &'static [&'static str] = &["new_message", "message_edited", "message_deleted", "user_typing"];

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
        if !app.chat.is_member(room, ctx.assigns().user.id).await? {
            return Ok(Join::refuse(json!({"reason": "not_a_member"})));
        }
        // A rejoin with `{"since": position}` gets the broadcasts it missed
        // (replayed by the endpoint's history, in order, before live ones),
        // or `history_gap` when they are no longer all kept, after which the
        // client reads what it lacks from the API: the latest messages would
        // only repeat what it has.
        let since = params.to_value().ok().and_then(|p| p.get("since").cloned()).unwrap_or(Value::Null);
        ctx.channel_ref().send(RoomInfo::AfterJoin { history: since.is_null() })?;
        Ok(Join::ok(RoomChannel { room, status: "online".into() }))
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
                    let messages = app.chat.history(self.room, ctx.assigns().user.id, None, None, 50).await?;
                    ctx.push("message_history", json!({"messages": messages}))?;
                }
                let state = app.presence.list(ctx.topic()).await;
                ctx.push("presence_state", Value::Object(state))?;
                let me = ctx.assigns().user.id;
                // the status is the user's, not the tab's: the stored one,
                // and every later change of it, in every tab
                ctx.subscribe(&status_topic(me));
                self.status = app.accounts.status(me).await?;
                let meta = json!({"status": self.status, "online_at": crate::db::now_iso()});
                app.presence.track(ctx, &me.to_string(), meta)?;
            }
            RoomInfo::Followed(b) => {
                let status = b.payload.to_value().ok().and_then(|p| p["status"].as_str().map(str::to_owned));
                if let Some(status) = status.filter(|s| *s != self.status && STATUSES.contains(&s.as_str())) {
                    let me = ctx.assigns().user.id.to_string();
                    set_status(&ctx.handler().app.clone(), ctx, &me, &status)?;
                    self.status = status;
                }
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
        let me = ctx.assigns().user.id;
        let user = ctx.assigns().user.clone();
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
                let posted = match app.chat.post(self.room, &user, &body, client_id.as_deref()).await {
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
                    app.announce(self.room, &user, &posted.message).await;
                }
                Ok(HandleIn::ok(json!({"message_id": posted.message.id})))
            }
            "edit_message" | "delete_message" => {
                let Some(id) = p.get("id").and_then(Value::as_i64) else {
                    return Ok(HandleIn::error(json!({"reason": "invalid", "errors": {"id": "must be a message id"}})));
                };
                let changed = if event == "edit_message" {
                    let body = match crate::api::message_body(&p) {
                        Ok(b) => b,
                        Err(why) => return Ok(HandleIn::error(json!({"reason": "invalid", "errors": {"body": why}}))),
                    };
                    app.chat.edit(self.room, me, id, &body).await
                } else {
                    app.chat.delete(self.room, me, id).await
                };
                let message = match changed {
                    Ok(m) => m,
                    Err(ChangeError::NotFound) => return Ok(HandleIn::error(json!({"reason": "not_found"}))),
                    Err(ChangeError::NotYours) => return Ok(HandleIn::error(json!({"reason": "forbidden"}))),
                    Err(ChangeError::Database(e)) => return Err(e.into()),
                };
                let done = if event == "edit_message" { "message_edited" } else { "message_deleted" };
                crate::api::broadcast_change(&app, self.room, done, &message);
                Ok(HandleIn::ok(json!({"message": message})))
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
                // this tab first (a flood is limited here), then stored and
                // told to the user's other channels
                set_status(&app, ctx, &me.to_string(), &status)?;
                self.status = status.clone();
                app.accounts.set_status(me, &status).await?;
                if let Err(e) = app.endpoint.broadcast(&status_topic(me), "status", json!({"status": status})) {
                    tracing::error!(error = %e, "a status change was not told to the other tabs");
                }
                Ok(HandleIn::ok(json!({})))
            }
            _ => Ok(HandleIn::error(json!({"reason": "unknown_event"}))),
        }
    }

    /// Applies the recipient's block list: messages, their edits and
    /// deletions, and typing notices of whom they blocked are dropped.
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
        let blocked = ctx.handler().app.accounts.blocked_by(ctx.assigns().user.id).await?;
        Ok(match author {
            Some(a) if blocked.contains(&a) => HandleOut::Drop,
            _ => HandleOut::Push(payload),
        })
    }
}

/// Updates the status in this channel's presence meta.
fn set_status(
    app: &App,
    ctx: &mut ChannelContext<ChatSocket, RoomInfo>,
    key: &str,
    status: &str,
) -> Result<(), ChannelError> {
    let status = status.to_owned();
    app.presence.update(ctx, key, |old| {
        let mut m = old.clone();
        m.remove("phx_ref");
        m.remove("phx_ref_prev");
        m.insert("status".into(), Value::String(status));
        Value::Object(m)
    })?;
    Ok(())
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
        if topic.strip_prefix("notifications:") == Some(ctx.assigns().user.id.to_string().as_str()) {
            Ok(Join::ok(NotificationsChannel))
        } else {
            Ok(Join::refuse(json!({"reason": "unauthorized"})))
        }
    }
}
