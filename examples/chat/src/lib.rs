//! fawkes-chat: a chat on Fawkes.
//!
//! | piece | where |
//! | --- | --- |
//! | database, migrations (SQLite or PostgreSQL) | [`db`] |
//! | users with passwords, sessions, statuses, block lists | [`accounts`] |
//! | rooms, direct conversations, memberships and read positions, messages, notifications | [`chat`] |
//! | the JSON API | [`api`] |
//! | the socket, `room:*` and `notifications:*` channels | [`socket`] |
//! | what text is accepted: controls, names | [`text`] |

pub mod accounts;
pub mod api;
pub mod chat;
pub mod db;
pub mod socket;
pub mod text;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use fawkes::history::HistoryConfig;
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
    /// Sign-in attempts by name key.
    name_buckets: Arc<Buckets<String>>,
    /// Sign-in and registration attempts by client address.
    address_buckets: Arc<Buckets<std::net::IpAddr>>,
    /// How long a session lasts.
    session_max_age: Duration,
    /// Whether name-only sign-in is allowed.
    dev_sign_in: bool,
    _blocks_changed: Arc<fawkes::Subscription>,
    _resync: Arc<fawkes::Subscription>,
}

/// A token bucket per key (a user, a name, an address; on this node).
pub(crate) struct Buckets<K = i64>(Mutex<HashMap<K, (f64, Instant)>>);

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Buckets(Mutex::new(HashMap::new()))
    }
}

/// Past this many keys, the buckets that have filled up again (as good as
/// new) are dropped: keys chosen by clients (names tried at sign-in) do
/// not grow the map without bound.
const MAX_BUCKETS: usize = 10_000;

impl<K: std::hash::Hash + Eq> Buckets<K> {
    /// Takes a token from `key`'s bucket, which fills at `rate` a second up
    /// to `burst`, or says how long to wait for one.
    pub(crate) fn take(&self, key: K, rate: f64, burst: f64) -> Result<(), Duration> {
        let mut buckets = self.0.lock();
        let now = Instant::now();
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, (tokens, last)| *tokens + now.duration_since(*last).as_secs_f64() * rate < burst);
        }
        let (tokens, last) = buckets.entry(key).or_insert((burst, now));
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

/// The payload on [`BLOCKS_TOPIC`]: whose list changed, or (`null`)
/// forget them all.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct BlocksChanged {
    pub(crate) user_id: Option<i64>,
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
    /// Where the rooms' history is kept for every node (from
    /// `fawkes_redis::Cluster::history`); `None`: in this node's memory.
    pub shared_history: Option<std::sync::Arc<dyn fawkes::history::SharedHistory>>,
    /// In a Phoenix application's cluster (a PubSub on its Redis channel):
    /// its Phoenix.Presence module and that module's number of shards, so
    /// that presence is shared with its nodes.
    pub phoenix_presence: Option<(String, usize)>,
    /// How long a session lasts after sign-in ([`DEFAULT_SESSION_MAX_AGE`]
    /// in `main`).
    pub session_max_age: Duration,
    /// Allows sign-in by name alone (no password; the account is created
    /// when the name is new). For development only: anyone can then sign in
    /// as anyone. `CHAT_DEV_SIGN_IN=1` in `main`.
    pub dev_sign_in: bool,
    /// When set, `GET /metrics` answers only a scrape that sends
    /// `Authorization: Bearer <token>` (401 with a JSON body otherwise).
    /// `METRICS_TOKEN` in `main`.
    pub metrics_token: Option<String>,
}

impl Config {
    /// One node on `database_url` with the defaults: a generated secret key
    /// base, the history in memory, no Phoenix cluster, sessions of
    /// [`DEFAULT_SESSION_MAX_AGE`], no name-only sign-in, `/metrics` open.
    /// Set the other fields with struct update syntax:
    /// `Config { dev_sign_in: true, ..Config::new(url) }`.
    pub fn new(database_url: impl Into<String>) -> Config {
        Config {
            database_url: database_url.into(),
            secret_key_base: None,
            pubsub: None,
            shared_history: None,
            phoenix_presence: None,
            session_max_age: DEFAULT_SESSION_MAX_AGE,
            dev_sign_in: false,
            metrics_token: None,
        }
    }
}

/// How long a session lasts unless configured: two weeks.
pub const DEFAULT_SESSION_MAX_AGE: Duration = Duration::from_secs(14 * 86_400);

/// The history of each `room:*` topic: what a page that reconnects gets
/// back without asking the database.
///
/// It bridges a reconnect (a network change, a laptop waking up, a proxy
/// restarted): minutes, so 10 minutes. It holds every broadcast of the
/// room, messages and typing notices (about two per message), so 1000 of
/// them is 10 minutes of a room where someone speaks every second. 1 MiB
/// holds 1000 messages of 1 KB, when most are far shorter, and a node's
/// default history budget (256 MiB) holds 256 rooms at their full bounds.
/// Past any bound nothing is lost: the rejoin gets `history_gap` and the
/// page reads the messages it lacks from the database, as it does after
/// this server restarts (the history lives in its memory).
pub fn room_history() -> HistoryConfig {
    // typing notices are of the moment: not kept, not replayed
    HistoryConfig::new()
        .max_messages(1000)
        .max_bytes(1 << 20)
        .max_age(Duration::from_secs(600))
        .ephemeral(["user_typing"])
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
    // every broadcast on a room gets a position a page rejoins from
    endpoint.history("room:*", room_history());
    if let Some(shared) = &config.shared_history {
        endpoint.set_shared_history(shared.clone());
    }
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
            match changed.user_id {
                Some(user) => forget.forget_blocks(user),
                None => forget.forget_all_blocks(),
            }
        }
    }));
    // those broadcasts are at most once: after a loss of the link to the
    // other nodes (changes made meanwhile went nowhere), every node
    // forgets every list and asks the others to
    let (forget, announce) = (accounts.clone(), endpoint.clone());
    let resync = Arc::new(endpoint.subscribe(fawkes::pubsub::RECONNECTED_TOPIC, move |_| {
        forget.forget_all_blocks();
        let announce = announce.clone();
        tokio::spawn(async move {
            let all = serde_json::to_value(BlocksChanged { user_id: None }).unwrap_or_default();
            if let Err(e) = announce.broadcast(BLOCKS_TOPIC, "changed", all) {
                tracing::warn!(error = %e, "block lists: the resynchronisation was not announced");
            }
        });
    }));
    let app = App {
        _blocks_changed: blocks_changed,
        _resync: resync,
        accounts,
        chat: chat::Chat::new(pool),
        endpoint: endpoint.clone(),
        presence,
        message_buckets: Arc::default(),
        notification_buckets: Arc::default(),
        name_buckets: Arc::default(),
        address_buckets: Arc::default(),
        session_max_age: config.session_max_age,
        dev_sign_in: config.dev_sign_in,
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
    let router = axum::Router::new()
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }))
        .route("/assets/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], APP_JS) }))
        .route("/assets/phoenix.mjs", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], PHOENIX_JS) }))
        .route("/health", get(|| async { axum::Json(json!({"status": "ok"})).into_response() }))
        .merge(api::routes())
        .with_state(app.clone())
        .merge(fawkes::telemetry::metrics_router(&endpoint, config.metrics_token.clone()))
        .merge(service.router("/socket"));
    Ok((router, service, app))
}

impl App {
    /// Sends a notification to `to` unless `to` blocked its sender
    /// (`from`): stored (a reload shows it) and pushed on
    /// `notifications:<to>` as `new_notification`. `None` when blocked.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn notify(
        &self,
        to: i64,
        from: &accounts::User,
        mut payload: serde_json::Map<String, Value>,
    ) -> Result<Option<Value>, sqlx::Error> {
        if self.accounts.blocked_by(to).await?.contains(&from.id) {
            return Ok(None);
        }
        payload.insert("from".into(), json!({"id": from.id, "name": from.name}));
        let stored = self.chat.store_notification(to, payload).await?;
        if let Err(e) = self.endpoint.broadcast(&format!("notifications:{to}"), "new_notification", stored.clone()) {
            tracing::error!(error = %e, "a stored notification was not pushed");
        }
        Ok(Some(stored))
    }

    /// What follows a stored message, from the channel or the API: the
    /// room's `new_message` broadcast, and a `mention` notification to each
    /// member it mentions (`@name`; not its author, not who blocked them).
    pub(crate) async fn announce(&self, room: i64, author: &accounts::User, message: &chat::ChatMessage) {
        if let Err(e) = self.endpoint.broadcast(&format!("room:{room}"), "new_message", json!(message)) {
            tracing::error!(error = %e, room, "a stored message was not broadcast");
        }
        let keys = chat::mentions(&message.body);
        if keys.is_empty() {
            return;
        }
        let result: Result<(), sqlx::Error> = async {
            let mentioned: Vec<i64> =
                self.accounts.by_keys(&keys).await?.into_iter().map(|u| u.id).filter(|id| *id != author.id).collect();
            for to in self.chat.members_among(room, &mentioned).await? {
                let payload = json!({
                    "kind": "mention",
                    "message": message.body,
                    "room_id": room,
                    "message_id": message.id,
                });
                if let Value::Object(payload) = payload {
                    self.notify(to, author, payload).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, room, "mentions not notified");
        }
    }
}

/// `{"error": ...}` for tests.
pub fn error_status(v: &Value) -> Option<u64> {
    v["error"]["status"].as_u64()
}
