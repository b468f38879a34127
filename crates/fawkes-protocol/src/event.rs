//! The event names and the topic that the protocol reserves.

/// Event of a client's request to join a topic.
pub const JOIN: &str = "phx_join";
/// Event of a client's request to leave a topic.
pub const LEAVE: &str = "phx_leave";
/// Event of every reply from the server.
pub const REPLY: &str = "phx_reply";
/// Event the server pushes when a channel crashed.
pub const ERROR: &str = "phx_error";
/// Event the server pushes when a channel closed normally.
pub const CLOSE: &str = "phx_close";
/// Event of a client heartbeat (on [`HEARTBEAT_TOPIC`]).
pub const HEARTBEAT: &str = "heartbeat";
/// The topic of heartbeats.
pub const HEARTBEAT_TOPIC: &str = "phoenix";
/// The presence state pushed after a join.
pub const PRESENCE_STATE: &str = "presence_state";
/// The presence changes broadcast to a topic.
pub const PRESENCE_DIFF: &str = "presence_diff";
/// The broadcast event that closes every socket subscribed to its id topic.
pub const DISCONNECT: &str = "disconnect";
