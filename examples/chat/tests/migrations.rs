//! A database made before accounts and unique room names (migrations 001
//! and 002 only, with names that differ only in case) is brought up to
//! date: nothing is lost, the first of each name keeps it, the others are
//! set apart. On SQLite (a file made here).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use sqlx::Connection;

#[tokio::test]
async fn an_older_database_is_migrated_without_loss() {
    let dir = std::env::temp_dir().join(format!("fawkes-chat-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.db");
    let _ = std::fs::remove_file(&path);
    let url = format!("sqlite://{}?mode=rwc", path.display());
    {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let old = [
            include_str!("../migrations/sqlite/001_init.sql"),
            include_str!("../migrations/sqlite/002_client_id.sql"),
            "CREATE TABLE schema_migrations (version TEXT PRIMARY KEY)",
            "INSERT INTO schema_migrations (version) VALUES ('001_init'), ('002_client_id')",
            "INSERT INTO users (name, inserted_at) VALUES ('Alice', 'x'), ('alice', 'x'), ('bob', 'x')",
            "INSERT INTO rooms (name, inserted_at) VALUES ('Lobby', 'x'), ('lobby', 'x')",
            "INSERT INTO memberships (room_id, user_id) VALUES (1, 1), (2, 2)",
            "INSERT INTO messages (room_id, user_id, body, inserted_at) VALUES (1, 1, 'kept', '2020-01-01T00:00:00.000Z')",
        ];
        for sql in old {
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(stmt).execute(&mut conn).await.unwrap();
            }
        }
        conn.close().await.unwrap();
    }
    let config = fawkes_chat::Config {
        secret_key_base: Some("chat-test-secret-key-base-0123456789abcdef".into()),
        dev_sign_in: true,
        ..fawkes_chat::Config::new(url)
    };
    let (_, _, app) = fawkes_chat::build(&config).await.unwrap();
    // everyone and everything is still there
    let names = app.accounts.names(&[1, 2, 3]).await.unwrap();
    assert_eq!(names.len(), 3);
    assert_eq!(app.chat.room(1).await.unwrap().unwrap().name, "Lobby");
    assert_eq!(app.chat.room(2).await.unwrap().unwrap().name, "lobby");
    let history = app.chat.history(1, 1, None, None, 10).await.unwrap();
    assert_eq!((history[0].body.as_str(), history[0].user_name.as_str()), ("kept", "Alice"));
    // the name's key belongs to the first: name-only sign-in (allowed here) finds Alice
    let name = fawkes_chat::text::name(Some(&serde_json::json!("ALICE")), 40).unwrap();
    assert_eq!(app.accounts.sign_in_by_name(&name).await.unwrap().id, 1);
    // the room list: both rooms, found by their name
    let found = app.chat.rooms(Some("lobby"), 0, 10).await.unwrap();
    assert_eq!(found.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
    let _ = std::fs::remove_dir_all(&dir);
}
