ALTER TABLE users ADD COLUMN name_key TEXT;
ALTER TABLE users ADD COLUMN password_hash TEXT;
UPDATE users SET name_key = lower(name) WHERE id IN (SELECT MIN(id) FROM users GROUP BY lower(name));
UPDATE users SET name_key = lower(name) || '#' || id WHERE name_key IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS users_by_name_key ON users (name_key);
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY,
  user_id BIGINT NOT NULL REFERENCES users(id),
  inserted_at TEXT NOT NULL,
  expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id)
