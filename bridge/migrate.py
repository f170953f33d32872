"""Schema migrations: numbered SQL files applied in order, the version kept in the database.

The files live in the top-level `migrations/` directory of the source tree; an installed
package carries them as `bridge/migrations` (see setup.cfg).
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_TRACKING_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)
"""


class MigrationError(Exception):
    """The database cannot be brought to this code's schema (and was not touched)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_source() -> Traversable:
    """Where the SQL files are: inside the installed package, else the source tree."""
    installed = resources.files("bridge") / "migrations"
    if installed.is_dir():
        return installed
    return resources.files("bridge").joinpath("..", "migrations")


def load_migrations(source: Traversable | Path | None = None) -> list[Migration]:
    """All migrations in version order; their numbers must run 1, 2, 3... without gaps."""
    directory = source if source is not None else migrations_source()
    found: list[Migration] = []
    for entry in directory.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match["version"]), match["name"], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migrations are not contiguous: expected {expected:04d}_*.sql, "
                f"found {migration.version:04d}_{migration.name}.sql"
            )
    if not found:
        raise MigrationError(f"no migrations found in {directory}")
    return found


def applied_version(connection: sqlite3.Connection) -> int:
    """The highest migration applied to this database (0 for a blank one)."""
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return 0
    row = connection.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def check_not_newer(connection: sqlite3.Connection, migrations: list[Migration]) -> int:
    """The database's version; MigrationError if it is newer than these migrations.

    Only reads: a database this code does not understand is never written to.
    """
    latest = migrations[-1].version
    current = applied_version(connection)
    if current > latest:
        raise MigrationError(
            f"the database is at schema version {current}, newer than this responses-bridge "
            f"knows (up to {latest}); upgrade responses-bridge or point [store] path at "
            "another file. The database was not modified."
        )
    return current


def migrate(connection: sqlite3.Connection, migrations: list[Migration] | None = None) -> int:
    """Apply what is missing, each migration in its own transaction; returns the version.

    A database newer than the code is refused before anything is written to it. Another
    process migrating the same file at the same time is tolerated: a step it applied first
    is skipped. The connection must be in autocommit mode (isolation_level=None).
    """
    known = migrations if migrations is not None else load_migrations()
    current = check_not_newer(connection, known)
    if current == known[-1].version:
        return current
    connection.execute(_TRACKING_TABLE)
    for migration in known[current:]:
        script = (
            f"BEGIN IMMEDIATE;\n{migration.sql}\n;"
            f"INSERT INTO schema_migrations (version, name, applied_at) "
            f"VALUES ({migration.version}, '{migration.name}', {int(time.time())});\n"
            "COMMIT;"
        )
        try:
            connection.executescript(script)
        except sqlite3.Error as exc:
            if connection.in_transaction:
                connection.rollback()
            if applied_version(connection) >= migration.version:
                continue  # applied meanwhile by another process
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name}.sql failed: {exc}"
            ) from exc
    return known[-1].version
