//! The chat context: rooms, memberships and messages.

use serde::Serialize;
use sqlx::AnyPool;

use crate::accounts::User;
use crate::db::now_iso;
use crate::text::TextError;

/// A room.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Room {
    /// Id.
    pub id: i64,
    /// Name; for a direct conversation, the other person's name (as the
    /// reader sees it).
    pub name: String,
    /// `room`, or `direct` for a conversation between two people.
    pub kind: String,
    /// Who created it (and may delete it); `None` for direct conversations
    /// and rooms made before owners were recorded.
    pub owner_id: Option<i64>,
}

/// A room one is a member of, with how many messages one has not read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MyRoom {
    /// The room.
    #[serde(flatten)]
    pub room: Room,
    /// Messages after one's read position, not one's own, not deleted, not
    /// from whom one blocked.
    pub unread: i64,
    /// The last message one read (0: none).
    pub last_read_id: i64,
}

/// Why a room was not created or changed.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// Another room has a name with the same key.
    #[error("has already been taken")]
    NameTaken,
    /// No such room.
    #[error("room not found")]
    NotFound,
    /// Only its owner may do that.
    #[error("only the room's owner may delete it")]
    NotOwner,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The key of the direct conversation of two users: a leading space, which
/// no room name's key has (names are trimmed), so the two never collide.
fn direct_key(a: i64, b: i64) -> String {
    format!(" direct:{}:{}", a.min(b), a.max(b))
}

type RoomRow = (i64, String, String, Option<i64>);

/// A room row, one's read position, unread count, and the other person's
/// name (direct conversations).
type MyRoomRow = (i64, String, String, Option<i64>, i64, i64, Option<String>);

fn room_of((id, name, kind, owner_id): RoomRow) -> Room {
    Room { id, name, kind, owner_id }
}

/// `s` for a `LIKE` pattern: `\`, `%` and `_` escaped (with `ESCAPE '\'`).
fn like_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '\\' | '%' | '_' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// A stored message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// Id.
    pub id: i64,
    /// Text; empty once deleted.
    pub body: String,
    /// Author.
    pub user_id: i64,
    /// The author's name, from the users table (shown even when the author
    /// is no longer in the room).
    pub user_name: String,
    /// When it was stored (ISO 8601, UTC).
    pub inserted_at: String,
    /// The id its author's client gave it, when it gave one: a send retried
    /// with the same id is stored once (see [`Chat::post`]).
    pub client_id: Option<String>,
    /// When its author last edited it, if ever.
    pub edited_at: Option<String>,
    /// Whether its author deleted it (it stays in the history as such).
    pub deleted: bool,
}

/// Why an edit or a deletion was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No such message in this room (or already deleted).
    #[error("message not found")]
    NotFound,
    /// The message is someone else's.
    #[error("not your message")]
    NotYours,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The columns of a message row, in [`MESSAGE_COLUMNS`]' order.
type MessageRow = (i64, String, i64, String, String, Option<String>, Option<String>, Option<String>);

/// The columns read for a [`ChatMessage`], `m` being messages and `u` users.
const MESSAGE_COLUMNS: &str = "m.id, m.body, m.user_id, u.name, m.inserted_at, m.client_id, m.edited_at, m.deleted_at";

fn message(row: MessageRow) -> ChatMessage {
    let (id, body, user_id, user_name, inserted_at, client_id, edited_at, deleted_at) = row;
    ChatMessage { id, body, user_id, user_name, inserted_at, client_id, edited_at, deleted: deleted_at.is_some() }
}

/// What [`Chat::post`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The stored message.
    pub message: ChatMessage,
    /// `false` when its author had already sent it with the same client
    /// id: nothing was stored, and nothing is to be broadcast.
    pub created: bool,
}

/// Why a message was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The author already used this client id for a message with another
    /// body or in another room.
    #[error("already used for another message")]
    ClientIdTaken,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Longest client message id, in characters (a UUID has 36).
pub const MAX_CLIENT_ID: usize = 64;

/// Why a client message id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIdError {
    /// Not a string (or null).
    #[error("must be a string")]
    NotAString,
    /// Empty, too long, or with characters other than ASCII letters,
    /// digits, `-` and `_`.
    #[error("must be 1 to 64 letters, digits, - or _")]
    Malformed,
}

/// Checks a client message id: absent or null is none.
///
/// # Errors
///
/// See [`ClientIdError`].
pub fn validate_client_id(v: Option<&serde_json::Value>) -> Result<Option<String>, ClientIdError> {
    let s = match v {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(ClientIdError::NotAString),
    };
    let ok = (1..=MAX_CLIENT_ID).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(Some(s.clone()))
    } else {
        Err(ClientIdError::Malformed)
    }
}

/// Longest message, in characters.
pub const MAX_BODY: usize = 10_000;

/// Checks a message body: a string of at most [`MAX_BODY`] characters,
/// not blank, without control characters other than line breaks and tabs.
///
/// # Errors
///
/// See [`TextError`].
pub fn validate_body(v: Option<&serde_json::Value>) -> Result<String, TextError> {
    crate::text::text(v, MAX_BODY, true)
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

    /// A page of the rooms (not direct conversations, not deleted), by id:
    /// those after `after`, whose name contains `query` (compared as names
    /// are, after normalisation and case folding) when given; up to
    /// `limit`.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn rooms(&self, query: Option<&str>, after: i64, limit: i64) -> Result<Vec<Room>, sqlx::Error> {
        let pattern = format!("%{}%", like_escape(query.unwrap_or("")));
        let rows: Vec<RoomRow> = sqlx::query_as(
            "SELECT id, name, kind, owner_id FROM rooms \
             WHERE kind = 'room' AND deleted_at IS NULL AND id > $1 AND name_key LIKE $2 ESCAPE '\\' \
             ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(pattern)
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        Ok(rows.into_iter().map(room_of).collect())
    }

    /// The rooms and direct conversations `user` is a member of, with their
    /// unread counts (from the stored read positions).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn my_rooms(&self, user: i64) -> Result<Vec<MyRoom>, sqlx::Error> {
        let rows: Vec<MyRoomRow> = sqlx::query_as(
            "SELECT r.id, r.name, r.kind, r.owner_id, ms.last_read_id, \
               (SELECT COUNT(*) FROM messages m WHERE m.room_id = r.id AND m.id > ms.last_read_id \
                  AND m.user_id <> $1 AND m.deleted_at IS NULL \
                  AND m.user_id NOT IN (SELECT blocked_id FROM blocks WHERE user_id = $1)), \
               (SELECT u.name FROM memberships o JOIN users u ON u.id = o.user_id \
                  WHERE o.room_id = r.id AND o.user_id <> $1 LIMIT 1) \
             FROM memberships ms JOIN rooms r ON r.id = ms.room_id \
             WHERE ms.user_id = $1 AND r.deleted_at IS NULL ORDER BY r.id",
        )
        .bind(user)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, kind, owner_id, last_read_id, unread, other)| {
                let name = if kind == "direct" { other.unwrap_or_default() } else { name };
                MyRoom { room: Room { id, name, kind, owner_id }, unread, last_read_id }
            })
            .collect())
    }

    /// One room (not deleted).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn room(&self, id: i64) -> Result<Option<Room>, sqlx::Error> {
        let row: Option<RoomRow> =
            sqlx::query_as("SELECT id, name, kind, owner_id FROM rooms WHERE id = $1 AND deleted_at IS NULL")
                .bind(id)
                .fetch_optional(&self.db)
                .await?;
        Ok(row.map(room_of))
    }

    /// Creates a room named `name` (unique by its key); its creator owns it
    /// and becomes a member.
    ///
    /// # Errors
    ///
    /// [`RoomError::NameTaken`]; database errors.
    pub async fn create_room(&self, name: &crate::text::Name, creator: i64) -> Result<Room, RoomError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO rooms (name, name_key, owner_id, kind, inserted_at) VALUES ($1, $2, $3, 'room', $4) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(&name.display)
        .bind(&name.key)
        .bind(creator)
        .bind(now_iso())
        .fetch_optional(&self.db)
        .await?;
        let (id,) = row.ok_or(RoomError::NameTaken)?;
        self.add_member(id, creator).await?;
        Ok(Room { id, name: name.display.clone(), kind: "room".into(), owner_id: Some(creator) })
    }

    /// The direct conversation of `a` and `b`, created (both members) the
    /// first time; named after `b` (as `a` sees it).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn direct(&self, a: i64, b: i64, b_name: &str) -> Result<(Room, bool), RoomError> {
        let key = direct_key(a, b);
        let row: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO rooms (name, name_key, kind, inserted_at) VALUES ('', $1, 'direct', $2) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(&key)
        .bind(now_iso())
        .fetch_optional(&self.db)
        .await?;
        let (id, created) = match row {
            Some((id,)) => (id, true),
            None => {
                let (id,): (i64,) =
                    sqlx::query_as("SELECT id FROM rooms WHERE name_key = $1").bind(&key).fetch_one(&self.db).await?;
                (id, false)
            }
        };
        self.add_member(id, a).await?;
        self.add_member(id, b).await?;
        Ok((Room { id, name: b_name.to_owned(), kind: "direct".into(), owner_id: None }, created))
    }

    /// Deletes a room (its owner only): it leaves every list, and joins and
    /// reads of it are refused; its name is free again.
    ///
    /// # Errors
    ///
    /// [`RoomError::NotFound`], [`RoomError::NotOwner`]; database errors.
    pub async fn delete_room(&self, id: i64, user: i64) -> Result<(), RoomError> {
        let room = self.room(id).await?.ok_or(RoomError::NotFound)?;
        if room.owner_id != Some(user) {
            return Err(RoomError::NotOwner);
        }
        // the key is freed (a deleted room keeps its rows, renamed apart)
        sqlx::query("UPDATE rooms SET deleted_at = $1, name_key = $2 WHERE id = $3 AND deleted_at IS NULL")
            .bind(now_iso())
            .bind(format!(" deleted:{id}"))
            .bind(id)
            .execute(&self.db)
            .await?;
        sqlx::query("DELETE FROM memberships WHERE room_id = $1").bind(id).execute(&self.db).await?;
        Ok(())
    }

    /// `user` leaves `room` (idempotent).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn leave(&self, room: i64, user: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM memberships WHERE room_id = $1 AND user_id = $2")
            .bind(room)
            .bind(user)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Moves `user`'s read position in `room` up to `message` (never back).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn mark_read(&self, room: i64, user: i64, message: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE memberships SET last_read_id = $1 WHERE room_id = $2 AND user_id = $3 AND last_read_id < $1",
        )
        .bind(message)
        .bind(room)
        .bind(user)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Makes `user` a member of `room` (idempotent), having read what was
    /// said before.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn add_member(&self, room: i64, user: i64) -> Result<(), sqlx::Error> {
        // one statement: two concurrent joins cannot both insert; a new
        // member has read what was said before (their unread count starts
        // at zero, the history is there to scroll)
        sqlx::query(
            "INSERT INTO memberships (room_id, user_id, last_read_id) \
             VALUES ($1, $2, (SELECT COALESCE(MAX(id), 0) FROM messages WHERE room_id = $1)) \
             ON CONFLICT DO NOTHING",
        )
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

    /// Stores a message. With a `client_id` (the id the author's client
    /// gave it), a send retried after a lost reply is stored once: the
    /// author's message of that client id comes back, `created: false`.
    ///
    /// # Errors
    ///
    /// [`PostError::ClientIdTaken`] when the author used `client_id` for
    /// another body or room; database errors.
    pub async fn post(
        &self,
        room: i64,
        author: &User,
        body: &str,
        client_id: Option<&str>,
    ) -> Result<Posted, PostError> {
        let user = author.id;
        let at = now_iso();
        // one statement: two sends of one client id at once store one row
        // (the unique index on (user_id, client_id); a null client id never
        // conflicts)
        let inserted: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO messages (room_id, user_id, body, inserted_at, client_id) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, client_id) DO NOTHING RETURNING id",
        )
        .bind(room)
        .bind(user)
        .bind(body)
        .bind(&at)
        .bind(client_id)
        .fetch_optional(&self.db)
        .await?;
        let client_id = client_id.map(str::to_owned);
        if let Some((id,)) = inserted {
            let message = ChatMessage {
                id,
                body: body.to_owned(),
                user_id: user,
                user_name: author.name.clone(),
                inserted_at: at,
                client_id,
                edited_at: None,
                deleted: false,
            };
            return Ok(Posted { message, created: true });
        }
        let (id, room_id, stored, inserted_at): (i64, i64, String, String) =
            sqlx::query_as("SELECT id, room_id, body, inserted_at FROM messages WHERE user_id = $1 AND client_id = $2")
                .bind(user)
                .bind(client_id.as_deref())
                .fetch_one(&self.db)
                .await?;
        if room_id != room || stored != body {
            return Err(PostError::ClientIdTaken);
        }
        let message = ChatMessage {
            id,
            body: stored,
            user_id: user,
            user_name: author.name.clone(),
            inserted_at,
            client_id,
            edited_at: None,
            deleted: false,
        };
        Ok(Posted { message, created: false })
    }

    /// Up to `limit` messages of `room` as `reader` sees them (without
    /// those of whom they blocked), oldest first: the latest before
    /// message `before` (or the latest of all); with `after`, the first
    /// after message `after` instead (and before `before`, when given), to
    /// read forward from a message one has.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn history(
        &self,
        room: i64,
        reader: i64,
        before: Option<i64>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ChatMessage>, sqlx::Error> {
        let order = if after.is_some() { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id \
             WHERE m.room_id = $1 AND m.id < $2 AND m.id > $3 \
             AND m.user_id NOT IN (SELECT blocked_id FROM blocks WHERE user_id = $5) \
             ORDER BY m.id {order} LIMIT $4"
        );
        let rows: Vec<MessageRow> = sqlx::query_as(&sql)
            .bind(room)
            .bind(before.unwrap_or(i64::MAX))
            .bind(after.unwrap_or(i64::MIN))
            .bind(limit)
            .bind(reader)
            .fetch_all(&self.db)
            .await?;
        let mut out: Vec<ChatMessage> = rows.into_iter().map(message).collect();
        if after.is_none() {
            out.reverse();
        }
        Ok(out)
    }

    /// One message of a room.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn message(&self, room: i64, id: i64) -> Result<Option<ChatMessage>, sqlx::Error> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN users u ON u.id = m.user_id \
             WHERE m.room_id = $1 AND m.id = $2"
        );
        let row: Option<MessageRow> = sqlx::query_as(&sql).bind(room).bind(id).fetch_optional(&self.db).await?;
        Ok(row.map(message))
    }

    /// Replaces the body of `user`'s message `id` in `room` (not deleted),
    /// and says when.
    ///
    /// # Errors
    ///
    /// [`ChangeError::NotFound`], [`ChangeError::NotYours`]; database
    /// errors.
    pub async fn edit(&self, room: i64, user: i64, id: i64, body: &str) -> Result<ChatMessage, ChangeError> {
        self.change(room, user, id, "body = $1, edited_at = $2", body).await
    }

    /// Deletes `user`'s message `id` in `room`: its body is emptied and it
    /// is marked deleted (it keeps its place in the history).
    ///
    /// # Errors
    ///
    /// As [`Chat::edit`].
    pub async fn delete(&self, room: i64, user: i64, id: i64) -> Result<ChatMessage, ChangeError> {
        self.change(room, user, id, "body = $1, deleted_at = $2", "").await
    }

    async fn change(&self, room: i64, user: i64, id: i64, set: &str, body: &str) -> Result<ChatMessage, ChangeError> {
        let current = self.message(room, id).await?.filter(|m| !m.deleted).ok_or(ChangeError::NotFound)?;
        if current.user_id != user {
            return Err(ChangeError::NotYours);
        }
        // the author and the state checked again in the statement
        let sql =
            format!("UPDATE messages SET {set} WHERE id = $3 AND room_id = $4 AND user_id = $5 AND deleted_at IS NULL");
        let done =
            sqlx::query(&sql).bind(body).bind(now_iso()).bind(id).bind(room).bind(user).execute(&self.db).await?;
        if done.rows_affected() == 0 {
            return Err(ChangeError::NotFound);
        }
        self.message(room, id).await?.ok_or(ChangeError::NotFound)
    }

    /// Stores a notification for `user` and gives it back with its `id` and
    /// `inserted_at` added: what the notifications channel pushes, and what
    /// [`Chat::notifications`] reads after a reload.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn store_notification(
        &self,
        user: i64,
        mut payload: serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, sqlx::Error> {
        let at = now_iso();
        let text = serde_json::Value::Object(payload.clone()).to_string();
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO notifications (user_id, payload, inserted_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(user)
        .bind(&text)
        .bind(&at)
        .fetch_one(&self.db)
        .await?;
        payload.insert("id".into(), id.into());
        payload.insert("inserted_at".into(), at.into());
        Ok(serde_json::Value::Object(payload))
    }

    /// `user`'s latest `limit` notifications, oldest first.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn notifications(&self, user: i64, limit: i64) -> Result<Vec<serde_json::Value>, sqlx::Error> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, payload, inserted_at FROM notifications WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(user)
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .rev()
            .map(|(id, payload, at)| {
                let mut v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    m.insert("id".into(), id.into());
                    m.insert("inserted_at".into(), at.into());
                }
                v
            })
            .collect())
    }

    /// The members of `room` among `users`.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn members_among(&self, room: i64, users: &[i64]) -> Result<Vec<i64>, sqlx::Error> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (2..users.len() + 2).map(|i| format!("${i}")).collect();
        let sql =
            format!("SELECT user_id FROM memberships WHERE room_id = $1 AND user_id IN ({})", placeholders.join(", "));
        let mut q = sqlx::query_as::<_, (i64,)>(&sql).bind(room);
        for u in users {
            q = q.bind(*u);
        }
        Ok(q.fetch_all(&self.db).await?.into_iter().map(|(u,)| u).collect())
    }
}

/// The names a message mentions (`@name`, up to the next space; trailing
/// punctuation left out), as name keys (see [`crate::text::name`]), each
/// once, at most 20.
pub fn mentions(body: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for word in body.split_whitespace() {
        let Some(name) = word.strip_prefix('@') else { continue };
        let name = name.trim_end_matches(['.', ',', ':', ';', '!', '?', ')', '\'', '"']);
        if let Ok(n) = crate::text::name(Some(&serde_json::Value::String(name.to_owned())), 40) {
            if !keys.contains(&n.key) {
                keys.push(n.key);
            }
        }
        if keys.len() == 20 {
            break;
        }
    }
    keys
}
