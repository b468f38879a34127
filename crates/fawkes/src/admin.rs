//! The live admin page: an opt-in router that serves a page showing the
//! cluster's nodes, connections, topics by subscribers, presence counts,
//! message rates, slow-consumer closes and recent errors, updated every
//! second.
//!
//! The page is itself a client of a Fawkes channel: it loads the official
//! `phoenix` client from [`Admin::client_url`], connects to the admin
//! socket (mounted beside the page, at `<prefix>/socket`) with the key, and
//! joins `admin:stats`, which pushes a `stats` snapshot every second. The
//! page itself holds no data; the socket refuses a connection without the
//! key (HTTP 403, as any refused connect). The key is given to the page in
//! its URL's fragment (`/admin#key=...`, never sent to the server in a
//! request line) or typed into it.
//!
//! Every node that serves the admin router publishes its figures once a
//! second on the PubSub topic [`NODES_TOPIC`], so each page lists every
//! node of the cluster (a node missing for 5 s is dropped).
//!
//! ```no_run
//! # async fn f() {
//! let endpoint = fawkes::Endpoint::local();
//! let admin = fawkes::admin::Admin::new(&endpoint, "a long random key").client_url("/assets/phoenix.mjs");
//! let app = fawkes::axum::Router::new().nest("/admin", admin.router());
//! # let _ = app;
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::{
    Channel, ChannelContext, ChannelError, CheckOrigin, ConnectError, ConnectInfo, Endpoint, HandleInfo, Join, Params,
    Payload, Presence, Socket, SocketHandler, Subscription,
};

/// The PubSub topic on which nodes serving the admin router publish their
/// figures, every second.
pub const NODES_TOPIC: &str = "fawkes:admin:nodes";

/// The channel topic the page joins.
pub const STATS_TOPIC: &str = "admin:stats";

/// How often figures are published and pushed.
const TICK: Duration = Duration::from_secs(1);

/// How long a node that stopped publishing is still listed.
const NODE_TTL: Duration = Duration::from_secs(5);

/// Prefixes of the topics Fawkes itself uses (cluster, long poll, presence
/// replication), not listed.
const INTERNAL: [&str; 3] = ["fawkes:", "phx:", "phx_presence:"];

/// How many topics the page lists.
const TOP_TOPICS: usize = 15;

const PAGE: &str = include_str!("admin/index.html");

/// The admin page's router; see the [module](self).
#[derive(Clone)]
pub struct Admin {
    endpoint: Endpoint,
    key: Arc<str>,
    presence: Option<Presence>,
    client_url: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("client_url", &self.client_url).finish_non_exhaustive()
    }
}

/// What every node tells the others, and the rates derived from it.
#[derive(Debug, Default)]
struct Nodes {
    /// node name → (when heard, its figures)
    seen: BTreeMap<String, (Instant, Value)>,
}

struct Shared {
    admin: Admin,
    nodes: Mutex<Nodes>,
    _subscription: Mutex<Option<Subscription>>,
}

struct AdminSocket {
    shared: Arc<Shared>,
}

impl Socket for AdminSocket {
    type Assigns = ();

    async fn connect(&self, params: &Params, _: &ConnectInfo) -> Result<(), ConnectError> {
        let given = params.get_str("key").unwrap_or_default();
        let key = self.shared.admin.key.as_bytes();
        let same = given.len() == key.len() && given.bytes().zip(key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if same && !key.is_empty() {
            Ok(())
        } else {
            Err(ConnectError::Refused)
        }
    }
}

/// The `admin:stats` channel: a `stats` push now and every second.
struct StatsChannel;

impl Channel<AdminSocket> for StatsChannel {
    type Info = ();

    async fn join(
        topic: &str,
        _: Payload,
        ctx: &mut ChannelContext<AdminSocket, ()>,
    ) -> Result<Join<Self>, ChannelError> {
        if topic != STATS_TOPIC {
            return Ok(Join::refuse(json!({"reason": "unknown topic"})));
        }
        ctx.channel_ref().send(())?;
        Ok(Join::ok(StatsChannel))
    }

    async fn handle_info(
        &mut self,
        _: (),
        ctx: &mut ChannelContext<AdminSocket, ()>,
    ) -> Result<HandleInfo, ChannelError> {
        let shared = ctx.handler().shared.clone();
        let stats = shared.snapshot().await;
        ctx.push("stats", stats)?;
        ctx.send_after(TICK, ());
        Ok(HandleInfo::Continue)
    }
}

/// This node's figures, as published to the others.
fn node_figures(endpoint: &Endpoint, previous: &mut Option<(Instant, crate::telemetry::MetricsSnapshot)>) -> Value {
    let now = Instant::now();
    let m = endpoint.metrics().snapshot();
    let before = previous.as_ref();
    let rate = |f: fn(&crate::telemetry::MetricsSnapshot) -> u64| match before {
        Some((at, p)) => {
            let secs = now.duration_since(*at).as_secs_f64().max(0.001);
            (f(&m).saturating_sub(f(p)) as f64 / secs).round()
        }
        None => 0.0,
    };
    let figures = json!({
        "node": endpoint.pubsub().node_name(),
        "connections": m.connections,
        "longpoll_sessions": m.longpoll_sessions,
        "channels": m.channels,
        "messages_in_per_s": rate(|s| s.messages_in),
        "broadcasts_per_s": rate(|s| s.broadcasts),
        "deliveries_per_s": rate(|s| s.deliveries),
        "slow_consumers": m.slow_consumers,
        "decode_errors": m.decode_errors,
        "rate_limited": m.rate_limited,
        "refused": m.refused,
        "outbound_bytes": endpoint.outbound_bytes(),
    });
    *previous = Some((now, m));
    figures
}

/// Publishes this node's figures every second while the admin lives.
async fn publish_figures(shared: Weak<Shared>) {
    let mut previous = None;
    loop {
        let Some(s) = shared.upgrade() else { return };
        let figures = node_figures(&s.admin.endpoint, &mut previous);
        let b = crate::Broadcast::new(NODES_TOPIC, "figures", Payload::from(figures));
        if let Err(e) = s.admin.endpoint.pubsub().broadcast(b) {
            tracing::debug!(error = %e, "admin: this node's figures were not published");
        }
        drop(s);
        tokio::time::sleep(TICK).await;
    }
}

impl Shared {
    async fn snapshot(&self) -> Value {
        let endpoint = &self.admin.endpoint;
        let nodes: Vec<Value> = {
            let mut n = self.nodes.lock();
            n.seen.retain(|_, (at, _)| at.elapsed() < NODE_TTL);
            n.seen.values().map(|(_, v)| v.clone()).collect()
        };
        let (top, total) = endpoint.pubsub().top_topics(TOP_TOPICS + 8);
        let mut topics = Vec::new();
        for (topic, subscribers) in top.into_iter().filter(|(t, _)| !INTERNAL.iter().any(|p| t.starts_with(p))) {
            if topics.len() == TOP_TOPICS {
                break;
            }
            let presence = match &self.admin.presence {
                Some(p) => {
                    let list = p.list(&topic).await;
                    let metas: usize =
                        list.values().map(|v| v.get("metas").and_then(Value::as_array).map_or(0, Vec::len)).sum();
                    json!({"keys": list.len(), "metas": metas})
                }
                None => Value::Null,
            };
            topics.push(json!({"topic": topic, "subscribers": subscribers, "presence": presence}));
        }
        let errors: Vec<Value> = endpoint
            .metrics()
            .recent_errors()
            .into_iter()
            .rev()
            .take(20)
            .map(|e| json!({"at_ms": e.at_ms, "message": e.message}))
            .collect();
        json!({
            "node": endpoint.pubsub().node_name(),
            "nodes": nodes,
            "topics": topics,
            "topics_total": total,
            "errors": errors,
        })
    }
}

impl Admin {
    /// The admin page of `endpoint`, for clients that give `key` (a key
    /// that is empty refuses every client).
    pub fn new(endpoint: &Endpoint, key: impl Into<String>) -> Admin {
        Admin {
            endpoint: endpoint.clone(),
            key: Arc::from(key.into()),
            presence: None,
            client_url: "/assets/phoenix.mjs".into(),
        }
    }

    /// Shows each listed topic's presence counts (keys and metas).
    pub fn presence(mut self, presence: Presence) -> Admin {
        self.presence = Some(presence);
        self
    }

    /// Where the page loads the official `phoenix` client's ES module from
    /// (`phoenix/priv/static/phoenix.mjs` of the npm package, served by the
    /// application); default `/assets/phoenix.mjs`.
    pub fn client_url(mut self, url: impl Into<String>) -> Admin {
        self.client_url = url.into();
        self
    }

    /// The routes, to nest where the page is to be (`/admin`, say): `GET /`
    /// the page, `<prefix>/socket/websocket` its socket. Call it inside the
    /// Tokio runtime: it starts the task that publishes this node's figures
    /// (it ends when the router is dropped).
    pub fn router(&self) -> Router {
        let shared = Arc::new(Shared { admin: self.clone(), nodes: Mutex::default(), _subscription: Mutex::new(None) });
        let weak = Arc::downgrade(&shared);
        let subscription = self.endpoint.subscribe(NODES_TOPIC, move |b| {
            let Some(shared) = weak.upgrade() else { return };
            let Ok(v) = b.payload.to_value() else { return };
            if let Some(node) = v.get("node").and_then(Value::as_str) {
                shared.nodes.lock().seen.insert(node.to_owned(), (Instant::now(), v.clone()));
            }
        });
        *shared._subscription.lock() = Some(subscription);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(publish_figures(Arc::downgrade(&shared)));
        }
        let page = PAGE.replace("__PHOENIX_CLIENT_URL__", &self.client_url.replace('"', "%22"));
        let socket = SocketHandler::new(AdminSocket { shared }).channel::<StatsChannel>("admin:*").configure(|c| {
            // the page is served by this server
            c.check_origin = CheckOrigin::Conn;
        });
        Router::new()
            .route(
                "/",
                get(move || {
                    let page = page.clone();
                    async move {
                        (
                            [
                                (http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
                                (http::header::CACHE_CONTROL, "no-store"),
                            ],
                            page,
                        )
                            .into_response()
                    }
                }),
            )
            .merge(self.endpoint.socket("/socket", socket))
    }
}
