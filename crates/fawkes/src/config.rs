//! Socket configuration: every limit has a default and a knob.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

use crate::origin;

/// How the `Origin` header of a WebSocket upgrade or a long-poll request is
/// checked (Phoenix's `check_origin`). A request without an `Origin` header
/// is always allowed, as in Phoenix.
///
/// # Behind a reverse proxy
///
/// A proxy that terminates TLS talks plain HTTP to Fawkes, often with a
/// `Host` of its own choosing, while the browser's origin is
/// `https://chat.example.com`. Two modes check that origin:
///
/// * [`CheckOrigin::Url`] with the URL(s) browsers use
///   (`CheckOrigin::urls(["https://chat.example.com"])`): the recommended
///   choice. It reads nothing from the request, so it works behind any
///   number of proxies, and it refuses DNS rebinding.
/// * [`CheckOrigin::Conn`] with [`SocketConfig::trusted_proxies`]: the
///   scheme and host come from the proxy's `X-Forwarded-Proto` and
///   `X-Forwarded-Host`, or `Forwarded` (RFC 7239), believed only when the
///   request comes from one of the listed proxy addresses. For an endpoint
///   reached under many names that cannot be listed.
///
/// `Conn` without trusted proxies compares with the `Host` header and
/// `http`, so behind a TLS-terminating proxy it refuses every browser (as it
/// does when the server terminates TLS itself: use `Url` there too).
///
/// # Why `Conn` trusts the `Host` header, and DNS rebinding
///
/// `Conn` is Phoenix's `check_origin: :conn`, which compares the origin with
/// the connection's host, scheme and port (`conn.host` is the `Host`
/// header). That refuses a page of another site, whose origin is not the
/// host it connects to, but not DNS rebinding: a page at
/// `http://evil.example:4000` whose name is made to resolve to the server's
/// address sends `Origin: http://evil.example:4000` *and*
/// `Host: evil.example:4000`, which match. Only a fixed list ([`Url`],
/// [`List`], [`Hosts`], the default [`Localhost`]) refuses that, or a proxy
/// in front that answers only the site's own host names (with `Conn` behind
/// it).
///
/// # Compared with Phoenix
///
/// Phoenix's `check_origin: true` compares only the origin's host with the
/// host of the endpoint's `url` configuration; [`CheckOrigin::Url`] also
/// compares the scheme and the port, so that `http://chat.example.com` does
/// not pass for `https://chat.example.com`. In Phoenix, the `conn.scheme`
/// and `conn.host` that `:conn` compares with follow forwarded headers only
/// when `Plug.RewriteOn` rewrote them, and that plug believes them from
/// every peer (the proxy must strip them); Fawkes believes them only from
/// the addresses in [`TrustedProxies`].
///
/// [`Url`]: CheckOrigin::Url
/// [`List`]: CheckOrigin::List
/// [`Hosts`]: CheckOrigin::Hosts
/// [`Localhost`]: CheckOrigin::Localhost
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
    /// The origin must be one of the endpoint's public URLs, with the same
    /// scheme, host and port (a port left out is the scheme's default; the
    /// scheme and host compare case-insensitively). An empty list allows no
    /// origin. Build it with [`CheckOrigin::urls`]. The mode to use behind a
    /// reverse proxy; see above.
    Url(Vec<PublicUrl>),
    /// The origin must have the request's own scheme, host and port: `http`
    /// and the `Host` header, or what a proxy in
    /// [`SocketConfig::trusted_proxies`] forwarded. See above for why this
    /// does not stop DNS rebinding.
    Conn,
    /// A function decides.
    Custom(Arc<dyn Fn(&Uri) -> bool + Send + Sync>),
    /// Every origin is allowed.
    Off,
}

impl CheckOrigin {
    /// [`CheckOrigin::Url`] from URLs such as `https://chat.example.com`;
    /// an invalid URL, or none at all, is an error.
    ///
    /// ```
    /// use fawkes::CheckOrigin;
    ///
    /// let check = CheckOrigin::urls(["https://chat.example.com", "https://www.example.com:8443"])?;
    /// assert!(CheckOrigin::urls(["chat.example.com"]).is_err());
    /// # Ok::<(), fawkes::OriginConfigError>(())
    /// ```
    pub fn urls<I, S>(urls: I) -> Result<CheckOrigin, OriginConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let urls = urls.into_iter().map(|u| u.as_ref().parse()).collect::<Result<Vec<PublicUrl>, _>>()?;
        if urls.is_empty() {
            return Err(OriginConfigError::NoUrls);
        }
        Ok(CheckOrigin::Url(urls))
    }
}

impl fmt::Debug for CheckOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckOrigin::Localhost => f.write_str("Localhost"),
            CheckOrigin::Hosts(h) => f.debug_tuple("Hosts").field(h).finish(),
            CheckOrigin::List(l) => f.debug_tuple("List").field(l).finish(),
            CheckOrigin::Url(u) => f.debug_tuple("Url").field(u).finish(),
            CheckOrigin::Conn => f.write_str("Conn"),
            CheckOrigin::Custom(_) => f.write_str("Custom"),
            CheckOrigin::Off => f.write_str("Off"),
        }
    }
}

/// A URL browsers reach the endpoint at, for [`CheckOrigin::Url`]: its
/// scheme (`http` or `https`), host and port (the scheme's default when left
/// out). A path, query or fragment is allowed and not part of the origin.
///
/// ```
/// use fawkes::PublicUrl;
///
/// let url: PublicUrl = "HTTPS://Chat.Example.com/app".parse()?;
/// assert_eq!((url.scheme(), url.host(), url.port()), ("https", "chat.example.com", 443));
/// assert_eq!(url.to_string(), "https://chat.example.com");
/// # Ok::<(), fawkes::OriginConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    scheme: &'static str,
    host: String,
    port: u16,
}

impl PublicUrl {
    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.scheme
    }

    /// The host, lowercase; an IPv6 address is in brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default when the URL has none.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for PublicUrl {
    type Err = OriginConfigError;

    fn from_str(s: &str) -> Result<PublicUrl, OriginConfigError> {
        let bad = |reason| OriginConfigError::Url { url: s.to_owned(), reason };
        let (scheme, rest) = s.trim().split_once("://").ok_or_else(|| bad("expected http:// or https://"))?;
        let scheme = if scheme.eq_ignore_ascii_case("http") {
            "http"
        } else if scheme.eq_ignore_ascii_case("https") {
            "https"
        } else {
            return Err(bad("the scheme must be http or https"));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(bad("a user name is not part of an origin"));
        }
        let (host, port) = origin::split_authority(authority).ok_or_else(|| bad("the port must be a number"))?;
        if !origin::valid_host(host) {
            return Err(bad("the host must be a name, an IPv4 address or an IPv6 address in brackets"));
        }
        let port = match port {
            Some(port) => port,
            None if scheme == "http" => 80,
            None => 443,
        };
        Ok(PublicUrl { scheme, host: host.to_ascii_lowercase(), port })
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if Some(self.port) != origin::default_port(self.scheme) {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// The reverse proxies whose forwarded headers [`CheckOrigin::Conn`]
/// believes, and which headers they set ([`SocketConfig::trusted_proxies`]).
///
/// A request whose peer address is in the list has its scheme and host
/// taken from the forwarded headers; from any other peer those headers are
/// ignored, since anyone can send them. The peer address is axum's
/// `ConnectInfo<SocketAddr>`: serve the router with
/// `into_make_service_with_connect_info::<SocketAddr>()`, otherwise no peer
/// is known and no header is believed. An IPv4 peer seen as an IPv4-mapped
/// IPv6 address (a dual-stack listener) matches IPv4 entries.
///
/// Which value is used, when a header lists several:
///
/// * [`ForwardedHeaders::XForwarded`]: the last value of `X-Forwarded-Proto`
///   and of `X-Forwarded-Host` (over all their lines): the one set by the
///   nearest proxy, the peer. nginx (`proxy_set_header`), Caddy, Traefik and
///   AWS load balancers overwrite these headers; a value before the last can
///   come from the client. (Phoenix's `Plug.RewriteOn` reads them only when
///   there is a single value.) Behind several proxies, the one nearest to
///   Fawkes must pass on the scheme and host the browser used. The proxy
///   must set or remove both headers, or a client could choose the one it
///   leaves alone.
/// * [`ForwardedHeaders::Forwarded`]: proxies append one element per hop.
///   The last element was appended by the peer; while an element's `for=`
///   is itself a trusted proxy, the element before it is read too. The
///   `proto=` and `host=` used are those of the element so reached: the one
///   appended by the outermost trusted proxy, the one that saw the browser's
///   request. Elements before it, which anyone may have written, are never
///   read.
///
/// A parameter the proxy leaves out is the request's own (`http`, the
/// `Host` header). A trusted proxy's header that cannot be parsed (an
/// unterminated quote, a repeated parameter, a scheme other than
/// `http`/`https`/`ws`/`wss`, a host with a space...) refuses the origin.
///
/// ```
/// use fawkes::{ForwardedHeaders, SocketConfig, TrustedProxies};
///
/// let mut config = SocketConfig::default();
/// config.check_origin = fawkes::CheckOrigin::Conn;
/// config.trusted_proxies = Some(TrustedProxies::new(ForwardedHeaders::XForwarded, ["10.0.0.0/8", "::1"])?);
/// # Ok::<(), fawkes::OriginConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    headers: ForwardedHeaders,
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Proxies at these addresses (`10.0.0.1`, `::1`) or ranges
    /// (`10.0.0.0/8`, `fd00::/8`), which set `headers`. An entry that is
    /// neither is an error.
    pub fn new<I, S>(headers: ForwardedHeaders, proxies: I) -> Result<TrustedProxies, OriginConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = proxies
            .into_iter()
            .map(|p| {
                let p = p.as_ref().trim();
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| OriginConfigError::Proxy(p.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { headers, nets })
    }

    /// The headers these proxies set.
    pub fn headers(&self) -> ForwardedHeaders {
        self.headers
    }

    /// True when `ip` is one of these proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// The forwarded headers a trusted proxy sets (and overwrites or removes
/// when a client sent them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeaders {
    /// `X-Forwarded-Proto` and `X-Forwarded-Host`.
    XForwarded,
    /// `Forwarded` (RFC 7239): `proto=` and `host=`.
    Forwarded,
}

/// An invalid origin setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginConfigError {
    /// A public URL that cannot be an origin.
    #[error("invalid public URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`CheckOrigin::urls`] without any URL.
    #[error("no public URL given")]
    NoUrls,
    /// A trusted proxy that is neither an IP address nor a CIDR range.
    #[error(
        "invalid trusted proxy {0:?}: expected an IP address (10.0.0.1, ::1) or a CIDR range (10.0.0.0/8, fd00::/8)"
    )]
    Proxy(String),
}

/// Configuration of a socket handler and its transports.
///
/// | knob | default | what happens at the limit |
/// | --- | --- | --- |
/// | `timeout` | 60 s | a connection with no frame in either direction for that long is closed (1000) |
/// | `max_frame_size` | 10 000 000 bytes (Phoenix 1.8's WebSocket default) | a larger message closes the connection with 1009, sent so that the client sees it |
/// | `max_channels` | 100 | the next join is refused `{"reason": "too many channels joined"}` |
/// | `outbox_frames`, `outbox_bytes` | 4096 frames, 1 MiB (what the transport took but could not write yet included) | a client that does not read is closed at once (1013 when the socket can still take it), counted and logged with its socket id; across all connections, [`Endpoint::set_outbound_budget`](crate::Endpoint::set_outbound_budget) (1 GiB) closes the largest queues first |
/// | `mailbox_limit` | 1024 messages | the connection stops reading until the channel catches up |
/// | `write_timeout` | 30 s | a write the client does not take in that long closes the connection |
/// | `disconnect_close_code` | 1001 | the code for a `disconnect` broadcast (clients reconnect) |
/// | `compress` | off | permessage-deflate, when the client offers it |
/// | `check_origin` | `localhost` | the upgrade is refused with 403 (long poll: `{"status": 403}`) |
/// | `trusted_proxies` | none | forwarded headers are ignored |
/// | `longpoll` | off | the long-poll transport at `<path>/longpoll` |
/// | `longpoll_window` | 10 s | how long a poll waits for messages; a session not polled for 1.5 windows ends |
/// | `longpoll_max_sessions` | 10 000 | a new session beyond it is refused (`{"status": 403}`) |
/// | `longpoll_max_body` | 8 000 000 bytes | a larger POST is answered HTTP 413 |
/// | `max_connections` | 100 000 | further connections are refused (WebSocket 503, long poll `{"status": 403}`) |
/// | `max_connections_per_id` | 100 | further connections with the same socket id are refused likewise |
/// | `join_rate` | 100/s, bursts of 1000 | the join is refused `{"reason": "rate_limited", "retry_after": ms}` |
/// | `socket_event_rate` | 1000/s, bursts of 10 000 | the event gets an error reply `{"reason": "rate_limited", "retry_after": ms}` |
/// | `channel_event_rate` | off | likewise, per joined topic |
/// | `fanout_rate` | 50/s, bursts of 500, per socket id | a broadcast or presence change made by `handle_in` fails with [`RateLimited`](crate::RateLimited); returned from `handle_in` (with `?`), the client gets the same `rate_limited` reply and the channel goes on |
///
/// Heartbeats and leaves are never rate limited. `None` turns a rate limit off.
/// Every reply on a channel, accepted or refused, leaves in the order of the
/// client's pushes: a refusal waits behind the replies to the pushes before it.
///
/// # Where the defaults come from
///
/// A limit is there to bound what one abusive client can make the node
/// spend; a default must never refuse what a normal client does (reconnect
/// and rejoin up to the channel cap, switch rooms quickly, flush a burst of
/// pushes it queued while offline). Costs measured with `fawkes bench` on a
/// 2-core machine (docs/benchmarks.md):
///
/// * **Joins.** A whole connect, join, echo, leave and close cycle costs the
///   server about 80 µs of CPU (40 % of a core at 5 000 cycles/s), so a
///   join and its leave cost less. At 100 joins/s an abusive socket takes
///   under 1 % of a core; a burst of 1000 lets a client rejoin all 100
///   channels ten times in a row. Phoenix has no join limit.
/// * **Events.** An event handled and answered costs about 1.3 µs (echo),
///   so 1000/s is about 0.13 % of a core, and a burst of 10 000 (13 ms of
///   CPU) covers a client flushing what it queued while offline. Memory is
///   not at stake: a client's pushes wait in the kernel while its channel's
///   mailbox is full (back-pressure). A per-topic limit adds nothing to the
///   per-socket one and is off.
/// * **Fan-out.** An event that a channel broadcasts costs about 1 µs per
///   subscriber (0.9 µs at capacity): one person's tabs sending presence
///   updates as fast as they could took 98 % of a core with 50 listeners.
///   50/s per socket id (all of one user's tabs together) is above what a
///   human makes by typing or clicking, and bounds that user to about 5 %
///   of a core with 1000 listeners. Broadcasts from `handle_info`, HTTP
///   handlers and `Endpoint::broadcast` are the application's own and are
///   not counted.
/// * **Outbound queues.** 1 MiB per connection (Centrifugo's default) holds
///   about a second of a busy topic; memory per stalled reader stays at
///   that, and the endpoint's budget bounds the node whatever the number of
///   stalled readers. Broadcast frames are shared by every queue they sit
///   in, so the real cost is lower than the bound.
///
/// Behind a reverse proxy that terminates TLS, set `check_origin` to the
/// public URL(s) ([`CheckOrigin::urls`]), or keep [`CheckOrigin::Conn`] and
/// list the proxies in `trusted_proxies`; see [`CheckOrigin`] for why, and
/// for DNS rebinding.
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
    /// Proxies whose forwarded scheme and host [`CheckOrigin::Conn`]
    /// believes; `None` believes no forwarded header.
    pub trusted_proxies: Option<TrustedProxies>,
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
    /// Events per connection and topic (off by default: the per-socket
    /// limit bounds the same cost).
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
            trusted_proxies: None,
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
