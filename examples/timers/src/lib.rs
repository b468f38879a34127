//! Timers and extra topics: a channel that pushes a countdown every
//! `period`, says `done` once it reaches zero, and relays the broadcasts of
//! `news` meanwhile. Timers and subscriptions end with the channel.

use std::time::Duration;

use fawkes::*;
use serde_json::json;

/// Anyone may connect.
#[derive(Debug)]
pub struct UserSocket {
    /// The period of the countdown.
    pub period: Duration,
}

impl Socket for UserSocket {
    type Assigns = ();
    async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> {
        Ok(())
    }
}

/// What reaches `handle_info`.
#[derive(Clone, Debug)]
pub enum Info {
    /// One period passed.
    Tick,
    /// A broadcast on `news`.
    News(Broadcast),
}

impl From<Broadcast> for Info {
    fn from(b: Broadcast) -> Info {
        Info::News(b)
    }
}

/// The channel of `countdown:<n>`.
#[derive(Debug)]
pub struct Countdown {
    left: u64,
}

impl Channel<UserSocket> for Countdown {
    type Info = Info;

    async fn join(_: &str, _: Payload, ctx: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> {
        let left = ctx.subtopic().parse()?;
        ctx.send_interval(ctx.handler().period, Info::Tick);
        ctx.subscribe("news");
        Ok(Join::ok(Countdown { left }))
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Ctx<Self, UserSocket>) -> Result<HandleInfo, ChannelError> {
        match info {
            Info::Tick if self.left == 0 => {
                ctx.push("done", json!({}))?;
                // the timer and the subscription end here
                return Ok(HandleInfo::Stop(StopReason::Normal));
            }
            Info::Tick => {
                ctx.push("left", json!({"left": self.left}))?;
                self.left -= 1;
            }
            Info::News(b) => ctx.push("news", b.payload)?,
        }
        Ok(HandleInfo::Continue)
    }
}

/// The socket service.
pub fn service(endpoint: &Endpoint, period: Duration) -> SocketService<UserSocket> {
    SocketHandler::new(UserSocket { period }).channel::<Countdown>("countdown:*").build(endpoint)
}
