//! State shared by a connection's session and its channel tasks.

use std::sync::Arc;

use fawkes_protocol::{Frame, Vsn};

use crate::config::SocketConfig;
use crate::queue::{Outbox, Pushed};
use crate::router::Route;
use crate::{Endpoint, Socket};

/// Everything a mounted socket handler shares with its connections.
pub(crate) struct SocketShared<S: Socket> {
    pub(crate) socket: S,
    pub(crate) routes: Vec<Route<S>>,
    pub(crate) config: SocketConfig,
    pub(crate) endpoint: Endpoint,
    pub(crate) longpoll: crate::transport::longpoll::Registry,
    pub(crate) slots: Arc<crate::limits::Slots>,
}

/// One connection's shared state.
pub(crate) struct ConnState<S: Socket> {
    pub(crate) shared: Arc<SocketShared<S>>,
    pub(crate) assigns: S::Assigns,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) vsn: Vsn,
    /// Whether the transport compresses messages (WebSocket
    /// permessage-deflate): broadcasts are then queued compressed, once per
    /// dispatch for all such subscribers.
    pub(crate) compress: bool,
    pub(crate) id: Option<String>,
    /// The trace the client asked to continue (`traceparent` at connect).
    pub(crate) trace: crate::telemetry::Trace,
    /// This connection's place in the connection limits.
    pub(crate) _slot: crate::limits::Slot,
}

/// Somewhere frames for one client can be queued: the erased half of a
/// connection, for handles that outlive the channel's types.
pub(crate) trait FrameSink: Send + Sync + 'static {
    fn vsn(&self) -> Vsn;
    fn push_frame(&self, frame: Frame);
}

impl<S: Socket> ConnState<S> {
    /// Queues a frame. A full outbox marks the connection as a slow
    /// consumer and drops the frame: the transport then closes the connection
    /// (1013) and counts it; a closed outbox means the connection is gone.
    pub(crate) fn push_frame(&self, frame: Frame) {
        let _: Pushed = self.outbox.push_frame(frame);
    }

    /// Queues a reply; one that cannot be encoded for this client is
    /// logged (a reply is the server's own, not the client's, to get wrong).
    pub(crate) fn send_reply(&self, reply: &fawkes_protocol::Reply) {
        match self.vsn.encode_reply(reply) {
            Ok(frame) => self.push_frame(frame),
            Err(e) => tracing::warn!(topic = %reply.topic, error = %e, "reply could not be encoded"),
        }
    }

    pub(crate) fn erase(self: Arc<Self>) -> Arc<dyn FrameSink> {
        self
    }
}

impl<S: Socket> FrameSink for ConnState<S> {
    fn vsn(&self) -> Vsn {
        self.vsn
    }

    fn push_frame(&self, frame: Frame) {
        ConnState::push_frame(self, frame);
    }
}
