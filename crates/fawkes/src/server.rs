//! The channel task: runs `join`, then one callback at a time from its
//! mailbox, and turns errors and panics into crashes.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use fawkes_protocol::{event, Broadcast, Frame, Message, Payload, Reply};
use fawkes_pubsub::{Delivery, FrameCache, Subscriber, Subscription};
use futures_util::FutureExt;
use serde_json::json;
use tracing::Instrument;

use crate::channel::{ChannelMsg, HandleIn, HandleInfo, HandleOut, StopReason};
use crate::conn::ConnState;
use crate::queue::{End, Mailbox, Out, Pushed};
use crate::router::ChannelHandle;
use crate::{telemetry, Channel, ChannelContext, ChannelError, Join, Socket};

static NEXT_PID: AtomicU64 = AtomicU64::new(1);

/// What the session hands a new channel task.
pub(crate) struct StartArgs<S: Socket> {
    pub(crate) conn: Arc<ConnState<S>>,
    pub(crate) join: Message,
    pub(crate) instance: u64,
    /// A frame to send right after the join reply (the stale `phx_close` of
    /// a duplicate join, which Phoenix sends after the new reply).
    pub(crate) after_reply: Option<Frame>,
    /// The task of the channel this join replaces or follows on the same
    /// topic: the join waits until it is over.
    pub(crate) predecessor: Option<tokio::task::JoinHandle<()>>,
}

/// How long a join waits for the channel it replaces to end before that
/// channel is aborted (Phoenix waits 5 s, then kills it).
const PREDECESSOR_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until the previous channel of the topic is over: `terminate` run,
/// unsubscribed, presences untracked. One that takes longer than
/// [`PREDECESSOR_WAIT`] is aborted (dropped where it stands, its exit hooks
/// still run).
async fn wait_for(predecessor: Option<tokio::task::JoinHandle<()>>) {
    let Some(mut task) = predecessor else { return };
    if tokio::time::timeout(PREDECESSOR_WAIT, &mut task).await.is_err() {
        tracing::warn!("the previous channel of this topic did not end in {PREDECESSOR_WAIT:?}: aborted");
        task.abort();
        let _ = task.await;
    }
}

pub(crate) fn start<S: Socket, C: Channel<S>>(args: StartArgs<S>, subtopic_at: Option<usize>) -> ChannelHandle {
    let inbox: Arc<Mailbox<ChannelMsg<C::Info>>> = Arc::new(Mailbox::new(args.conn.shared.config.mailbox_limit));
    let span = tracing::info_span!("channel", topic = %args.join.topic);
    // The join runs in its own boxed future, freed once it is done: the
    // task then holds only the joined channel's state and its idle wait,
    // not room for the join message, the join callback and its reply.
    let joining = Box::pin(join::<S, C>(args, inbox.clone(), subtopic_at));
    let task = tokio::spawn(joining.then(live::<S, C>).instrument(span));
    ChannelHandle { inbox, task }
}

fn panic_text(p: Box<dyn Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// A callback's future, boxed.
type Callback<'a, T> = Pin<Box<dyn Future<Output = Result<T, ChannelError>> + Send + 'a>>;

/// Runs a callback future, turning a panic into an error. Callers box the
/// callback's future (`Box::pin` at the call site, so that not even this
/// function's arguments hold it inline): an idle channel task then keeps no
/// room for the largest of its callbacks, which keeps each channel small.
async fn guarded<T>(f: Callback<'_, T>) -> Result<T, String> {
    caught(f).await
}

/// Runs a callback future in place, turning a panic into an error (for
/// futures that are already inside a boxed step).
async fn caught<T>(f: impl Future<Output = Result<T, ChannelError>>) -> Result<T, String> {
    match AssertUnwindSafe(f).catch_unwind().await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(panic_text(p)),
    }
}

/// Fastlane: non-intercepted broadcasts go straight to the client's outbox,
/// encoded once per serializer; intercepted ones go to the channel task.
struct ChannelSubscriber<S: Socket, I: Send + 'static> {
    conn: Arc<ConnState<S>>,
    inbox: Arc<Mailbox<ChannelMsg<I>>>,
    intercept: &'static [&'static str],
}

impl<S: Socket, I: Send + 'static> Subscriber for ChannelSubscriber<S, I> {
    fn deliver(&self, msg: &Broadcast, frames: &mut FrameCache<'_>) -> Delivery {
        if self.inbox.is_closed() {
            return Delivery::Gone;
        }
        if msg.event == fawkes_pubsub::TERM_EVENT {
            // an Elixir term for the process (a Phoenix channel's
            // handle_info): nothing a client could be sent
            return Delivery::Ignored;
        }
        if self.intercept.iter().any(|e| *e == msg.event) {
            return match self.inbox.try_push(ChannelMsg::Out(msg.clone())) {
                Ok(()) => Delivery::Delivered,
                Err((_, Pushed::Closed)) => Delivery::Gone,
                Err(_) => {
                    // The channel cannot keep up with its own handle_out:
                    // treated as a slow consumer, like a full outbox.
                    self.conn.outbox.mark_overflow();
                    Delivery::Overflow
                }
            };
        }
        let vsn = self.conn.vsn;
        let Some(frame) = frames.frame(vsn) else {
            return Delivery::Delivered;
        };
        let pushed = if self.conn.compress && crate::transport::ws_codec::worth_deflating(frame) {
            match frames.derived(vsn, "permessage-deflate", crate::transport::ws_codec::deflate_frame) {
                Some(z) => self.conn.outbox.push_deflated(z),
                None => return Delivery::Delivered,
            }
        } else {
            self.conn.outbox.push_frame(frame.clone())
        };
        match pushed {
            Pushed::Queued => Delivery::Delivered,
            Pushed::Full => Delivery::Overflow,
            Pushed::Closed => Delivery::Gone,
        }
    }
}

struct Task<S: Socket, C: Channel<S>> {
    ctx: ChannelContext<S, C::Info>,
    instance: u64,
}

impl<S: Socket, C: Channel<S>> Task<S, C> {
    fn reply(
        &self,
        msg: &Message,
        status: std::borrow::Cow<'static, str>,
        payload: Payload,
        join_ref: Option<fawkes_protocol::Ref>,
    ) {
        self.ctx.conn.send_reply(&Reply {
            join_ref,
            ref_: msg.ref_.clone(),
            topic: msg.topic.clone(),
            status,
            payload,
        });
    }

    fn exit(&self, end: End) {
        self.ctx.conn.outbox.push_control(Out::ChannelExit {
            topic: self.ctx.topic.to_string(),
            instance: self.instance,
            end,
        });
    }

    /// After a refused or crashed join: answer what queued up meanwhile as
    /// Phoenix would answer it for a topic that is not joined.
    fn refuse_queued(&self) {
        self.ctx.inbox.close();
        while let Some(m) = self.ctx.inbox.try_recv() {
            match m {
                ChannelMsg::In(m) => self.reply(&m, "error".into(), json!({"reason": "unmatched topic"}).into(), None),
                ChannelMsg::Leave(m) => self.reply(&m, "ok".into(), Payload::empty(), m.join_ref.clone()),
                ChannelMsg::Reply(r) => self.ctx.conn.send_reply(&r),
                _ => {}
            }
        }
        self.exit(End::Refused);
    }
}

/// A joined channel: everything its task keeps between messages.
//
// Fields drop in order: unsubscribed first, then the channel, then its
// context (whose exit hooks untrack presences).
struct Live<S: Socket, C: Channel<S>> {
    _subscription: Subscription,
    channel: C,
    task: Task<S, C>,
}

/// Runs the join and, when it is accepted, subscribes, replies and sends
/// what the join pushed. `None` when the join was refused or crashed.
async fn join<S: Socket, C: Channel<S>>(
    args: StartArgs<S>,
    inbox: Arc<Mailbox<ChannelMsg<C::Info>>>,
    subtopic_at: Option<usize>,
) -> Option<Live<S, C>> {
    let StartArgs { conn, join, instance, after_reply, predecessor } = args;
    wait_for(predecessor).await;
    let topic: Arc<str> = Arc::from(join.topic.as_str());
    let ctx = ChannelContext {
        conn: conn.clone(),
        topic: topic.clone(),
        join_ref: join.join_ref.clone(),
        inbox: inbox.clone(),
        sub_id: None,
        current_ref: None,
        pending: Some(Vec::new()),
        pid: NEXT_PID.fetch_add(1, Ordering::Relaxed),
        exit_hooks: Default::default(),
        client_event: false,
        subtopic_at,
    };
    let mut task: Task<S, C> = Task { ctx, instance };
    let started = Instant::now();
    let joined = caught(C::join(&topic, join.payload.clone(), &mut task.ctx))
        .instrument(tracing::info_span!("join", topic = %topic))
        .await;
    let (channel, reply) = match joined {
        Ok(Join::Ok { channel, reply }) => (channel, reply),
        Ok(Join::Refused(reply)) => {
            task.reply(&join, "error".into(), reply, join.join_ref.clone());
            telemetry::channel_joined(conn.shared.endpoint.metrics(), &topic, "error", started);
            task.refuse_queued();
            return None;
        }
        Err(why) => {
            tracing::error!(topic = %topic, error = %why, "join crashed");
            task.reply(&join, "error".into(), json!({"reason": "join crashed"}).into(), join.join_ref.clone());
            telemetry::channel_joined(conn.shared.endpoint.metrics(), &topic, "crashed", started);
            task.refuse_queued();
            return None;
        }
    };
    // Subscribe before the reply, as Phoenix does, so that the client misses
    // nothing broadcast after it learns it joined.
    let subscriber = ChannelSubscriber { conn: conn.clone(), inbox, intercept: C::INTERCEPT };
    let pubsub = conn.shared.endpoint.pubsub();
    let histories = conn.shared.endpoint.histories();
    let since = match histories.topic(&topic) {
        Some(h) => join.payload.to_value().ok().and_then(|v| v.get("since").cloned()).map(|since| (h, since)),
        None => None,
    };
    let (subscription, rejoin) = match since {
        None => (pubsub.subscribe(&topic, Arc::new(subscriber)), None),
        Some((history, since)) => {
            // a rejoin: live broadcasts wait behind the gate until what the
            // client missed is sent
            let gate = Arc::new(Gate::new(subscriber));
            match histories.shared() {
                None => {
                    let (subscription, replay) =
                        history.subscribe_since(Some(&since), histories, || pubsub.subscribe(&topic, gate.clone()));
                    (subscription, Some((gate, replay, since)))
                }
                Some(shared) => {
                    // subscribed first, read second: what is broadcast in
                    // between is both held and replayed, and the gate drops
                    // what was replayed
                    let subscription = pubsub.subscribe(&topic, gate.clone());
                    let replay = match shared.since(&topic, &since, history.config()).await {
                        Ok(replay) => replay,
                        Err(e) => {
                            tracing::warn!(topic = %topic, error = %e, "the shared history could not be read");
                            crate::history::Replay::gap("unavailable", &since, Vec::new())
                        }
                    };
                    (subscription, Some((gate, replay, since)))
                }
            }
        }
    };
    task.ctx.sub_id = Some(subscription.id());
    task.reply(&join, "ok".into(), reply, join.join_ref.clone());
    if let Some(frame) = after_reply {
        conn.push_frame(frame);
    }
    for frame in task.ctx.pending.take().unwrap_or_default() {
        conn.push_frame(frame);
    }
    let mut channel = channel;
    if let Some((gate, replay, since)) = rejoin {
        if let Some(gap) = replay.gap {
            if let Err(e) = task.ctx.push(crate::history::GAP_EVENT, gap) {
                tracing::warn!(topic = %topic, error = %e, "the history gap could not be pushed");
            }
        }
        let replayed = replay.items.len();
        // what the client saw is not sent again: with a shared history a
        // broadcast it got on another node may reach this one only now
        let mut last = since.as_str().map(fawkes_protocol::Ref::from);
        for b in replay.items {
            last = b.position.clone().or(last);
            deliver_own(&mut channel, &mut task, b).await;
        }
        // then what arrived meanwhile (but what was just replayed), until
        // the gate opens with nothing left behind it
        let last = last.as_ref().and_then(|p| p.as_value().as_str()).and_then(crate::history::parse_position);
        while let Some(items) = gate.take_or_open(last) {
            for b in items {
                let at = crate::history::position_of(&b);
                if let (Some((epoch, offset)), Some((last_epoch, last_offset))) = (at, last) {
                    if epoch == last_epoch && offset <= last_offset {
                        continue;
                    }
                }
                deliver_own(&mut channel, &mut task, b).await;
            }
        }
        tracing::debug!(topic = %topic, replayed, "rejoined from a history position");
    }
    telemetry::channel_joined(conn.shared.endpoint.metrics(), &topic, "ok", started);
    conn.shared.endpoint.metrics().channel_joined();
    Some(Live { _subscription: subscription, channel, task })
}

/// Sends this channel's client a broadcast of its topic (replayed, or held
/// behind the gate): through `handle_out` when the event is intercepted,
/// encoded for this client otherwise, waiting for room in the outbox.
async fn deliver_own<S: Socket, C: Channel<S>>(channel: &mut C, task: &mut Task<S, C>, b: Broadcast) {
    task.ctx.conn.outbox.room_for_replies().await;
    if C::INTERCEPT.iter().any(|e| *e == b.event) {
        let position = b.position.clone();
        match caught(channel.handle_out(&b.event, b.payload, &mut task.ctx)).await {
            Ok(HandleOut::Push(payload)) => {
                if let Err(e) = task.ctx.push_at(&b.event, payload, position) {
                    tracing::error!(topic = %task.ctx.topic, error = %e, "a replayed broadcast could not be pushed");
                }
            }
            Ok(HandleOut::Drop) => {}
            Err(why) => {
                tracing::error!(topic = %task.ctx.topic, event = %b.event, error = %why, "handle_out failed on a replayed broadcast");
            }
        }
        return;
    }
    match task.ctx.conn.vsn.encode_broadcast(&b) {
        Ok(frame) => task.ctx.conn.push_frame(frame),
        Err(e) => tracing::warn!(topic = %task.ctx.topic, error = %e, "a replayed broadcast could not be encoded"),
    }
}

/// Most broadcasts held behind a gate (while a rejoin replays history)
/// before the connection counts as a slow consumer.
const GATE_LIMIT: usize = 10_000;

/// A channel's subscriber while its join replays history: live broadcasts
/// are held, in order, until the replay is sent; then they pass straight
/// through.
struct Gate<T> {
    open: std::sync::atomic::AtomicBool,
    held: parking_lot::Mutex<Vec<Broadcast>>,
    /// After opening: broadcasts at or before this position (the last the
    /// client has) are not sent; a node can receive a broadcast of a shared
    /// history after the client got it elsewhere. Cleared at the first
    /// broadcast past it: each node receives them in order.
    floor: parking_lot::Mutex<Option<(String, u64)>>,
    flooring: std::sync::atomic::AtomicBool,
    inner: T,
}

impl<T> Gate<T> {
    fn new(inner: T) -> Gate<T> {
        Gate {
            open: std::sync::atomic::AtomicBool::new(false),
            held: parking_lot::Mutex::new(Vec::new()),
            floor: parking_lot::Mutex::new(None),
            flooring: std::sync::atomic::AtomicBool::new(false),
            inner,
        }
    }

    /// What is held, or `None` after opening the gate when nothing is;
    /// from then on, what is at or before `floor` is dropped.
    fn take_or_open(&self, floor: Option<(&str, u64)>) -> Option<Vec<Broadcast>> {
        let mut held = self.held.lock();
        if held.is_empty() {
            if let Some((epoch, offset)) = floor {
                *self.floor.lock() = Some((epoch.to_owned(), offset));
                self.flooring.store(true, Ordering::Release);
            }
            self.open.store(true, Ordering::Release);
            return None;
        }
        Some(std::mem::take(&mut *held))
    }

    /// Whether `msg` is one the client already has.
    fn below_floor(&self, msg: &Broadcast) -> bool {
        if !self.flooring.load(Ordering::Acquire) {
            return false;
        }
        let mut floor = self.floor.lock();
        let Some((epoch, offset)) = floor.as_ref() else { return false };
        match crate::history::position_of(msg) {
            Some((e, o)) if e == epoch && o <= *offset => true,
            _ => {
                *floor = None;
                self.flooring.store(false, Ordering::Release);
                false
            }
        }
    }
}

impl<S: Socket, I: Send + 'static> Subscriber for Gate<ChannelSubscriber<S, I>> {
    fn deliver(&self, msg: &Broadcast, frames: &mut FrameCache<'_>) -> Delivery {
        if !self.open.load(Ordering::Acquire) {
            let mut held = self.held.lock();
            if !self.open.load(Ordering::Acquire) {
                if self.inner.inbox.is_closed() {
                    return Delivery::Gone;
                }
                if held.len() >= GATE_LIMIT {
                    self.inner.conn.outbox.mark_overflow();
                    return Delivery::Overflow;
                }
                held.push(msg.clone());
                return Delivery::Delivered;
            }
        }
        if self.below_floor(msg) {
            return Delivery::Delivered;
        }
        self.inner.deliver(msg, frames)
    }
}

/// A joined channel's life: its mailbox, one message at a time, then its
/// end. The state stays where it is (borrowed, never moved into a second
/// slot of this future), and each message is handled in a boxed step, so
/// an idle channel holds little more than its state and its wait.
//
// Not an `async fn`: its parameters would be moved into a second slot of the
// future; the block's capture is used in place.
#[allow(clippy::manual_async_fn)]
fn live<S: Socket, C: Channel<S>>(mut state: Option<Live<S, C>>) -> impl Future<Output = ()> + Send {
    async move {
        let Some(live) = state.as_mut() else { return };
        let reason = loop {
            // The message goes straight from the mailbox into its boxed
            // step: held in a local of this block, it would keep a slot of
            // this future (the size of the largest message) while idle.
            let step = match begin(live, live.task.ctx.inbox.recv().await) {
                Ok(step) => step,
                Err(reason) => break reason,
            };
            if let Some(reason) = step.await {
                break reason;
            }
        };
        let Some(live) = state.take() else { return };
        Box::pin(end(live, reason)).await;
    }
}

/// The boxed step that handles `msg`, or why the channel stops (its
/// mailbox closed, or a duplicate join killed it).
#[allow(clippy::type_complexity)]
fn begin<S: Socket, C: Channel<S>>(
    live: &mut Live<S, C>,
    msg: Option<ChannelMsg<C::Info>>,
) -> Result<Pin<Box<impl Future<Output = Option<StopReason>> + Send + '_>>, StopReason> {
    if live.task.ctx.inbox.is_killed() {
        return Err(killed(&live.task, msg));
    }
    match msg {
        Some(msg) => Ok(Box::pin(step(live, msg))),
        None => Err(StopReason::Closed),
    }
}

/// A duplicate join replaced the channel: it handles nothing more (as a
/// killed Phoenix channel process), but leaves already asked for are
/// answered, so the client's leave does not time out.
fn killed<S: Socket, C: Channel<S>>(task: &Task<S, C>, first: Option<ChannelMsg<C::Info>>) -> StopReason {
    let rest = std::iter::from_fn(|| task.ctx.inbox.try_recv());
    for m in first.into_iter().chain(rest) {
        match m {
            ChannelMsg::Leave(m) => task.reply(&m, "ok".into(), Payload::empty(), task.ctx.join_ref.clone()),
            ChannelMsg::Reply(r) => task.ctx.conn.send_reply(&r),
            _ => {}
        }
    }
    StopReason::Shutdown("duplicate_join".into())
}

/// Unsubscribes, runs `terminate`, and tells the session how it ended.
async fn end<S: Socket, C: Channel<S>>(live: Live<S, C>, reason: StopReason) {
    let Live { _subscription, mut channel, mut task } = live;
    drop(_subscription);
    task.ctx.inbox.close();
    task.ctx.conn.shared.endpoint.metrics().channel_left();
    let end = if reason.is_normal() { End::Close } else { End::Error };
    match reason {
        StopReason::Closed => {
            terminate(&mut channel, &reason, &mut task.ctx).await;
        }
        _ if end == End::Close => {
            // phx_close first; pushes from terminate follow it.
            task.exit(End::Close);
            terminate(&mut channel, &reason, &mut task.ctx).await;
        }
        _ => {
            // pushes from terminate come before the phx_error.
            terminate(&mut channel, &reason, &mut task.ctx).await;
            task.exit(End::Error);
        }
    }
}

/// Runs `terminate`; a panic there is logged and otherwise ignored.
async fn terminate<S: Socket, C: Channel<S>>(
    channel: &mut C,
    reason: &StopReason,
    ctx: &mut ChannelContext<S, C::Info>,
) {
    let run = async {
        channel.terminate(reason, ctx).await;
        Ok(())
    };
    if let Err(why) = guarded(Box::pin(run)).await {
        tracing::error!(error = %why, "terminate panicked");
    }
}

/// Handles one message of the mailbox; `Some` when the channel stops.
async fn step<S: Socket, C: Channel<S>>(live: &mut Live<S, C>, msg: ChannelMsg<C::Info>) -> Option<StopReason> {
    let Live { task, channel, .. } = live;
    match msg {
        ChannelMsg::In(m) => {
            // back-pressure: the replies of a pipelining client go out at
            // the pace it reads them
            task.ctx.conn.outbox.room_for_replies().await;
            let started = Instant::now();
            task.ctx.current_ref = m.ref_.clone();
            task.ctx.client_event = true;
            let span = telemetry::handle_in_span(&task.ctx.topic, &m.event);
            let result = AssertUnwindSafe(channel.handle_in(&m.event, m.payload.clone(), &mut task.ctx))
                .catch_unwind()
                .instrument(span)
                .await;
            task.ctx.client_event = false;
            task.ctx.current_ref = None;
            telemetry::channel_handled_in(task.ctx.conn.shared.endpoint.metrics(), &task.ctx.topic, &m.event, started);
            let join_ref = task.ctx.join_ref.clone();
            let result = match result {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => match rate_limited(&*e) {
                    // a limit is an answer to the client, not a crash
                    Some(limited) => {
                        task.ctx.conn.shared.endpoint.metrics().rate_limited();
                        let payload = crate::session::rate_limited_payload(limited.retry_after);
                        task.reply(&m, "error".into(), payload, join_ref);
                        return None;
                    }
                    None => Err(e.to_string()),
                },
                Err(p) => Err(panic_text(p)),
            };
            match result {
                Ok(HandleIn::Reply { status, payload }) => task.reply(&m, status, payload, join_ref),
                Ok(HandleIn::NoReply) => {}
                Ok(HandleIn::Stop { reason, reply }) => {
                    if let Some((status, payload)) = reply {
                        task.reply(&m, status, payload, join_ref);
                    }
                    return Some(reason);
                }
                Err(why) => {
                    tracing::error!(topic = %task.ctx.topic, event = %m.event, error = %why, "channel crashed in handle_in");
                    return Some(StopReason::Crashed(why));
                }
            }
        }
        ChannelMsg::Leave(m) => {
            let join_ref = task.ctx.join_ref.clone();
            task.reply(&m, "ok".into(), Payload::empty(), join_ref);
            return Some(StopReason::Left);
        }
        ChannelMsg::Reply(r) => task.ctx.conn.send_reply(&r),
        ChannelMsg::Out(b) => match caught(channel.handle_out(&b.event, b.payload, &mut task.ctx)).await {
            Ok(HandleOut::Push(payload)) => {
                if let Err(e) = task.ctx.push_at(&b.event, payload, b.position) {
                    tracing::error!(topic = %task.ctx.topic, error = %e, "channel crashed in handle_out");
                    return Some(StopReason::Crashed(e.to_string()));
                }
            }
            Ok(HandleOut::Drop) => {}
            Err(why) => {
                tracing::error!(topic = %task.ctx.topic, event = %b.event, error = %why, "channel crashed in handle_out");
                return Some(StopReason::Crashed(why));
            }
        },
        ChannelMsg::Info(info) => match caught(channel.handle_info(info, &mut task.ctx)).await {
            Ok(HandleInfo::Continue) => {}
            Ok(HandleInfo::Stop(reason)) => return Some(reason),
            Err(why) => {
                tracing::error!(topic = %task.ctx.topic, error = %why, "channel crashed in handle_info");
                return Some(StopReason::Crashed(why));
            }
        },
        ChannelMsg::Closed => return Some(StopReason::Closed),
    }
    None
}

/// The rate limit behind a callback's error, if that is what it is.
fn rate_limited(e: &(dyn std::error::Error + 'static)) -> Option<crate::RateLimited> {
    if let Some(r) = e.downcast_ref::<crate::RateLimited>() {
        return Some(*r);
    }
    match (e.downcast_ref::<crate::BroadcastError>(), e.downcast_ref::<crate::PresenceError>()) {
        (Some(crate::BroadcastError::RateLimited(r)), _) | (_, Some(crate::PresenceError::RateLimited(r))) => Some(*r),
        _ => None,
    }
}

/// The `phx_close`/`phx_error` frame that ends a join.
pub(crate) fn end_frame(
    vsn: fawkes_protocol::Vsn,
    topic: &str,
    join_ref: Option<fawkes_protocol::Ref>,
    end: End,
) -> Option<Frame> {
    let ev = match end {
        End::Close => event::CLOSE,
        End::Error => event::ERROR,
        End::Refused => return None,
    };
    vsn.encode_push(&Message::channel_end(join_ref, topic, ev, Payload::empty())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectError, ConnectInfo, Params};

    struct TestSocket;

    impl Socket for TestSocket {
        type Assigns = ();
        async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> {
            Ok(())
        }
    }

    struct Quiet;

    impl Channel<TestSocket> for Quiet {
        type Info = ();
        async fn join(_: &str, _: Payload, _: &mut ChannelContext<TestSocket, ()>) -> Result<Join<Self>, ChannelError> {
            Ok(Join::ok(Quiet))
        }
    }

    /// The size of the future a function returns, without calling it.
    fn returned<A, F>(_: fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn an_idle_channel_task_keeps_no_room_for_a_message() {
        let task = returned(live::<TestSocket, Quiet>);
        let state = std::mem::size_of::<Option<Live<TestSocket, Quiet>>>();
        let msg = std::mem::size_of::<ChannelMsg<()>>();
        // its state, the mailbox's wait and a few words; a message bound
        // to a local of the loop would add a slot of its size
        assert!(task < state + msg, "the channel task's future is {task} bytes for {state} of state ({msg} a message)");
    }
}
