//! Accounts: users with passwords (Argon2id), sessions stored in the
//! database (they expire, and end at sign-out), and block lists.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use fawkes::token::{self, MaxAge, SignOptions, VerifyOptions};
use parking_lot::RwLock;
use serde::Serialize;
use sqlx::AnyPool;

use crate::db::{iso, now_iso};
use crate::text::Name;

/// A user.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Display name, unique after normalisation (see [`crate::text::name`]).
    pub name: String,
}

const TOKEN_SALT: &str = "user session";

/// A session: what sign-in and registration give.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// The bearer token of the API and the socket's `token` parameter: a
    /// Phoenix.Token naming the session.
    pub token: String,
    /// The session's id (stored; not shown to clients).
    #[serde(skip)]
    pub id: String,
    /// When it ends (ISO 8601, UTC) unless signed out before.
    pub expires_at: String,
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Another user has a name with the same key.
    #[error("has already been taken")]
    NameTaken,
    /// A missing, invalid, expired or ended session.
    #[error("{0}")]
    Unauthorized(String),
    /// A token could not be signed.
    #[error("token: {0}")]
    Token(String),
    /// The password hash could not be made or read.
    #[error("password hash: {0}")]
    Hash(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// `n` random bytes, in hex.
fn random_hex(n: usize) -> Result<String, AccountError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| AccountError::Hash(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Argon2id with a random salt, as a PHC string; on a blocking thread
/// (tens of milliseconds of CPU).
async fn hash_password(password: &str) -> Result<String, AccountError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt).map_err(|e| AccountError::Hash(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AccountError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| AccountError::Hash(e.to_string()))?
}

/// Whether `password` matches the PHC string `hash`, on a blocking thread.
async fn verify_password(password: &str, hash: String) -> Result<bool, AccountError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| AccountError::Hash(e.to_string()))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(|e| AccountError::Hash(e.to_string()))?
}

/// A hash no password is known to match, checked when there is no user, so
/// that an unknown name answers no faster than a wrong password.
async fn dummy_hash() -> Result<String, AccountError> {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY.get_or_try_init(|| async { hash_password(&random_hex(16)?).await }).await.cloned()
}

/// The accounts context.
#[derive(Clone)]
pub struct Accounts {
    db: AnyPool,
    secret_key_base: Arc<str>,
    /// Block lists by user, read by every recipient of every message: an
    /// `Arc` so that a read is a reference count, not a copy.
    blocks: Arc<RwLock<HashMap<i64, Arc<HashSet<i64>>>>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accounts")
    }
}

impl Accounts {
    /// The context, with the secret key base that signs tokens: from the
    /// argument, else the one stored in the database, else a new random one
    /// (stored, so that tokens survive restarts).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn new(db: AnyPool, secret_key_base: Option<String>) -> Result<Accounts, sqlx::Error> {
        let secret = match secret_key_base {
            Some(s) => s,
            None => {
                // Generated once and stored: when several nodes start on a
                // fresh database, the first insert wins and all read it back.
                let mut bytes = [0u8; 48];
                getrandom::fill(&mut bytes).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ('secret_key_base', $1) ON CONFLICT (key) DO NOTHING",
                )
                .bind(&fresh)
                .execute(&db)
                .await?;
                let (stored,): (String,) =
                    sqlx::query_as("SELECT value FROM settings WHERE key = 'secret_key_base'").fetch_one(&db).await?;
                stored
            }
        };
        if secret.len() < token::MIN_SECRET_LEN {
            return Err(sqlx::Error::Configuration(
                format!("SECRET_KEY_BASE must be at least {} bytes", token::MIN_SECRET_LEN).into(),
            ));
        }
        Ok(Accounts { db, secret_key_base: secret.into(), blocks: Arc::default() })
    }

    /// Creates an account: `name` (as [`crate::text::name`] gives it)
    /// unique by its key, `password` hashed with Argon2id (a random salt,
    /// the `argon2` crate's default cost: 19 MiB, 2 passes).
    ///
    /// # Errors
    ///
    /// [`AccountError::NameTaken`] when a user has that name's key;
    /// database errors.
    pub async fn register(&self, name: &Name, password: &str) -> Result<User, AccountError> {
        let hash = hash_password(password).await?;
        // one statement: two registrations of one name cannot both insert
        let row: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO users (name, name_key, password_hash, inserted_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(&name.display)
        .bind(&name.key)
        .bind(&hash)
        .bind(now_iso())
        .fetch_optional(&self.db)
        .await?;
        match row {
            Some((id,)) => Ok(User { id, name: name.display.clone() }),
            None => Err(AccountError::NameTaken),
        }
    }

    /// The user whose name has `name`'s key and whose password is
    /// `password`; `None` otherwise (an unknown name takes as long as a
    /// wrong password: a hash is checked either way).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn authenticate(&self, name: &Name, password: &str) -> Result<Option<User>, AccountError> {
        let row: Option<(i64, String, Option<String>)> =
            sqlx::query_as("SELECT id, name, password_hash FROM users WHERE name_key = $1")
                .bind(&name.key)
                .fetch_optional(&self.db)
                .await?;
        let (user, hash) = match row {
            Some((id, name, Some(hash))) => (Some(User { id, name }), hash),
            // no such user, or one made by name-only sign-in: no password matches
            _ => (None, dummy_hash().await?),
        };
        let ok = verify_password(password, hash).await?;
        Ok(user.filter(|_| ok))
    }

    /// Name-only sign-in (development only, see
    /// [`crate::Config::dev_sign_in`]): the user with `name`'s key, created
    /// without a password when there is none.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn sign_in_by_name(&self, name: &Name) -> Result<User, AccountError> {
        // one statement whether or not the user exists, and no race
        // between two first sign-ins of one name
        sqlx::query("INSERT INTO users (name, name_key, inserted_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(&name.display)
            .bind(&name.key)
            .bind(now_iso())
            .execute(&self.db)
            .await?;
        let row: Option<(i64, String)> = sqlx::query_as("SELECT id, name FROM users WHERE name_key = $1")
            .bind(&name.key)
            .fetch_optional(&self.db)
            .await?;
        row.map(|(id, name)| User { id, name }).ok_or(AccountError::NameTaken)
    }

    /// Starts a session of `user` lasting `max_age`: stored (so that it can
    /// end before then), and a signed token naming it. Expired sessions of
    /// the user are removed on the way.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn start_session(&self, user: &User, max_age: Duration) -> Result<Session, AccountError> {
        let now = SystemTime::now();
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND expires_at <= $2")
            .bind(user.id)
            .bind(iso(now))
            .execute(&self.db)
            .await?;
        let id = random_hex(32)?;
        let expires_at = iso(now + max_age);
        sqlx::query("INSERT INTO sessions (id, user_id, inserted_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(user.id)
            .bind(iso(now))
            .bind(&expires_at)
            .execute(&self.db)
            .await?;
        let opts = SignOptions { signed_at_ms: None, max_age: MaxAge::Seconds(max_age.as_secs_f64()) };
        let token = token::sign(&self.secret_key_base, TOKEN_SALT, &serde_json::json!(id), &opts)
            .map_err(|e| AccountError::Token(e.to_string()))?;
        Ok(Session { token, id, expires_at })
    }

    /// The user and session id of a session token: its signature checked,
    /// then the session looked up (signed out or expired, it is gone).
    ///
    /// # Errors
    ///
    /// [`AccountError::Unauthorized`] with the reason; database errors.
    pub async fn session(&self, t: Option<&str>) -> Result<(User, String), AccountError> {
        // the token's own max age, then the stored expiry
        let opts = VerifyOptions { max_age: None, now_ms: None };
        let id: String = token::verify(&self.secret_key_base, TOKEN_SALT, t, &opts)
            .map_err(|e| AccountError::Unauthorized(format!("token {e}")))?;
        let id = id.as_str();
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT u.id, u.name FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id = $1 AND s.expires_at > $2",
        )
        .bind(id)
        .bind(now_iso())
        .fetch_optional(&self.db)
        .await?;
        match row {
            Some((uid, name)) => Ok((User { id: uid, name }, id.to_owned())),
            None => Err(AccountError::Unauthorized("session expired or signed out".into())),
        }
    }

    /// Ends a session: its token is refused from now on.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn end_session(&self, id: &str) -> Result<(), AccountError> {
        sqlx::query("DELETE FROM sessions WHERE id = $1").bind(id).execute(&self.db).await?;
        Ok(())
    }

    /// A user by id.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn get(&self, id: i64) -> Result<Option<User>, sqlx::Error> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT id, name FROM users WHERE id = $1").bind(id).fetch_optional(&self.db).await?;
        Ok(row.map(|(id, name)| User { id, name }))
    }

    /// `user`'s presence status (`online` unless set).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn status(&self, user: i64) -> Result<String, sqlx::Error> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT status FROM users WHERE id = $1").bind(user).fetch_optional(&self.db).await?;
        Ok(row.map(|(s,)| s).unwrap_or_else(|| "online".to_owned()))
    }

    /// Stores `user`'s presence status: every tab and every reload shows it.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn set_status(&self, user: i64, status: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET status = $1 WHERE id = $2").bind(status).bind(user).execute(&self.db).await?;
        Ok(())
    }

    /// The users whose name keys are among `keys`, in one query.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn by_keys(&self, keys: &[String]) -> Result<Vec<User>, sqlx::Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT id, name FROM users WHERE name_key IN ({})", placeholders.join(", "));
        let mut q = sqlx::query_as::<_, (i64, String)>(&sql);
        for k in keys {
            q = q.bind(k);
        }
        Ok(q.fetch_all(&self.db).await?.into_iter().map(|(id, name)| User { id, name }).collect())
    }

    /// The names of several users, in one query.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn names(&self, ids: &[i64]) -> Result<HashMap<i64, String>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT id, name FROM users WHERE id IN ({})", placeholders.join(", "));
        let mut q = sqlx::query_as::<_, (i64, String)>(&sql);
        for id in ids {
            q = q.bind(*id);
        }
        Ok(q.fetch_all(&self.db).await?.into_iter().collect())
    }

    /// Who `user` has blocked (cached).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn blocked_by(&self, user: i64) -> Result<Arc<HashSet<i64>>, sqlx::Error> {
        if let Some(set) = self.blocks.read().get(&user) {
            return Ok(set.clone());
        }
        let rows: Vec<(i64,)> =
            sqlx::query_as("SELECT blocked_id FROM blocks WHERE user_id = $1").bind(user).fetch_all(&self.db).await?;
        let set: Arc<HashSet<i64>> = Arc::new(rows.into_iter().map(|(b,)| b).collect());
        self.blocks.write().insert(user, set.clone());
        Ok(set)
    }

    /// Forgets `user`'s cached block list (it changed, here or on another
    /// node).
    pub fn forget_blocks(&self, user: i64) {
        self.blocks.write().remove(&user);
    }

    /// Forgets every cached block list (changes may have been missed).
    pub fn forget_all_blocks(&self) {
        self.blocks.write().clear();
    }

    /// `user` stops receiving `blocked`'s messages.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn block(&self, user: i64, blocked: i64) -> Result<(), sqlx::Error> {
        // one statement: two concurrent blocks cannot both insert
        sqlx::query("INSERT INTO blocks (user_id, blocked_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(user)
            .bind(blocked)
            .execute(&self.db)
            .await?;
        self.forget_blocks(user);
        Ok(())
    }

    /// Undoes [`Accounts::block`].
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn unblock(&self, user: i64, blocked: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM blocks WHERE user_id = $1 AND blocked_id = $2")
            .bind(user)
            .bind(blocked)
            .execute(&self.db)
            .await?;
        self.forget_blocks(user);
        Ok(())
    }
}
