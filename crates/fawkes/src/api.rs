//! The server API: an HTTP API for backends that are not written in Rust
//! (modelled on Centrifugo's server HTTP API, named in Phoenix's terms):
//! publish to topics, disconnect sockets, read presence and topic
//! statistics.
//!
//! Every route is `POST` with a JSON body and answers JSON; requests carry
//! `Authorization: Bearer <key>` with one of the API's keys. The routes are
//! relative: nest them where the API is to be (the OpenAPI document's server
//! is `/api`). The OpenAPI 3.1 document ([`OPENAPI`], served
//! unauthenticated at `GET <prefix>/openapi.json`) describes each request
//! and answer.
//!
//! | route | body | answer |
//! | --- | --- | --- |
//! | `/publish` | `{"topic", "event", "payload"?}` | `{"status": "ok"}` |
//! | `/batch` | `{"commands": [publish, ...]}` (at most [`MAX_BATCH`]) | `{"status": "ok", "results": [{"status": "ok"} or {"error": ...}, ...]}` |
//! | `/disconnect` | `{"socket_id"}` | `{"status": "ok"}` |
//! | `/presence` | `{"topic"}` | `{"presences": {key: {"metas": [...]}}}` |
//! | `/presence_stats` | `{"topic"}` | `{"keys": n, "metas": n}` |
//! | `/topic_stats` | `{"topic"}` | `{"topic", "subscribers": n, "node"}` |
//! | `/topics` | `{"limit"?}` (default 100, at most 1000) | `{"topics": [{"topic", "subscribers"}], "total": n, "node"}` |
//!
//! Errors are answered with a status and `{"error": <what is wrong>}`: 400
//! for a body that is not JSON or lacks a field (or a payload that is not an
//! object), 401 without a valid key, 404 for presence when the API was given
//! no [`Presence`], 413 for a body over 1 MiB, 503 when the PubSub adapter
//! could not take a broadcast.
//!
//! ```
//! let endpoint = fawkes::Endpoint::local();
//! let api = fawkes::api::Api::new(&endpoint).key("a long random key");
//! let app = fawkes::axum::Router::new().merge(api.router());
//! # let _ = app;
//! ```

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::channel::BroadcastError;
use crate::{Endpoint, Presence};

/// The OpenAPI 3.1 document of the API (also in the repository as
/// `crates/fawkes/src/api/openapi.json`).
pub const OPENAPI: &str = include_str!("api/openapi.json");

/// The most commands one `/batch` request may carry.
pub const MAX_BATCH: usize = 1000;

/// The largest request body, in bytes (1 MiB).
pub const MAX_BODY: usize = 1 << 20;

/// Every route of the API, `(method, path)`, relative to where it is nested.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/publish"),
    ("post", "/batch"),
    ("post", "/disconnect"),
    ("post", "/presence"),
    ("post", "/presence_stats"),
    ("post", "/topic_stats"),
    ("post", "/topics"),
    ("get", "/openapi.json"),
];

/// The server API over an endpoint; [`Api::router`] serves it.
#[derive(Clone)]
pub struct Api {
    endpoint: Endpoint,
    presence: Option<Presence>,
    keys: Arc<Vec<String>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("presence", &self.presence.is_some()).field("keys", &self.keys.len()).finish()
    }
}

/// An error of the API: an HTTP status and what is wrong, answered as
/// `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    /// A 400 error.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl From<BroadcastError> for ApiError {
    fn from(e: BroadcastError) -> ApiError {
        let status = match e {
            BroadcastError::PayloadNotAnObject | BroadcastError::ReservedEvent(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError { status, message: e.to_string() }
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// `/publish`: a broadcast to every subscriber of `topic` on every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publish {
    /// The topic.
    pub topic: String,
    /// The event.
    pub event: String,
    /// The payload: a JSON object (default `{}`).
    #[serde(default = "empty_object")]
    pub payload: Value,
}

/// `/batch`: publishes, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    /// The publishes, at most [`MAX_BATCH`].
    pub commands: Vec<Publish>,
}

/// `/disconnect`: closes every socket with this id, on every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Disconnect {
    /// The socket id (what `Socket::id` returned, e.g. `user_socket:42`).
    pub socket_id: String,
}

/// A request naming a topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicRequest {
    /// The topic.
    pub topic: String,
}

/// `/topics`: the topics with the most subscribers on this node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Topics {
    /// How many topics to list (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Reads a JSON body; 400 with serde's message when it does not fit `T`.
///
/// # Errors
///
/// When `body` is not JSON or not of `T`'s shape.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))
}

fn ok() -> Value {
    json!({"status": "ok"})
}

impl Api {
    /// The API over `endpoint`, with no key yet (every request is refused
    /// until one is added) and no presence.
    pub fn new(endpoint: &Endpoint) -> Api {
        Api { endpoint: endpoint.clone(), presence: None, keys: Arc::new(Vec::new()) }
    }

    /// Accepts `Authorization: Bearer <key>`. Several keys may be accepted
    /// at once (to rotate them).
    pub fn key(mut self, key: impl Into<String>) -> Api {
        Arc::make_mut(&mut self.keys).push(key.into());
        self
    }

    /// Serves `/presence` and `/presence_stats` from `presence`.
    pub fn presence(mut self, presence: Presence) -> Api {
        self.presence = Some(presence);
        self
    }

    /// Whether `headers` carry one of the keys.
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        self.keys.iter().any(|k| crate::telemetry::bearer_matches(headers, k))
    }

    /// Broadcasts `p` (Phoenix's `Endpoint.broadcast`).
    ///
    /// # Errors
    ///
    /// 400 when the payload is not an object or the event is reserved; 503
    /// when the PubSub adapter failed.
    pub fn publish(&self, p: Publish) -> Result<Value, ApiError> {
        self.endpoint.broadcast(&p.topic, &p.event, p.payload)?;
        Ok(ok())
    }

    /// Publishes each command in order; each has its own result.
    ///
    /// # Errors
    ///
    /// 400 when there are more than [`MAX_BATCH`] commands.
    pub fn batch(&self, b: Batch) -> Result<Value, ApiError> {
        if b.commands.len() > MAX_BATCH {
            return Err(ApiError::bad_request(format!("at most {MAX_BATCH} commands in a batch")));
        }
        let results: Vec<Value> = b
            .commands
            .into_iter()
            .map(|p| match self.publish(p) {
                Ok(v) => v,
                Err(e) => json!({"error": e.message}),
            })
            .collect();
        Ok(json!({"status": "ok", "results": results}))
    }

    /// Closes every socket whose id is `d.socket_id`, on every node (the
    /// clients see their socket close and reconnect, as with Phoenix's
    /// `Endpoint.broadcast(id, "disconnect", %{})`).
    ///
    /// # Errors
    ///
    /// 503 when the PubSub adapter failed.
    pub fn disconnect(&self, d: Disconnect) -> Result<Value, ApiError> {
        self.endpoint.disconnect(&d.socket_id)?;
        Ok(ok())
    }

    fn presence_of(&self) -> Result<&Presence, ApiError> {
        self.presence
            .as_ref()
            .ok_or_else(|| ApiError { status: StatusCode::NOT_FOUND, message: "presence is not enabled".into() })
    }

    /// The topic's presences, as `presence_state` sends them.
    ///
    /// # Errors
    ///
    /// 404 when the API has no presence.
    pub async fn presence_list(&self, t: TopicRequest) -> Result<Value, ApiError> {
        let list = self.presence_of()?.list(&t.topic).await;
        Ok(json!({"presences": list}))
    }

    /// How many keys (users) and metas (connections) the topic's presence has.
    ///
    /// # Errors
    ///
    /// 404 when the API has no presence.
    pub async fn presence_stats(&self, t: TopicRequest) -> Result<Value, ApiError> {
        let list = self.presence_of()?.list(&t.topic).await;
        let metas: usize = list.values().map(|p| p.get("metas").and_then(Value::as_array).map_or(0, Vec::len)).sum();
        Ok(json!({"keys": list.len(), "metas": metas}))
    }

    /// The topic's subscriptions on this node.
    pub fn topic_stats(&self, t: TopicRequest) -> Value {
        let pubsub = self.endpoint.pubsub();
        json!({"topic": t.topic, "subscribers": pubsub.subscriber_count(&t.topic), "node": pubsub.node_name()})
    }

    /// The topics with the most subscriptions on this node.
    pub fn topics(&self, t: Topics) -> Value {
        let pubsub = self.endpoint.pubsub();
        let (top, total) = pubsub.top_topics(t.limit.unwrap_or(100).min(1000));
        let topics: Vec<Value> = top.into_iter().map(|(t, n)| json!({"topic": t, "subscribers": n})).collect();
        json!({"topics": topics, "total": total, "node": pubsub.node_name()})
    }

    /// The routes ([`ROUTES`]), to nest into the application's router
    /// (`Router::new().nest("/api", api.router())`).
    pub fn router(&self) -> Router {
        fn answer(r: Result<Value, ApiError>) -> Response {
            match r {
                Ok(v) => Json(v).into_response(),
                Err(e) => e.into_response(),
            }
        }
        macro_rules! route {
            ($api:expr, |$a:ident, $req:ident: $t:ty| $body:expr) => {{
                let api = $api.clone();
                post(move |headers: HeaderMap, bytes: Result<axum::body::Bytes, BytesRejection>| {
                    let $a = api.clone();
                    async move {
                        if !$a.authorized(&headers) {
                            return crate::telemetry::unauthorized();
                        }
                        let bytes = match bytes {
                            Ok(b) => b,
                            Err(e) => return ApiError { status: e.status(), message: e.body_text() }.into_response(),
                        };
                        match parse::<$t>(&bytes) {
                            Ok($req) => answer($body),
                            Err(e) => e.into_response(),
                        }
                    }
                })
            }};
        }
        Router::new()
            .route("/publish", route!(self, |a, p: Publish| a.publish(p)))
            .route("/batch", route!(self, |a, b: Batch| a.batch(b)))
            .route("/disconnect", route!(self, |a, d: Disconnect| a.disconnect(d)))
            .route("/presence", route!(self, |a, t: TopicRequest| a.presence_list(t).await))
            .route("/presence_stats", route!(self, |a, t: TopicRequest| a.presence_stats(t).await))
            .route("/topic_stats", route!(self, |a, t: TopicRequest| Ok(a.topic_stats(t))))
            .route("/topics", route!(self, |a, t: Topics| Ok(a.topics(t))))
            .route("/openapi.json", get(|| async { ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI) }))
            .layer(DefaultBodyLimit::max(MAX_BODY))
    }
}
