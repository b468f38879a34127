//! Socket configuration: every limit has a default and a knob.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;

/// How the `Origin` header of a WebSocket upgrade is checked (Phoenix's
/// `check_origin`). A request without an `Origin` header is always allowed.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum CheckOrigin {
    /// The origin's host must equal one of these hosts (Phoenix's `true`,
    /// which compares with the endpoint's host). The default allows
    /// `localhost`.
    #[default]
    Localhost,
    /// The origin's host must be one of these (scheme and port ignored).
    Hosts(Vec<String>),
    /// Phoenix's list form: each entry is `scheme://host:port` with any part
    /// left out as a wildcard (`//example.com`, `https://example.com`,
    /// `//*.example.com`, `//example.com:8080`).
    List(Vec<String>),
    /// The origin must have the request's own scheme, host and port.
    Conn,
    /// A function decides.
    Custom(Arc<dyn Fn(&Uri) -> bool + Send + Sync>),
    /// Every origin is allowed.
    Off,
}

impl fmt::Debug for CheckOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckOrigin::Localhost => f.write_str("Localhost"),
            CheckOrigin::Hosts(h) => f.debug_tuple("Hosts").field(h).finish(),
            CheckOrigin::List(l) => f.debug_tuple("List").field(l).finish(),
            CheckOrigin::Conn => f.write_str("Conn"),
            CheckOrigin::Custom(_) => f.write_str("Custom"),
            CheckOrigin::Off => f.write_str("Off"),
        }
    }
}

/// Configuration of a socket handler and its transports.
///
/// | knob | default | what happens at the limit |
/// | --- | --- | --- |
/// | `timeout` | 60 s | a connection with no frame in either direction for that long is closed (1000) |
/// | `max_frame_size` | 10 000 000 bytes (Phoenix 1.8's WebSocket default) | a larger message closes the connection with 1009, sent so that the client sees it |
/// | `max_channels` | 100 | the next join is refused `{"reason": "too many channels joined"}` |
/// | `outbox_frames`, `outbox_bytes` | 1024 frames, 16 MiB | a client that does not read is closed (1013) and counted |
/// | `mailbox_limit` | 1024 messages | the connection stops reading until the channel catches up |
/// | `write_timeout` | 30 s | a write the client does not take in that long closes the connection |
/// | `disconnect_close_code` | 1001 | the code for a `disconnect` broadcast (clients reconnect) |
/// | `compress` | off | permessage-deflate, when the client offers it |
/// | `check_origin` | `localhost` | the upgrade is refused with 403 (long poll: `{"status": 403}`) |
/// | `longpoll` | off | the long-poll transport at `<path>/longpoll` |
/// | `longpoll_window` | 10 s | how long a poll waits for messages; a session not polled for 1.5 windows ends |
/// | `longpoll_max_sessions` | 10 000 | a new session beyond it is refused (`{"status": 403}`) |
/// | `longpoll_max_body` | 8 000 000 bytes | a larger POST is answered HTTP 413 |
/// | `max_connections` | 100 000 | further connections are refused (WebSocket 503, long poll `{"status": 403}`) |
/// | `max_connections_per_id` | 100 | further connections with the same socket id are refused likewise |
/// | `join_rate` | 20/s, bursts of 100 | the join is refused `{"reason": "rate_limited", "retry_after": ms}` |
/// | `socket_event_rate` | 1000/s, bursts of 2000 | the event gets an error reply `{"reason": "rate_limited", "retry_after": ms}` |
/// | `channel_event_rate` | 500/s, bursts of 1000, per joined topic | likewise |
///
/// Heartbeats and leaves are never rate limited. `None` turns a rate limit off.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SocketConfig {
    /// Idle timeout.
    pub timeout: Duration,
    /// Largest message a client may send, in bytes.
    pub max_frame_size: usize,
    /// Most channels joined at once on one connection.
    pub max_channels: usize,
    /// Most frames queued for one client.
    pub outbox_frames: usize,
    /// Most bytes queued for one client.
    pub outbox_bytes: usize,
    /// Most messages queued for one channel task.
    pub mailbox_limit: usize,
    /// Longest time one write to a client may take.
    pub write_timeout: Duration,
    /// Close code for `disconnect` broadcasts.
    pub disconnect_close_code: u16,
    /// Accept permessage-deflate.
    pub compress: bool,
    /// Origin policy.
    pub check_origin: CheckOrigin,
    /// Serve the long-poll transport.
    pub longpoll: bool,
    /// Long-poll window.
    pub longpoll_window: Duration,
    /// Most long-poll sessions at once on this node.
    pub longpoll_max_sessions: usize,
    /// Largest long-poll POST body, in bytes.
    pub longpoll_max_body: usize,
    /// Most connections of this socket handler on this node.
    pub max_connections: usize,
    /// Most connections sharing one socket id on this node.
    pub max_connections_per_id: usize,
    /// Joins per connection.
    pub join_rate: Option<RateLimit>,
    /// Events per connection, all topics together.
    pub socket_event_rate: Option<RateLimit>,
    /// Events per connection and topic.
    pub channel_event_rate: Option<RateLimit>,
    /// Client events that fan out to others (broadcasts and presence
    /// changes made while `handle_in` runs), per socket id across its
    /// connections on this node (per connection for anonymous sockets).
    pub fanout_rate: Option<RateLimit>,
}

/// A token bucket: `per_second` tokens are added each second, up to
/// `burst`; each message takes one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained rate.
    pub per_second: f64,
    /// Largest burst.
    pub burst: f64,
}

impl RateLimit {
    /// `per_second` with bursts of `burst`.
    pub fn new(per_second: f64, burst: f64) -> RateLimit {
        RateLimit { per_second, burst }
    }
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            timeout: Duration::from_secs(60),
            max_frame_size: 10_000_000,
            max_channels: 100,
            outbox_frames: 4096,
            outbox_bytes: 1 << 20,
            mailbox_limit: 1024,
            write_timeout: Duration::from_secs(30),
            disconnect_close_code: 1001,
            compress: false,
            check_origin: CheckOrigin::default(),
            longpoll: false,
            longpoll_window: Duration::from_secs(10),
            longpoll_max_sessions: 10_000,
            longpoll_max_body: 8_000_000,
            max_connections: 100_000,
            max_connections_per_id: 100,
            join_rate: Some(RateLimit::new(100.0, 1000.0)),
            socket_event_rate: Some(RateLimit::new(1000.0, 10_000.0)),
            channel_event_rate: None,
            fanout_rate: Some(RateLimit::new(50.0, 500.0)),
        }
    }
}
