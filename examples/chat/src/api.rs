//! The JSON API under `/api/v1`. Handlers stay thin: they check input and
//! call the contexts. Every error has one shape:
//! `{"error": {"status": <code>, "message": <text>, "fields": {...}}}`
//! (`fields` when parameters are invalid, `retry_after` in ms on 429). That
//! holds for the errors of axum itself too: path, query and body
//! rejections go through [`ApiPath`], [`ApiQuery`] and [`JsonObject`], and
//! whatever else answers an error without a JSON body under `/api` (a
//! method not allowed, a body over the limit) is put in the shape by a
//! layer, its headers (`Allow`) kept.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;

use crate::accounts::{AccountError, User};
use crate::chat::{validate_body, validate_client_id, ChangeError, PostError, RoomError, MAX_BODY};
use crate::text::{self, Name, TextError};
use crate::App;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    fields: Option<Map<String, Value>>,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), fields: None, retry_after: None }
    }

    fn invalid(field: &str, why: impl Into<String>) -> ApiError {
        ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "invalid parameters", field, why)
    }

    fn field(status: StatusCode, message: &str, field: &str, why: impl Into<String>) -> ApiError {
        let mut fields = Map::new();
        fields.insert(field.to_owned(), Value::String(why.into()));
        ApiError { fields: Some(fields), ..ApiError::new(status, message) }
    }

    fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    fn rate_limited(wait: Duration) -> ApiError {
        ApiError { retry_after: Some(wait), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate limited") }
    }

    /// One of axum's rejections, with its status and text; a body that did
    /// not arrive in time is a 408.
    fn rejected(status: StatusCode, text: String, error: &(dyn std::error::Error + 'static)) -> ApiError {
        if fawkes::serve::is_body_timeout(error) {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time");
        }
        ApiError::new(status, text)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        tracing::error!(error = %e, "database error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"status": self.status.as_u16(), "message": self.message});
        if let Some(f) = self.fields {
            error["fields"] = Value::Object(f);
        }
        let mut headers = HeaderMap::new();
        if let Some(wait) = self.retry_after {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            error["retry_after"] = json!(ms);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 7235: a 401 names the scheme it wants
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        (self.status, headers, Json(json!({ "error": error }))).into_response()
    }
}

/// Path parameters, or the API's error (400 for a parameter that does not
/// parse).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(ApiPath(t)),
            Err(r) => Err(ApiError::rejected(r.status(), r.body_text(), &r)),
        }
    }
}

/// The query string, or the API's error (400 for one that does not parse,
/// a repeated key included).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(t)) => Ok(ApiQuery(t)),
            Err(r) => Err(ApiError::rejected(r.status(), r.body_text(), &r)),
        }
    }
}

/// A JSON object body, or the API's error: 415 without
/// `Content-Type: application/json`, 400 for invalid JSON, 413 over the
/// route's body limit, 408 when it does not arrive in time, 422 for JSON
/// that is not an object.
#[derive(Debug)]
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<Value>::from_request(req, state).await {
            Ok(Json(Value::Object(m))) => Ok(JsonObject(m)),
            Ok(_) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the body must be a JSON object")),
            Err(r) => Err(ApiError::rejected(r.status(), r.body_text(), &r)),
        }
    }
}

/// Puts an error answered without a JSON body (axum's own 405 and 413,
/// for instance) in the API's shape, with its text as the message.
async fn error_shape(res: Response) -> Response {
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message =
        if text.is_empty() { status.canonical_reason().unwrap_or("error").to_ascii_lowercase() } else { text };
    let mut shaped = ApiError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().append(name.clone(), value.clone());
        }
    }
    shaped
}

type ApiResult = Result<Response, ApiError>;

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> ApiError {
        match e {
            AccountError::Database(e) => e.into(),
            AccountError::Unauthorized(why) => ApiError::new(StatusCode::UNAUTHORIZED, why),
            AccountError::NameTaken => ApiError::invalid("name", e.to_string()),
            e => {
                tracing::error!(error = %e, "accounts error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

/// The signed-in user and the session's id, from
/// `Authorization: Bearer <token>`: 401 when the token is missing, invalid,
/// expired or its session ended.
#[derive(Debug)]
pub struct Auth(pub User, pub String);

impl FromRequestParts<App> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Auth, ApiError> {
        let token = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
        let (user, session) = app.accounts.session(token).await?;
        Ok(Auth(user, session))
    }
}

/// The client's address, when the server gives it (`fawkes::serve` does).
fn client_address(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// The client's address: the peer of the connection when the server gives
/// it (`fawkes::serve` does), else the unspecified address (all such
/// clients then share the per-address limits).
#[derive(Debug)]
pub struct ClientAddress(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(ClientAddress(client_address(parts)))
    }
}

/// The token of `Authorization: Bearer <token>`; the scheme's case does
/// not matter (RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn name_field(b: &Map<String, Value>, max: usize) -> Result<Name, ApiError> {
    text::name(b.get("name"), max).map_err(|e| ApiError::invalid("name", e.to_string()))
}

/// Longest user name, in characters.
pub const MAX_USER_NAME: usize = 40;
/// Longest room name, in characters.
pub const MAX_ROOM_NAME: usize = 80;
/// Shortest password, in characters.
pub const MIN_PASSWORD: usize = 8;
/// Longest password, in characters (what is hashed stays bounded).
pub const MAX_PASSWORD: usize = 256;

fn password_field(b: &Map<String, Value>) -> Result<String, ApiError> {
    let p =
        text::text(b.get("password"), MAX_PASSWORD, false).map_err(|e| ApiError::invalid("password", e.to_string()))?;
    if p.chars().count() < MIN_PASSWORD {
        return Err(ApiError::invalid("password", TextError::TooShort(MIN_PASSWORD).to_string()));
    }
    Ok(p)
}

fn id_field(b: &Map<String, Value>, field: &str) -> Result<i64, ApiError> {
    match b.get(field) {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| ApiError::invalid(field, "must be an integer")),
        Some(Value::String(s)) => s.parse().map_err(|_| ApiError::invalid(field, "must be an integer")),
        _ => Err(ApiError::invalid(field, "is required")),
    }
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// Sign-in attempts per name: a burst of 5, then one every 12 s (5 a
/// minute); per client address: a burst of 20, then one every 3 s.
const NAME_BURST: f64 = 5.0;
const NAME_RATE: f64 = 1.0 / 12.0;
const ADDRESS_BURST: f64 = 20.0;
const ADDRESS_RATE: f64 = 1.0 / 3.0;

/// A new session of `user`: 201 `{"token", "expires_at", "user"}`.
async fn session_for(app: &App, user: User) -> ApiResult {
    let session = app.accounts.start_session(&user, app.session_max_age).await?;
    Ok(created(json!({"token": session.token, "expires_at": session.expires_at, "user": user})))
}

/// Registers: `{"name", "password"}`; 201 with a session as sign-in's;
/// 422 when the name is taken (compared after NFKC and case folding) or a
/// field is invalid; 429 past the per-address rate.
async fn register(State(app): State<App>, ClientAddress(ip): ClientAddress, JsonObject(b): JsonObject) -> ApiResult {
    let name = name_field(&b, MAX_USER_NAME)?;
    let password = password_field(&b)?;
    app.address_buckets.take(ip, ADDRESS_RATE, ADDRESS_BURST).map_err(ApiError::rate_limited)?;
    let user = app.accounts.register(&name, &password).await?;
    session_for(&app, user).await
}

/// Signs in: `{"name", "password"}`; 201 `{"token", "expires_at",
/// "user"}`; 401 for a wrong name or password (the same answer for both);
/// 429 past the per-name or per-address rate. Without a password, and only
/// when the server allows it ([`crate::Config::dev_sign_in`]), by name
/// alone.
async fn sign_in(State(app): State<App>, ClientAddress(ip): ClientAddress, JsonObject(b): JsonObject) -> ApiResult {
    let name = name_field(&b, MAX_USER_NAME)?;
    if app.dev_sign_in && !b.contains_key("password") {
        let user = app.accounts.sign_in_by_name(&name).await?;
        return session_for(&app, user).await;
    }
    let password = password_field(&b)?;
    app.address_buckets.take(ip, ADDRESS_RATE, ADDRESS_BURST).map_err(ApiError::rate_limited)?;
    app.name_buckets.take(name.key.clone(), NAME_RATE, NAME_BURST).map_err(ApiError::rate_limited)?;
    match app.accounts.authenticate(&name, &password).await? {
        Some(user) => session_for(&app, user).await,
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid name or password")),
    }
}

/// Signs out: the session of the bearer token ends, and its sockets are
/// disconnected. 204.
async fn sign_out(State(app): State<App>, Auth(_, session): Auth) -> ApiResult {
    app.accounts.end_session(&session).await?;
    if let Err(e) = app.endpoint.broadcast(&crate::socket::session_socket_id(&session), "disconnect", json!({})) {
        tracing::error!(error = %e, "the sockets of an ended session were not disconnected");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

impl From<RoomError> for ApiError {
    fn from(e: RoomError) -> ApiError {
        match e {
            RoomError::NameTaken => ApiError::invalid("name", e.to_string()),
            RoomError::NotFound => ApiError::not_found("room"),
            RoomError::NotOwner => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            RoomError::Database(e) => e.into(),
        }
    }
}

#[derive(Deserialize)]
struct RoomQuery {
    q: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// A page of the rooms, by id: `?q=` (part of the name, compared as names
/// are), `?after=` (the `next` of the previous page), `?limit=` (1 to 100,
/// 50). `{"data": [...], "next": <id or null>}`.
async fn list_rooms(State(app): State<App>, _: Auth, ApiQuery(page): ApiQuery<RoomQuery>) -> ApiResult {
    let limit = limit_param(page.limit.as_deref())?;
    let after = message_id_param(page.after.as_deref(), "after")?.unwrap_or(0);
    let query = match page.q.as_deref().filter(|q| !q.trim().is_empty()) {
        None => None,
        Some(q) => Some(
            text::name(Some(&Value::String(q.to_owned())), MAX_ROOM_NAME)
                .map_err(|e| ApiError::invalid("q", e.to_string()))?
                .key,
        ),
    };
    let rooms = app.chat.rooms(query.as_deref(), after, limit).await?;
    let next = if rooms.len() as i64 == limit { rooms.last().map(|r| r.id) } else { None };
    Ok(Json(json!({"data": rooms, "next": next})).into_response())
}

/// The rooms and direct conversations one is in, with unread counts.
async fn my_rooms(State(app): State<App>, Auth(user, _): Auth) -> ApiResult {
    Ok(Json(json!({"data": app.chat.my_rooms(user.id).await?})).into_response())
}

/// Creates a room: `{"name"}`, unique after normalisation (422 when taken).
async fn create_room(State(app): State<App>, Auth(user, _): Auth, JsonObject(b): JsonObject) -> ApiResult {
    let name = name_field(&b, MAX_ROOM_NAME)?;
    Ok(created(json!({"data": app.chat.create_room(&name, user.id).await?})))
}

/// Deletes a room: its owner only (403 otherwise); 204; the room's pages
/// are told (`room_deleted`).
async fn delete_room(State(app): State<App>, Auth(user, _): Auth, ApiPath(id): ApiPath<i64>) -> ApiResult {
    app.chat.delete_room(id, user.id).await?;
    if let Err(e) = app.endpoint.broadcast(&format!("room:{id}"), "room_deleted", json!({"room_id": id})) {
        tracing::error!(error = %e, room = id, "a room's deletion was not broadcast");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Leaves a room: 204.
async fn leave_room(State(app): State<App>, Auth(user, _): Auth, ApiPath(id): ApiPath<i64>) -> ApiResult {
    app.chat.room(id).await?.ok_or_else(|| ApiError::not_found("room"))?;
    app.chat.leave(id, user.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Moves one's read position: `{"message_id"}`; 204.
async fn mark_read(
    State(app): State<App>,
    Auth(user, _): Auth,
    ApiPath(id): ApiPath<i64>,
    JsonObject(b): JsonObject,
) -> ApiResult {
    member_of(&app, id, &user).await?;
    let message = id_field(&b, "message_id")?;
    app.chat.mark_read(id, user.id, message).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The direct conversation with `{"user_id"}`: 201 the first time, 200
/// after; 403 when either blocked the other.
async fn direct(State(app): State<App>, Auth(user, _): Auth, JsonObject(b): JsonObject) -> ApiResult {
    let other = id_field(&b, "user_id")?;
    if other == user.id {
        return Err(ApiError::invalid("user_id", "can't be yourself"));
    }
    let them = app.accounts.get(other).await?.ok_or_else(|| ApiError::not_found("user"))?;
    if app.accounts.blocked_by(other).await?.contains(&user.id)
        || app.accounts.blocked_by(user.id).await?.contains(&other)
    {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "blocked"));
    }
    let (room, new) = app.chat.direct(user.id, other, &them.name).await?;
    if new {
        Ok(created(json!({ "data": room })))
    } else {
        Ok(Json(json!({ "data": room })).into_response())
    }
}

/// Joins a room; a direct conversation only its two people are in (403).
async fn join_room(State(app): State<App>, Auth(user, _): Auth, ApiPath(id): ApiPath<i64>) -> ApiResult {
    let room = app.chat.room(id).await?.ok_or_else(|| ApiError::not_found("room"))?;
    if room.kind == "direct" && !app.chat.is_member(id, user.id).await? {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "a direct conversation of others"));
    }
    app.chat.add_member(id, user.id).await?;
    Ok(created(json!({"data": {"room_id": id, "user_id": user.id}})))
}

#[derive(Deserialize)]
struct Page {
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// A message id in the query string, when given.
fn message_id_param(value: Option<&str>, field: &str) -> Result<Option<i64>, ApiError> {
    value
        .filter(|s| !s.is_empty())
        .map(str::parse::<i64>)
        .transpose()
        .map_err(|_| ApiError::invalid(field, "must be a message id"))
}

/// `?limit=`: 1 to 100, 50 when absent.
fn limit_param(value: Option<&str>) -> Result<i64, ApiError> {
    match value.filter(|s| !s.is_empty()).map(str::parse::<i64>).transpose() {
        Ok(Some(l)) if (1..=100).contains(&l) => Ok(l),
        Ok(None) => Ok(50),
        _ => Err(ApiError::invalid("limit", "must be between 1 and 100")),
    }
}

/// Fails unless `room` exists and `user` is one of its members.
async fn member_of(app: &App, room: i64, user: &User) -> Result<(), ApiError> {
    app.chat.room(room).await?.ok_or_else(|| ApiError::not_found("room"))?;
    if !app.chat.is_member(room, user.id).await? {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "not a member of this room"));
    }
    Ok(())
}

/// A page of a room's messages, oldest first: the latest (before
/// `before`, when given) or, with `after`, the first after that message
/// (a page shorter than `limit` is the last).
async fn messages(
    State(app): State<App>,
    Auth(user, _): Auth,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult {
    member_of(&app, id, &user).await?;
    let before = message_id_param(page.before.as_deref(), "before")?;
    let after = message_id_param(page.after.as_deref(), "after")?;
    let limit = limit_param(page.limit.as_deref())?;
    Ok(Json(json!({"data": app.chat.history(id, user.id, before, after, limit).await?})).into_response())
}

/// Sends a message: `{"body": ..., "client_id": ...}` (`client_id`
/// optional). Stored and broadcast to the room as the channel's
/// `new_message` is: 201 with the message. A send retried with the same
/// `client_id` answers 200 with the message first stored, and neither
/// stores nor broadcasts it again; 409 when the client id was used for
/// another message.
async fn post_message(
    State(app): State<App>,
    Auth(user, _): Auth,
    ApiPath(id): ApiPath<i64>,
    JsonObject(b): JsonObject,
) -> ApiResult {
    member_of(&app, id, &user).await?;
    app.allow_message(user.id).map_err(ApiError::rate_limited)?;
    let body = validate_body(b.get("body")).map_err(|e| ApiError::invalid("body", e.to_string()))?;
    let client_id =
        validate_client_id(b.get("client_id")).map_err(|e| ApiError::invalid("client_id", e.to_string()))?;
    let posted = match app.chat.post(id, &user, &body, client_id.as_deref()).await {
        Ok(posted) => posted,
        Err(PostError::ClientIdTaken) => {
            let why = PostError::ClientIdTaken.to_string();
            return Err(ApiError::field(StatusCode::CONFLICT, "client_id already used", "client_id", why));
        }
        Err(PostError::Database(e)) => return Err(e.into()),
    };
    let message = posted.message;
    if !posted.created {
        return Ok(Json(json!({ "data": message })).into_response());
    }
    // stored: it goes out as the channel's sends do
    app.announce(id, &user, &message).await;
    Ok(created(json!({ "data": message })))
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> ApiError {
        match e {
            ChangeError::NotFound => ApiError::not_found("message"),
            ChangeError::NotYours => ApiError::new(StatusCode::FORBIDDEN, "not your message"),
            ChangeError::Database(e) => e.into(),
        }
    }
}

/// Edits one's message: `{"body"}`; 200 with the message, broadcast to the
/// room as `message_edited`; 403 for someone else's, 404 for none (or a
/// deleted one).
async fn edit_message(
    State(app): State<App>,
    Auth(user, _): Auth,
    ApiPath((room, id)): ApiPath<(i64, i64)>,
    JsonObject(b): JsonObject,
) -> ApiResult {
    member_of(&app, room, &user).await?;
    let body = validate_body(b.get("body")).map_err(|e| ApiError::invalid("body", e.to_string()))?;
    let message = app.chat.edit(room, user.id, id, &body).await?;
    broadcast_change(&app, room, "message_edited", &message);
    Ok(Json(json!({ "data": message })).into_response())
}

/// Deletes one's message: 204, broadcast to the room as `message_deleted`;
/// 403 for someone else's, 404 for none.
async fn delete_message(
    State(app): State<App>,
    Auth(user, _): Auth,
    ApiPath((room, id)): ApiPath<(i64, i64)>,
) -> ApiResult {
    member_of(&app, room, &user).await?;
    let message = app.chat.delete(room, user.id, id).await?;
    broadcast_change(&app, room, "message_deleted", &message);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Broadcasts an edit or a deletion to the room (the message as it is now).
pub(crate) fn broadcast_change(app: &App, room: i64, event: &str, message: &crate::chat::ChatMessage) {
    if let Err(e) = app.endpoint.broadcast(&format!("room:{room}"), event, json!(message)) {
        tracing::error!(error = %e, room, "a change of a message was not broadcast");
    }
}

/// A page of one's notifications (`?limit=`, 50 by default, at most 100),
/// oldest first: what a reload shows.
async fn list_notifications(State(app): State<App>, Auth(user, _): Auth, ApiQuery(page): ApiQuery<Page>) -> ApiResult {
    let limit = limit_param(page.limit.as_deref())?;
    Ok(Json(json!({"data": app.chat.notifications(user.id, limit).await?})).into_response())
}

/// The notification rate per sender: bursts of 20, then 10 a second.
const NOTIFICATION_BURST: f64 = 20.0;
const NOTIFICATION_RATE: f64 = 10.0;

/// Largest notification request body, in bytes: a message as long as a
/// chat message may be ([`MAX_BODY`] characters, up to 4 bytes each in
/// UTF-8) and room for the rest of the object.
pub const NOTIFICATION_MAX_BYTES: usize = MAX_BODY * 4 + 1024;

async fn notify(State(app): State<App>, Auth(user, _): Auth, JsonObject(b): JsonObject) -> ApiResult {
    app.notification_buckets.take(user.id, NOTIFICATION_RATE, NOTIFICATION_BURST).map_err(ApiError::rate_limited)?;
    let to = id_field(&b, "user_id")?;
    // the same bounds as a chat message's; too long is too large
    let message = validate_body(b.get("message")).map_err(|e| match e {
        TextError::TooLong(_) => {
            ApiError::field(StatusCode::PAYLOAD_TOO_LARGE, "message too large", "message", e.to_string())
        }
        e => ApiError::invalid("message", e.to_string()),
    })?;
    app.accounts.get(to).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let mut payload = Map::new();
    payload.insert("kind".into(), "message".into());
    payload.insert("message".into(), message.into());
    // one who blocked the sender gets nothing, and the sender is not told
    let sent = app.notify(to, &user, payload.clone()).await?;
    let shown = sent.unwrap_or_else(|| {
        payload.insert("from".into(), json!({"id": user.id, "name": user.name}));
        Value::Object(payload)
    });
    Ok(created(json!({ "data": shown })))
}

async fn block(State(app): State<App>, Auth(user, _): Auth, JsonObject(b): JsonObject) -> ApiResult {
    let blocked = id_field(&b, "user_id")?;
    if blocked == user.id {
        return Err(ApiError::invalid("user_id", "can't block yourself"));
    }
    app.accounts.get(blocked).await?.ok_or_else(|| ApiError::not_found("user"))?;
    app.accounts.block(user.id, blocked).await?;
    blocks_changed(&app, user.id);
    Ok(created(json!({"data": {"user_id": blocked}})))
}

/// Who one blocked: `[{"user_id", "name"}]`.
async fn list_blocks(State(app): State<App>, Auth(user, _): Auth) -> ApiResult {
    let ids: Vec<i64> = app.accounts.blocked_by(user.id).await?.iter().copied().collect();
    let names = app.accounts.names(&ids).await?;
    let mut data: Vec<Value> = names.into_iter().map(|(id, name)| json!({"user_id": id, "name": name})).collect();
    data.sort_by_key(|v| v["user_id"].as_i64());
    Ok(Json(json!({ "data": data })).into_response())
}

async fn unblock(State(app): State<App>, Auth(user, _): Auth, ApiPath(blocked): ApiPath<i64>) -> ApiResult {
    app.accounts.unblock(user.id, blocked).await?;
    blocks_changed(&app, user.id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Tells every node that `user`'s block list changed (their caches forget it).
fn blocks_changed(app: &App, user: i64) {
    let payload = json!({"user_id": user});
    if let Err(e) = app.endpoint.broadcast(crate::BLOCKS_TOPIC, "changed", payload) {
        tracing::error!(error = %e, "block list change not announced to the other nodes");
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// The `/api/v1` routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/users", post(register))
        .route("/api/v1/sessions", post(sign_in).delete(sign_out))
        .route("/api/v1/rooms", get(list_rooms).post(create_room))
        .route("/api/v1/rooms/{id}", delete(delete_room))
        .route("/api/v1/rooms/{id}/members", post(join_room))
        .route("/api/v1/rooms/{id}/leave", post(leave_room))
        .route("/api/v1/rooms/{id}/read", axum::routing::put(mark_read))
        .route("/api/v1/me/rooms", get(my_rooms))
        .route("/api/v1/direct", post(direct))
        .route("/api/v1/rooms/{id}/messages", get(messages).post(post_message))
        .route("/api/v1/rooms/{id}/messages/{message_id}", axum::routing::patch(edit_message).delete(delete_message))
        .route(
            "/api/v1/notifications",
            get(list_notifications).post(notify).layer(DefaultBodyLimit::max(NOTIFICATION_MAX_BYTES)),
        )
        .route("/api/v1/blocks", get(list_blocks).post(block))
        .route("/api/v1/blocks/{user_id}", delete(unblock))
        .route("/api", axum::routing::any(not_found))
        .route("/api/", axum::routing::any(not_found))
        .route("/api/{*rest}", axum::routing::any(not_found))
        .layer(axum::middleware::map_response(error_shape))
}

/// Exposed for the channel: the same validation as the API's.
pub fn message_body(payload: &Value) -> Result<String, String> {
    validate_body(payload.get("body")).map_err(|e| e.to_string())
}

/// Exposed for the channel: the client message id, checked as the API
/// checks it.
pub fn message_client_id(payload: &Value) -> Result<Option<String>, String> {
    validate_client_id(payload.get("client_id")).map_err(|e| e.to_string())
}
