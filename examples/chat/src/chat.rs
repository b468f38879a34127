//! The chat context: rooms, memberships and messages.

use serde::Serialize;
use sqlx::AnyPool;

use crate::db::now_iso;

/// A room.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Room {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
}

/// A stored message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// Id.
    pub id: i64,
    /// Text.
    pub body: String,
    /// Author.
    pub user_id: i64,
    /// When it was stored (ISO 8601, UTC).
    pub inserted_at: String,
}

/// Longest message, in characters.
pub const MAX_BODY: usize = 10_000;

/// Why a message body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not a string.
    #[error("must be a string")]
    NotAString,
    /// Empty or only whitespace.
    #[error("can't be blank")]
    Blank,
    /// Over [`MAX_BODY`] characters.
    #[error("should be at most 10000 characters")]
    TooLong,
}

/// Checks a message body.
///
/// # Errors
///
/// See [`BodyError`].
pub fn validate_body(v: Option<&serde_json::Value>) -> Result<String, BodyError> {
    let s = v.and_then(serde_json::Value::as_str).ok_or(BodyError::NotAString)?;
    if s.trim().is_empty() {
        return Err(BodyError::Blank);
    }
    if s.chars().count() > MAX_BODY {
        return Err(BodyError::TooLong);
    }
    Ok(s.to_owned())
}

/// The chat context.
#[derive(Clone, Debug)]
pub struct Chat {
    db: AnyPool,
}

impl Chat {
    /// The context over a pool.
    pub fn new(db: AnyPool) -> Chat {
        Chat { db }
    }

    /// Every room.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn rooms(&self) -> Result<Vec<Room>, sqlx::Error> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, name FROM rooms ORDER BY id").fetch_all(&self.db).await?;
        Ok(rows.into_iter().map(|(id, name)| Room { id, name }).collect())
    }

    /// One room.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn room(&self, id: i64) -> Result<Option<Room>, sqlx::Error> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT id, name FROM rooms WHERE id = $1").bind(id).fetch_optional(&self.db).await?;
        Ok(row.map(|(id, name)| Room { id, name }))
    }

    /// Creates a room; its creator becomes a member.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn create_room(&self, name: &str, creator: i64) -> Result<Room, sqlx::Error> {
        let (id,): (i64,) = sqlx::query_as("INSERT INTO rooms (name, inserted_at) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(now_iso())
            .fetch_one(&self.db)
            .await?;
        self.add_member(id, creator).await?;
        Ok(Room { id, name: name.to_owned() })
    }

    /// Makes `user` a member of `room` (idempotent).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn add_member(&self, room: i64, user: i64) -> Result<(), sqlx::Error> {
        // one statement: two concurrent joins cannot both insert
        sqlx::query("INSERT INTO memberships (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(room)
            .bind(user)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Whether `user` is a member of `room`.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn is_member(&self, room: i64, user: i64) -> Result<bool, sqlx::Error> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT user_id FROM memberships WHERE room_id = $1 AND user_id = $2")
            .bind(room)
            .bind(user)
            .fetch_optional(&self.db)
            .await?;
        Ok(row.is_some())
    }

    /// Stores a message.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn post(&self, room: i64, user: i64, body: &str) -> Result<ChatMessage, sqlx::Error> {
        let at = now_iso();
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO messages (room_id, user_id, body, inserted_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(room)
        .bind(user)
        .bind(body)
        .bind(&at)
        .fetch_one(&self.db)
        .await?;
        Ok(ChatMessage { id, body: body.to_owned(), user_id: user, inserted_at: at })
    }

    /// Up to `limit` messages before message `before` (or the latest),
    /// oldest first.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn history(&self, room: i64, before: Option<i64>, limit: i64) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let rows: Vec<(i64, String, i64, String)> = sqlx::query_as("SELECT id, body, user_id, inserted_at FROM messages WHERE room_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3")
            .bind(room)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.db)
            .await?;
        let mut out: Vec<ChatMessage> = rows
            .into_iter()
            .map(|(id, body, user_id, inserted_at)| ChatMessage { id, body, user_id, inserted_at })
            .collect();
        out.reverse();
        Ok(out)
    }
}
