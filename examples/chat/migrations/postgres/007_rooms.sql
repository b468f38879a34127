ALTER TABLE rooms ADD COLUMN name_key TEXT;
ALTER TABLE rooms ADD COLUMN owner_id BIGINT REFERENCES users(id);
ALTER TABLE rooms ADD COLUMN kind TEXT NOT NULL DEFAULT 'room';
ALTER TABLE rooms ADD COLUMN deleted_at TEXT;
UPDATE rooms SET name_key = lower(name) WHERE id IN (SELECT MIN(id) FROM rooms GROUP BY lower(name));
UPDATE rooms SET name_key = lower(name) || '#' || id WHERE name_key IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS rooms_by_name_key ON rooms (name_key);
ALTER TABLE memberships ADD COLUMN last_read_id BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS memberships_user_id ON memberships (user_id)
