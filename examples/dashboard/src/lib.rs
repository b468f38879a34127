//! A deploy dashboard: `POST /deploys/{project}` broadcasts `deploy_started`
//! on `project:<id>`, whose channel checks a Phoenix.Token from the connect
//! params, hides the deploy's `secret` from non-admins (intercept), tracks
//! viewers with a `status` (Presence), pushes a periodic `tick` and relays
//! `ops:alerts`. `phoenix/` holds the same application in Phoenix.

use std::time::Duration;

use fawkes::axum::{extract::Path, http::StatusCode, routing::post, Json, Router};
use fawkes::token::MaxAge;
use fawkes::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Who is connected, from the token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct User {
    /// The user's id.
    pub id: String,
    /// Whether the user sees deploy secrets.
    pub admin: bool,
}

/// The socket: checks the `token` connect param.
#[derive(Debug)]
pub struct UserSocket {
    /// The endpoint, which holds the secret key base.
    pub endpoint: Endpoint,
    /// Viewers of each project.
    pub presence: Presence,
    /// The period of `tick`.
    pub tick: Duration,
}

impl Socket for UserSocket {
    type Assigns = User;
    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<User, ConnectError> {
        let week = MaxAge::Seconds(7.0 * 86_400.0);
        self.endpoint.verify("user socket", params.get_str("token"), week).map_err(|_| ConnectError::Refused)
    }
}

/// What reaches `handle_info`: the tick, and broadcasts of `ops:alerts`.
#[derive(Clone, Debug)]
pub enum Info {
    /// Time to push `tick`.
    Tick,
    /// A broadcast on `ops:alerts`.
    Alert(Broadcast),
}

impl From<Broadcast> for Info {
    fn from(b: Broadcast) -> Info {
        Info::Alert(b)
    }
}

/// The channel of `project:<id>`.
#[derive(Debug)]
pub struct ProjectChannel;

impl Channel<UserSocket> for ProjectChannel {
    type Info = Info;
    const INTERCEPT: &'static [&'static str] = &["deploy_started"];

    async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
        ctx.subscribe("ops:alerts");
        ctx.send_interval(ctx.handler().tick, Info::Tick);
        let presence = &ctx.handler().presence;
        presence.track(ctx, &ctx.assigns().id, json!({"status": "viewing"}))?;
        ctx.push("presence_state", presence.list(ctx.topic()).await)?;
        Ok(Join::ok(ProjectChannel))
    }

    async fn handle_in(
        &mut self,
        event: &str,
        p: Payload,
        ctx: &mut Ctx<Self, UserSocket>,
    ) -> Result<HandleIn, ChannelError> {
        match event {
            "set_status" => {
                let status: String = p.to_value()?["status"].as_str().unwrap_or("viewing").into();
                ctx.handler().presence.update(ctx, &ctx.assigns().id, |_| json!({"status": status}))?;
                Ok(HandleIn::ok(json!({})))
            }
            _ => Ok(HandleIn::error(json!({"reason": "unknown event"}))),
        }
    }

    async fn handle_out(
        &mut self,
        _: &str,
        p: Payload,
        ctx: &mut Ctx<Self, UserSocket>,
    ) -> Result<HandleOut, ChannelError> {
        let mut deploy: serde_json::Map<String, Value> = p.decode()?;
        deploy.retain(|key, _| key != "secret" || ctx.assigns().admin);
        Ok(HandleOut::Push(deploy.into()))
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Ctx<Self, UserSocket>) -> Result<HandleInfo, ChannelError> {
        match info {
            Info::Tick => ctx.push("tick", json!({}))?,
            Info::Alert(alert) => ctx.push("alert", alert.payload)?,
        }
        Ok(HandleInfo::Continue)
    }
}

/// The application: the socket at `/socket`, and `POST /deploys/{project}`.
pub fn app(endpoint: &Endpoint, tick: Duration) -> (Router, SocketService<UserSocket>) {
    let socket = UserSocket { endpoint: endpoint.clone(), presence: Presence::new(endpoint), tick };
    let service = SocketHandler::new(socket).channel::<ProjectChannel>("project:*").build(endpoint);
    let deploys = endpoint.clone();
    let start = move |Path(project): Path<String>, Json(deploy): Json<Value>| async move {
        match deploys.broadcast(&format!("project:{project}"), "deploy_started", deploy) {
            Ok(()) => (StatusCode::ACCEPTED, Json(json!({"status": "started"}))),
            Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": e.to_string()}))),
        }
    };
    let router = Router::new().route("/deploys/{project}", post(start)).merge(service.router("/socket"));
    (router, service)
}
