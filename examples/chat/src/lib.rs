//! fawkes-chat: a chat on Fawkes.
//!
//! | piece | where |
//! | --- | --- |
//! | database, migrations (SQLite or PostgreSQL) | [`db`] |
//! | users, sign-in tokens, block lists | [`accounts`] |
//! | rooms, memberships, messages | [`chat`] |
//! | the JSON API | [`api`] |
//! | the socket, `room:*` and `notifications:*` channels | [`socket`] |

pub mod accounts;
pub mod api;
pub mod chat;
pub mod db;
pub mod socket;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use fawkes::{CheckOrigin, Endpoint, Presence, SocketHandler, SocketService};
use parking_lot::Mutex;
use serde_json::{json, Value};

/// The application: contexts, endpoint and presence. Cheap to clone.
#[derive(Clone)]
pub struct App {
    /// Users and tokens.
    pub accounts: accounts::Accounts,
    /// Rooms and messages.
    pub chat: chat::Chat,
    /// Broadcasts from anywhere.
    pub endpoint: Endpoint,
    /// Who is in each room.
    pub presence: Presence,
    message_buckets: Arc<Buckets>,
    notification_buckets: Arc<Buckets>,
    _blocks_changed: Arc<fawkes::Subscription>,
}

/// A token bucket per user (on this node).
#[derive(Default)]
pub(crate) struct Buckets(Mutex<HashMap<i64, (f64, Instant)>>);

impl Buckets {
    /// Takes a token from `user`'s bucket, which fills at `rate` a second up
    /// to `burst`, or says how long to wait for one.
    pub(crate) fn take(&self, user: i64, rate: f64, burst: f64) -> Result<(), Duration> {
        let mut buckets = self.0.lock();
        let now = Instant::now();
        let (tokens, last) = buckets.entry(user).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

/// Where a change of someone's block list is announced to every node.
pub(crate) const BLOCKS_TOPIC: &str = "chat:blocks_changed";

/// The payload on [`BLOCKS_TOPIC`].
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct BlocksChanged {
    pub(crate) user_id: i64,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("App")
    }
}

/// Configuration, from the environment in `main`.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// Signs tokens; when absent one is generated and stored in the database.
    pub secret_key_base: Option<String>,
    /// The PubSub to build the endpoint on: a cluster's (from
    /// `fawkes_redis::connect`) to run several nodes; `None` for one node.
    pub pubsub: Option<fawkes::PubSub>,
    /// In a Phoenix application's cluster (a PubSub on its Redis channel):
    /// its Phoenix.Presence module and that module's number of shards, so
    /// that presence is shared with its nodes.
    pub phoenix_presence: Option<(String, usize)>,
    /// The Redis adapter's counters, served on `/metrics` with the
    /// endpoint's.
    pub redis_stats: Option<Arc<fawkes_redis::RedisStats>>,
}

const INDEX: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const PHOENIX_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/phoenix.mjs"));

/// Builds the application: its router (page, API, socket) and its socket
/// service (for tests without a network).
///
/// # Errors
///
/// When the database cannot be opened or migrated.
pub async fn build(config: &Config) -> Result<(axum::Router, SocketService<socket::ChatSocket>, App), sqlx::Error> {
    let (pool, backend) = db::connect(&config.database_url).await?;
    tracing::info!(?backend, "database ready");
    let accounts = accounts::Accounts::new(pool.clone(), config.secret_key_base.clone()).await?;
    let endpoint = match &config.pubsub {
        Some(pubsub) => Endpoint::new(pubsub.clone()),
        None => Endpoint::local(),
    };
    let names = accounts.clone();
    let mut presence = Presence::builder(&endpoint);
    if let Some((module, shards)) = &config.phoenix_presence {
        presence = presence.phoenix(module).pool_size(*shards);
    }
    let presence = presence
        // the names of everyone in a presence list, in one query
        .fetch(move |_topic, mut entries| {
            let names = names.clone();
            async move {
                let ids: Vec<i64> = entries.keys().filter_map(|k| k.parse().ok()).collect();
                let found = match names.names(&ids).await {
                    Ok(found) => found,
                    Err(e) => {
                        // the list still goes out, without names
                        tracing::error!(error = %e, "presence names not loaded");
                        Default::default()
                    }
                };
                for (key, entry) in entries.iter_mut() {
                    // keys are user ids: this app tracks nothing else
                    let Ok(id) = key.parse::<i64>() else { continue };
                    entry["user"] = json!({"id": id, "name": found.get(&id).cloned().unwrap_or_default()});
                }
                entries
            }
        })
        .build();
    // block lists are cached per node: a change on any node clears them all
    let forget = accounts.clone();
    let blocks_changed = Arc::new(endpoint.subscribe(BLOCKS_TOPIC, move |b| {
        if let Ok(changed) = b.payload.decode::<BlocksChanged>() {
            forget.forget_blocks(changed.user_id);
        }
    }));
    let app = App {
        _blocks_changed: blocks_changed,
        accounts,
        chat: chat::Chat::new(pool),
        endpoint: endpoint.clone(),
        presence,
        message_buckets: Arc::default(),
        notification_buckets: Arc::default(),
    };
    let service = SocketHandler::new(socket::ChatSocket { app: app.clone() })
        .channel::<socket::RoomChannel>("room:*")
        .channel::<socket::NotificationsChannel>("notifications:*")
        .configure(|c| {
            c.longpoll = true;
            // the page is served by this server: its origin is the request's
            c.check_origin = CheckOrigin::Conn;
            // what one person's tabs together make the server send to
            // everyone else in a room (typing, status changes): no one types
            // or changes status 20 times a second for long
            c.fanout_rate = Some(fawkes::RateLimit::new(20.0, 100.0));
        })
        .build(&endpoint);
    let redis_stats = config.redis_stats.clone();
    let router = axum::Router::new()
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }))
        .route("/assets/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], APP_JS) }))
        .route("/assets/phoenix.mjs", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], PHOENIX_JS) }))
        .route("/health", get(|| async { axum::Json(json!({"status": "ok"})).into_response() }))
        .route(
            "/metrics",
            get(move |State(app): State<App>| async move {
                let mut text = app.endpoint.metrics().snapshot().prometheus();
                if let Some(stats) = &redis_stats {
                    text.push_str(&stats.prometheus());
                }
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
            }),
        )
        .merge(api::routes())
        .with_state(app.clone())
        .merge(service.router("/socket"));
    Ok((router, service, app))
}

/// `{"error": ...}` for tests.
pub fn error_status(v: &Value) -> Option<u64> {
    v["error"]["status"].as_u64()
}
