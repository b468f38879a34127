//! The database: SQLite by default (a file created and migrated at start),
//! PostgreSQL when `DATABASE_URL` says `postgres://`. Same queries, same
//! migrations (one set per dialect).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection};

/// Which database the pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

const SQLITE: &[(&str, &str)] = &[
    ("001_init", include_str!("../migrations/sqlite/001_init.sql")),
    ("002_client_id", include_str!("../migrations/sqlite/002_client_id.sql")),
    ("003_accounts", include_str!("../migrations/sqlite/003_accounts.sql")),
    ("004_edits", include_str!("../migrations/sqlite/004_edits.sql")),
    ("005_notifications", include_str!("../migrations/sqlite/005_notifications.sql")),
    ("006_status", include_str!("../migrations/sqlite/006_status.sql")),
    ("007_rooms", include_str!("../migrations/sqlite/007_rooms.sql")),
];
const POSTGRES: &[(&str, &str)] = &[
    ("001_init", include_str!("../migrations/postgres/001_init.sql")),
    ("002_client_id", include_str!("../migrations/postgres/002_client_id.sql")),
    ("003_accounts", include_str!("../migrations/postgres/003_accounts.sql")),
    ("004_edits", include_str!("../migrations/postgres/004_edits.sql")),
    ("005_notifications", include_str!("../migrations/postgres/005_notifications.sql")),
    ("006_status", include_str!("../migrations/postgres/006_status.sql")),
    ("007_rooms", include_str!("../migrations/postgres/007_rooms.sql")),
];

/// How long the first connection may take: a database that cannot be
/// reached fails the start at once (a refused connection) or after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects and brings the schema up to date.
///
/// # Errors
///
/// When the database cannot be reached (within [`CONNECT_TIMEOUT`]: an
/// [`sqlx::Error::Io`] that says why, `TimedOut` when nothing answered) or a
/// migration fails.
pub async fn connect(url: &str) -> Result<(AnyPool, Backend), sqlx::Error> {
    sqlx::any::install_default_drivers();
    let backend = if url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
    // One connection first, on its own: the pool would retry a refused
    // connection until its 30 s acquire timeout and then report only that.
    let first = tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(url)).await.map_err(|_| {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        ))
    })??;
    // the pool opens its own; this one only proved the way
    let _ = first.close().await;
    // SQLite allows one writer at a time: one connection avoids lock errors.
    let max = if backend == Backend::Sqlite { 1 } else { 10 };
    let pool = AnyPoolOptions::new().max_connections(max).connect(url).await?;
    migrate(&pool, backend).await?;
    Ok((pool, backend))
}

async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), sqlx::Error> {
    // One connection, and on PostgreSQL an advisory lock: several servers
    // starting at once migrate one after the other.
    let mut conn = pool.acquire().await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock(747001)").execute(&mut *conn).await?;
    }
    let result = async {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY)")
            .execute(&mut *conn)
            .await?;
        let migrations = if backend == Backend::Sqlite { SQLITE } else { POSTGRES };
        for (version, sql) in migrations {
            let done: Option<(String,)> = sqlx::query_as("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&mut *conn)
                .await?;
            if done.is_some() {
                continue;
            }
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(stmt).execute(&mut *conn).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(*version)
                .execute(&mut *conn)
                .await?;
            tracing::info!(version, "migrated");
        }
        Ok::<(), sqlx::Error>(())
    }
    .await;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_unlock(747001)").execute(&mut *conn).await?;
    }
    result
}

/// Now, as an ISO 8601 UTC timestamp with milliseconds.
pub fn now_iso() -> String {
    iso(SystemTime::now())
}

/// A time as an ISO 8601 UTC timestamp with milliseconds (which sort as
/// the times do: stored as text, they compare in SQL).
pub fn iso(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // days since the epoch to a civil date (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_look_right() {
        let t = super::now_iso();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
