-- compatible_from: 6
-- Which releases may use the database: each migration records the oldest schema version
-- whose code keeps working on the database once it is applied. An expand-only migration
-- (new tables, new nullable columns, new indexes) keeps the previous schema's code working
-- and says so with its `-- compatible_from:` line; a migration without one requires code
-- that knows it. A bridge that finds a newer database runs on it only when every migration
-- it does not know is compatible with its own schema (docs/upgrading.md). This migration
-- only adds the column, so bridges of schema 6 go on working.
ALTER TABLE schema_migrations ADD COLUMN compatible_from INTEGER;
-- What was applied before is recorded as needing its own version (the conservative truth).
UPDATE schema_migrations SET compatible_from = version;
