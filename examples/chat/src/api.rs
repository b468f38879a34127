//! The JSON API under `/api/v1`. Handlers stay thin: they check input and
//! call the contexts. Every error has one shape:
//! `{"error": {"status": <code>, "message": <text>, "fields": {...}}}`.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::accounts::User;
use crate::chat::validate_body;
use crate::App;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    fields: Option<Map<String, Value>>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), fields: None }
    }

    fn invalid(field: &str, why: impl Into<String>) -> ApiError {
        let mut fields = Map::new();
        fields.insert(field.to_owned(), Value::String(why.into()));
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "invalid parameters".into(),
            fields: Some(fields),
        }
    }

    fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
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
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// The signed-in user, from `Authorization: Bearer <token>`.
#[derive(Debug)]
pub struct Auth(pub User);

impl FromRequestParts<App> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Auth, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let id =
            app.accounts.verify(token).map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, format!("token {e}")))?;
        let user =
            app.accounts.get(id).await?.ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown user"))?;
        Ok(Auth(user))
    }
}

/// A JSON object body, or the API's error.
fn body(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "the body must be a JSON object")),
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}"))),
    }
}

fn name_field(b: &Map<String, Value>, max: usize) -> Result<String, ApiError> {
    match b.get("name").and_then(Value::as_str).map(str::trim) {
        None => Err(ApiError::invalid("name", "must be a string")),
        Some("") => Err(ApiError::invalid("name", "can't be blank")),
        Some(n) if n.chars().count() > max => {
            Err(ApiError::invalid("name", format!("should be at most {max} characters")))
        }
        Some(n) => Ok(n.to_owned()),
    }
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

async fn sign_in(State(app): State<App>, bytes: axum::body::Bytes) -> ApiResult {
    let b = body(&bytes)?;
    let user = app.accounts.sign_in(&name_field(&b, 40)?).await?;
    let token =
        app.accounts.token_for(&user).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(created(json!({"token": token, "user": user})))
}

async fn list_rooms(State(app): State<App>, _: Auth) -> ApiResult {
    Ok(Json(json!({"data": app.chat.rooms().await?})).into_response())
}

async fn create_room(State(app): State<App>, Auth(user): Auth, bytes: axum::body::Bytes) -> ApiResult {
    let name = name_field(&body(&bytes)?, 80)?;
    Ok(created(json!({"data": app.chat.create_room(&name, user.id).await?})))
}

async fn join_room(State(app): State<App>, Auth(user): Auth, Path(id): Path<i64>) -> ApiResult {
    app.chat.room(id).await?.ok_or_else(|| ApiError::not_found("room"))?;
    app.chat.add_member(id, user.id).await?;
    Ok(created(json!({"data": {"room_id": id, "user_id": user.id}})))
}

#[derive(Deserialize)]
struct Page {
    before: Option<String>,
    limit: Option<String>,
}

async fn messages(
    State(app): State<App>,
    Auth(user): Auth,
    Path(id): Path<i64>,
    Query(page): Query<Page>,
) -> ApiResult {
    app.chat.room(id).await?.ok_or_else(|| ApiError::not_found("room"))?;
    if !app.chat.is_member(id, user.id).await? {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "not a member of this room"));
    }
    let before = page
        .before
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(str::parse::<i64>)
        .transpose()
        .map_err(|_| ApiError::invalid("before", "must be a message id"))?;
    let limit = match page.limit.as_deref().filter(|s| !s.is_empty()).map(str::parse::<i64>).transpose() {
        Ok(Some(l)) if (1..=100).contains(&l) => l,
        Ok(None) => 50,
        _ => return Err(ApiError::invalid("limit", "must be between 1 and 100")),
    };
    Ok(Json(json!({"data": app.chat.history(id, before, limit).await?})).into_response())
}

async fn notify(State(app): State<App>, Auth(user): Auth, bytes: axum::body::Bytes) -> ApiResult {
    let b = body(&bytes)?;
    let to = id_field(&b, "user_id")?;
    let message = match b.get("message").and_then(Value::as_str) {
        Some(m) if !m.trim().is_empty() => m.to_owned(),
        _ => return Err(ApiError::invalid("message", "can't be blank")),
    };
    app.accounts.get(to).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let payload = json!({"message": message, "from": {"id": user.id, "name": user.name}});
    app.endpoint
        .broadcast(&format!("notifications:{to}"), "new_notification", payload.clone())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(created(json!({"data": payload})))
}

async fn block(State(app): State<App>, Auth(user): Auth, bytes: axum::body::Bytes) -> ApiResult {
    let blocked = id_field(&body(&bytes)?, "user_id")?;
    if blocked == user.id {
        return Err(ApiError::invalid("user_id", "can't block yourself"));
    }
    app.accounts.get(blocked).await?.ok_or_else(|| ApiError::not_found("user"))?;
    app.accounts.block(user.id, blocked).await?;
    blocks_changed(&app, user.id);
    Ok(created(json!({"data": {"user_id": blocked}})))
}

async fn unblock(State(app): State<App>, Auth(user): Auth, Path(blocked): Path<i64>) -> ApiResult {
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
        .route("/api/v1/sessions", post(sign_in))
        .route("/api/v1/rooms", get(list_rooms).post(create_room))
        .route("/api/v1/rooms/{id}/members", post(join_room))
        .route("/api/v1/rooms/{id}/messages", get(messages))
        .route("/api/v1/notifications", post(notify))
        .route("/api/v1/blocks", post(block))
        .route("/api/v1/blocks/{user_id}", delete(unblock))
        .route("/api/{*rest}", axum::routing::any(not_found))
}

/// Exposed for the channel: the same validation as the API's.
pub fn message_body(payload: &Value) -> Result<String, String> {
    validate_body(payload.get("body")).map_err(|e| e.to_string())
}
