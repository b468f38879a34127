ALTER TABLE messages ADD COLUMN client_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS messages_user_client_id ON messages (user_id, client_id);
