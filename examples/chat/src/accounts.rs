//! Accounts: users, sign-in tokens and block lists.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use fawkes::token::{self, MaxAge, SignOptions, VerifyError, VerifyOptions};
use parking_lot::RwLock;
use serde::Serialize;
use sqlx::AnyPool;

use crate::db::now_iso;

/// A user.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Display name, unique.
    pub name: String,
}

const TOKEN_SALT: &str = "user socket";
/// Sign-in tokens last two weeks.
const TOKEN_MAX_AGE: f64 = 14.0 * 86_400.0;

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

    /// The user called `name`, created on first sign-in.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn sign_in(&self, name: &str) -> Result<User, sqlx::Error> {
        // one statement whether or not the user exists, and no race
        // between two first sign-ins of one name
        sqlx::query("INSERT INTO users (name, inserted_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(now_iso())
            .execute(&self.db)
            .await?;
        self.by_name(name).await?.ok_or(sqlx::Error::RowNotFound)
    }

    async fn by_name(&self, name: &str) -> Result<Option<User>, sqlx::Error> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT id, name FROM users WHERE name = $1").bind(name).fetch_optional(&self.db).await?;
        Ok(row.map(|(id, name)| User { id, name }))
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

    /// A Phoenix.Token for the user's socket.
    ///
    /// # Errors
    ///
    /// None in practice: the secret's length is checked at start and an id
    /// is always a term.
    pub fn token_for(&self, user: &User) -> Result<String, token::SignError> {
        let opts = SignOptions { signed_at_ms: None, max_age: MaxAge::Seconds(TOKEN_MAX_AGE) };
        token::sign(&self.secret_key_base, TOKEN_SALT, &serde_json::json!(user.id), &opts)
    }

    /// The user id in a token.
    ///
    /// # Errors
    ///
    /// Missing, invalid or expired tokens.
    pub fn verify(&self, t: Option<&str>) -> Result<i64, VerifyError> {
        let opts = VerifyOptions { max_age: Some(MaxAge::Seconds(TOKEN_MAX_AGE)), now_ms: None };
        token::verify::<serde_json::Value>(&self.secret_key_base, TOKEN_SALT, t, &opts)?
            .as_i64()
            .ok_or(VerifyError::Invalid)
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
