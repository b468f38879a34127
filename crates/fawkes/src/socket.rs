//! The socket: one connection of one client, authenticated once by
//! [`Socket::connect`], multiplexing any number of channels.

use std::future::Future;
use std::net::SocketAddr;

use http::{HeaderMap, StatusCode, Uri};
use serde_json::{Map, Value};

/// A socket handler: decides who may connect and what a connection carries.
///
/// `connect` runs once per connection, with the connection's query parameters
/// and facts about the request; it returns the connection's typed
/// [`Socket::Assigns`] (Phoenix's `socket.assigns`), which every channel of the
/// connection can read, or refuses the connection.
///
/// # Example
///
/// ```
/// use fawkes::{ConnectError, ConnectInfo, Params, Socket};
///
/// struct UserSocket;
///
/// struct User {
///     id: String,
/// }
///
/// impl Socket for UserSocket {
///     type Assigns = Option<User>;
///
///     async fn connect(&self, params: &Params, _info: &ConnectInfo) -> Result<Self::Assigns, ConnectError> {
///         if params.get_str("token") == Some("invalid") {
///             return Err(ConnectError::Refused);
///         }
///         Ok(params.get_str("user_id").map(|id| User { id: id.to_owned() }))
///     }
///
///     fn id(&self, user: &Self::Assigns) -> Option<String> {
///         user.as_ref().map(|u| format!("user_socket:{}", u.id))
///     }
/// }
/// ```
///
/// A handler that does not implement `Socket` is refused with a message
/// that says what to write:
///
/// ```compile_fail
/// struct NotASocket;
/// // error[E0277]: `NotASocket` is not a socket handler
/// //   = note: write `impl fawkes::Socket for NotASocket` with `type Assigns` and `async fn connect`
/// let _ = fawkes::SocketHandler::new(NotASocket);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a socket handler",
    label = "expected a type implementing `fawkes::Socket`",
    note = "write `impl fawkes::Socket for {Self}` with `type Assigns` and `async fn connect`"
)]
pub trait Socket: Send + Sync + Sized + 'static {
    /// Per-connection data set by `connect`, read-only afterwards.
    type Assigns: Send + Sync + 'static;

    /// Authenticates a new connection.
    fn connect(
        &self,
        params: &Params,
        info: &ConnectInfo,
    ) -> impl Future<Output = Result<Self::Assigns, ConnectError>> + Send;

    /// The socket's id. Every connection with the same id can be closed at
    /// once by broadcasting `disconnect` on that id (see
    /// [`crate::Endpoint::disconnect`]). `None` (the default) is anonymous.
    fn id(&self, _assigns: &Self::Assigns) -> Option<String> {
        None
    }
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Refused: WebSocket upgrade answered 403, long poll `{"status": 403}`.
    #[error("connection refused")]
    Refused,
    /// Refused with a specific HTTP status for the WebSocket upgrade (Phoenix's
    /// `error_handler`), for example 429. Long polling answers 403.
    #[error("connection refused with status {0}")]
    Status(StatusCode),
    /// `connect` failed; logged, and answered as [`ConnectError::Refused`].
    #[error("connect failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The connection's parameters: the query string of the request, decoded as
/// Plug does (`a[b]=c` nests, `a[]=1&a[]=2` makes a list), including `vsn`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Map<String, Value>);

impl Params {
    /// Decodes a query string.
    ///
    /// ```
    /// use fawkes::Params;
    /// let p = Params::from_query("token=abc&user[id]=7&tags[]=a&tags[]=b&vsn=2.0.0");
    /// assert_eq!(p.get_str("token"), Some("abc"));
    /// assert_eq!(p.get("user").unwrap()["id"], "7");
    /// assert_eq!(p.get("tags").unwrap(), &serde_json::json!(["a", "b"]));
    /// ```
    pub fn from_query(query: &str) -> Params {
        let mut root = Map::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            insert_nested(&mut root, &k, Value::String(v.into_owned()));
        }
        Params(root)
    }

    /// The value of a parameter.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// The value of a parameter that is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// All parameters.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Adds or replaces a parameter.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.0.insert(key.into(), value.into());
    }
}

fn insert_nested(root: &mut Map<String, Value>, key: &str, value: Value) {
    let (base, rest) = match key.find('[') {
        Some(i) if key.ends_with(']') && i > 0 => (&key[..i], &key[i..]),
        _ => {
            root.insert(key.to_owned(), value);
            return;
        }
    };
    let segments: Vec<&str> = rest.trim_start_matches('[').trim_end_matches(']').split("][").collect();
    let mut slot = root.entry(base.to_owned()).or_insert(Value::Null);
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if seg.is_empty() {
            if !slot.is_array() {
                *slot = Value::Array(Vec::new());
            }
            let Value::Array(list) = slot else { return };
            if last {
                list.push(value);
                return;
            }
            list.push(Value::Object(Map::new()));
            let Some(next) = list.last_mut() else { return };
            slot = next;
        } else {
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            let Value::Object(map) = slot else { return };
            if last {
                map.insert((*seg).to_owned(), value);
                return;
            }
            slot = map.entry((*seg).to_owned()).or_insert(Value::Null);
        }
    }
}

/// Facts about the request that opened a connection, for `connect`.
///
/// As in Phoenix, cookies and other headers are deliberately not exposed
/// (cross-site WebSocket hijacking); what is exposed is the peer address, the
/// URI, the user agent, every `x-` header and the trace context headers.
#[derive(Debug, Clone, Default)]
pub struct ConnectInfo {
    peer: Option<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
}

impl ConnectInfo {
    /// Connect info from a request's parts; only the exposed headers are kept.
    pub fn new(peer: Option<SocketAddr>, uri: Uri, headers: &HeaderMap) -> ConnectInfo {
        let mut kept = HeaderMap::new();
        for (name, value) in headers {
            let n = name.as_str();
            if n.starts_with("x-")
                || n == "user-agent"
                || n == "traceparent"
                || n == "tracestate"
                || n.starts_with("sec-websocket-")
            {
                kept.append(name.clone(), value.clone());
            }
        }
        ConnectInfo { peer, uri, headers: kept }
    }

    /// The client's address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The request URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The `user-agent` header.
    pub fn user_agent(&self) -> Option<&str> {
        self.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok())
    }

    /// The exposed headers: `x-*`, `user-agent`, `traceparent`, `tracestate`
    /// and `sec-websocket-*`.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}
