//! Building a socket handler and connecting clients to it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use fawkes_protocol::Vsn;
use futures_util::FutureExt;
use tracing::Instrument;

use crate::config::SocketConfig;
use crate::conn::{ConnState, SocketShared};
use crate::queue::{Outbox, OutboxLimits};
use crate::router::{Factory, Pattern, Route};
use crate::{telemetry, Channel, ConnectError, ConnectInfo, Endpoint, Params, Socket};

/// A socket handler and its channel routes, before it is mounted.
///
/// # Example
///
/// ```
/// # use fawkes::*;
/// # struct UserSocket;
/// # impl Socket for UserSocket {
/// #     type Assigns = ();
/// #     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> { Ok(()) }
/// # }
/// # struct Room;
/// # impl Channel<UserSocket> for Room {
/// #     type Info = ();
/// #     async fn join(_: &str, _: Payload, _: &mut Ctx<Self, UserSocket>) -> Result<Join<Self>, ChannelError> { Ok(Join::ok(Room)) }
/// # }
/// let endpoint = Endpoint::local();
/// let handler = SocketHandler::new(UserSocket)
///     .channel::<Room>("room:*")
///     .configure(|c| c.max_channels = 20);
/// let app: axum::Router = endpoint.socket("/socket", handler);
/// ```
pub struct SocketHandler<S: Socket> {
    socket: S,
    routes: Vec<Route<S>>,
    config: SocketConfig,
}

impl<S: Socket> std::fmt::Debug for SocketHandler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let patterns: Vec<_> = self.routes.iter().map(|r| &r.pattern).collect();
        f.debug_struct("SocketHandler").field("routes", &patterns).field("config", &self.config).finish()
    }
}

impl<S: Socket> SocketHandler<S> {
    /// A handler for `socket` with no channels yet.
    pub fn new(socket: S) -> SocketHandler<S> {
        SocketHandler { socket, routes: Vec::new(), config: SocketConfig::default() }
    }

    /// Routes topics matching `pattern` (an exact topic, or a prefix ending
    /// in `*`) to channel `C`. Routes are tried in the order they are added.
    ///
    /// # Panics
    ///
    /// When `pattern` has a `*` anywhere but at its end (a programming error,
    /// found when the application starts).
    pub fn channel<C: Channel<S>>(mut self, pattern: &str) -> Self {
        let pattern = match Pattern::parse(pattern) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let factory = Arc::new(Factory::<C>::new(&pattern));
        self.routes.push(Route { pattern, factory });
        self
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: SocketConfig) -> Self {
        self.config = config;
        self
    }

    /// Changes the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut SocketConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Binds the handler to an endpoint.
    pub fn build(self, endpoint: &Endpoint) -> SocketService<S> {
        SocketService {
            shared: Arc::new(SocketShared {
                socket: self.socket,
                routes: self.routes,
                config: self.config,
                endpoint: endpoint.clone(),
                longpoll: Default::default(),
                slots: Default::default(),
            }),
        }
    }
}

/// A socket handler bound to an endpoint: serve it over HTTP with
/// [`SocketService::router`], or connect to it in memory with
/// [`SocketService::connect_local`]. Cheap to clone.
pub struct SocketService<S: Socket> {
    pub(crate) shared: Arc<SocketShared<S>>,
}

impl<S: Socket> Clone for SocketService<S> {
    fn clone(&self) -> Self {
        SocketService { shared: self.shared.clone() }
    }
}

impl<S: Socket> std::fmt::Debug for SocketService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketService").field("config", &self.shared.config).finish()
    }
}

impl<S: Socket> SocketService<S> {
    /// The routes of this socket mounted at `path`: `<path>/websocket`, and
    /// `<path>/longpoll` when long polling is on.
    pub fn router(&self, path: &str) -> axum::Router {
        crate::transport::routes::router(self.shared.clone(), path)
    }

    /// The same routes in a router whose state is the application's `St`,
    /// so that they merge into the application's router before its
    /// `.with_state(app)` (the socket's routes carry their own state).
    ///
    /// ```
    /// # use fawkes::{ConnectError, ConnectInfo, Endpoint, Params, Socket, SocketHandler};
    /// # struct UserSocket;
    /// # impl Socket for UserSocket {
    /// #     type Assigns = ();
    /// #     async fn connect(&self, _: &Params, _: &ConnectInfo) -> Result<(), ConnectError> { Ok(()) }
    /// # }
    /// use fawkes::axum::{extract::State, routing::get, Router};
    ///
    /// #[derive(Clone)]
    /// struct App {
    ///     name: &'static str,
    /// }
    ///
    /// let endpoint = Endpoint::local();
    /// let socket = SocketHandler::new(UserSocket).build(&endpoint);
    /// let app: Router = Router::new()
    ///     .route("/name", get(|State(app): State<App>| async move { app.name }))
    ///     .merge(socket.router_with_state::<App>("/socket"))
    ///     .with_state(App { name: "fawkes" });
    /// # let _ = app;
    /// ```
    pub fn router_with_state<St: Clone + Send + Sync + 'static>(&self, path: &str) -> axum::Router<St> {
        crate::transport::routes::router(self.shared.clone(), path)
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }

    /// The socket handler.
    pub fn handler(&self) -> &S {
        &self.shared.socket
    }

    /// Connects a client in memory whose connection carries `assigns`,
    /// without running [`Socket::connect`] (Phoenix.ChannelTest's
    /// `socket(UserSocket, id, assigns)`): for tests of channels, where
    /// authentication is not what is tested. The socket id is
    /// [`Socket::id`] of `assigns`.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Status`] (503) at the connection limits.
    pub fn connect_local_with_assigns(
        &self,
        assigns: S::Assigns,
        vsn: Vsn,
    ) -> Result<crate::LocalConnection, ConnectError> {
        let conn = established(&self.shared, assigns, vsn, false, telemetry::Trace::default())?;
        Ok(crate::transport::local::run(conn))
    }
}

/// Runs `connect` and `id` for a new connection. A panic in `connect` is a
/// refusal.
pub(crate) async fn connect<S: Socket>(
    shared: &Arc<SocketShared<S>>,
    params: &Params,
    info: &ConnectInfo,
    vsn: Vsn,
    transport: &'static str,
    compress: bool,
) -> Result<Arc<ConnState<S>>, ConnectError> {
    let started = Instant::now();
    let trace = telemetry::Trace::of(params, info);
    let span = tracing::info_span!("connect", transport, vsn = vsn.as_str());
    telemetry::continue_trace(&span, &trace);
    let result = match AssertUnwindSafe(shared.socket.connect(params, info)).catch_unwind().instrument(span).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Failed("connect panicked".into())),
    };
    telemetry::socket_connected(shared.endpoint.metrics(), transport, vsn.as_str(), result.is_ok(), started);
    let assigns = match result {
        Ok(a) => a,
        Err(e) => {
            if let ConnectError::Failed(why) = &e {
                tracing::error!(error = %why, "connect failed");
            }
            shared.endpoint.metrics().refused();
            return Err(e);
        }
    };
    established(shared, assigns, vsn, compress, trace)
}

/// A connection whose `connect` has accepted `assigns`: its id, its slot
/// under the connection limits and its outbox.
pub(crate) fn established<S: Socket>(
    shared: &Arc<SocketShared<S>>,
    assigns: S::Assigns,
    vsn: Vsn,
    compress: bool,
    trace: telemetry::Trace,
) -> Result<Arc<ConnState<S>>, ConnectError> {
    let id = shared.socket.id(&assigns);
    let Some(slot) =
        shared.slots.acquire(id.as_deref(), shared.config.max_connections, shared.config.max_connections_per_id)
    else {
        tracing::warn!(id = ?id, "refusing a connection: at the connection limit");
        shared.endpoint.metrics().refused();
        return Err(ConnectError::Status(http::StatusCode::SERVICE_UNAVAILABLE));
    };
    let limits = OutboxLimits { frames: shared.config.outbox_frames, bytes: shared.config.outbox_bytes };
    Ok(Arc::new(ConnState {
        shared: shared.clone(),
        assigns,
        outbox: Arc::new(Outbox::new(limits, shared.endpoint.outbound_budget())),
        vsn,
        compress,
        id,
        trace,
        _slot: slot,
    }))
}
