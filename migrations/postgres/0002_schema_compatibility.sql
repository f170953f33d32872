-- compatible_from: 1
-- Which releases may use the database (see migrations/0007_schema_compatibility.sql): each
-- migration records the oldest schema version whose code keeps working on the database once
-- it is applied. Only the column is added, so bridges of schema 1 go on working.
ALTER TABLE schema_migrations ADD COLUMN compatible_from integer;
UPDATE schema_migrations SET compatible_from = version;
