-- Schema version 4: a decision snapshot's index row says which snapshot format it is and which
-- configuration made it (the sha256 of the stored, secret-free config), so `replay` can tell
-- a replayable snapshot from an older one without opening it. Old rows keep NULL (format 1).
-- Applied by data_lake.db.migrate() after version 3; never edited once shipped.

ALTER TABLE snapshots ADD COLUMN schema_version INTEGER;
ALTER TABLE snapshots ADD COLUMN config_hash TEXT;
CREATE INDEX IF NOT EXISTS snapshots_at ON snapshots(at);
