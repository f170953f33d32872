"""Schema migrations: numbered SQL files applied in order, the version kept in the database.

The files live in the top-level `migrations/` directory of the source tree; an installed
package carries them as `bridge/migrations` (see setup.cfg).

Each migration also records which code may use the database after it (`compatible_from`,
from the file's `-- compatible_from: N` line; without one, only code that knows the
migration): a bridge runs on a database newer than it knows when every migration it does not
know keeps its own schema's code working. That is what lets several bridges on one
database be upgraded one at a time (docs/upgrading.md).
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
_COMPATIBLE_FROM = re.compile(r"^-- compatible_from: (\d+)\s*$", re.M)
# The column migration 0007 adds to the bookkeeping (bridge.store.postgres_setup: its 0002).
COMPATIBLE_FROM = "compatible_from"
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
    # The oldest schema version whose code keeps working once this migration is applied.
    compatible_from: int


@dataclass(frozen=True, slots=True)
class SchemaState:
    """A database's schema version as one release of the code sees it."""

    version: int  # the database's
    latest: int  # the newest this code knows
    # The oldest schema version a bridge must know to use the database as it is (for a
    # database newer than this code: what its unknown migrations say; else 0).
    needs: int = 0

    @property
    def older(self) -> bool:
        return self.version < self.latest

    @property
    def newer(self) -> bool:
        return self.version > self.latest

    @property
    def usable(self) -> bool:
        """This code can read and write the database without changing its schema."""
        return self.version == self.latest or (self.newer and self.needs <= self.latest)

    def describe(self) -> str:
        """The version as messages and /readyz give it."""
        if self.newer:
            relation = "compatible" if self.usable else f"needs a bridge that knows {self.needs}"
            return (
                f"schema version {self.version}, newer than this bridge knows ({self.latest}; "
                f"{relation})"
            )
        return f"schema version {self.version}"

    def too_new(self) -> str:
        """Why a newer database cannot be used by this code."""
        return (
            f"the database is at schema version {self.version}, newer than this "
            f"responses-bridge knows (up to {self.latest}), and its migrations need a bridge "
            f"that knows schema {self.needs}: upgrade responses-bridge (docs/upgrading.md). "
            "The database was not modified."
        )

    def too_old(self) -> str:
        """Why an older database must be migrated first."""
        return (
            f"the database is at schema version {self.version}; this responses-bridge needs "
            f"version {self.latest}: run `responses-bridge migrate` first (back the database up "
            "before; docs/upgrading.md). The database was not modified."
        )


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
            version = int(match["version"])
            sql = entry.read_text("utf-8")
            declared = _COMPATIBLE_FROM.search(sql)
            compatible_from = int(declared[1]) if declared else version
            if compatible_from > version:
                raise MigrationError(
                    f"{entry.name}: compatible_from {compatible_from} is after its own version"
                )
            found.append(Migration(version, match["name"], sql, compatible_from))
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


def _has_compatibility(connection: sqlite3.Connection) -> bool:
    columns = connection.execute("PRAGMA table_info(schema_migrations)").fetchall()
    return any(column[1] == COMPATIBLE_FROM for column in columns)


def schema_state(connection: sqlite3.Connection, migrations: list[Migration]) -> SchemaState:
    """The database's version against these migrations; only reads."""
    latest = migrations[-1].version
    current = applied_version(connection)
    if current <= latest:
        return SchemaState(current, latest)
    needs = current  # migrations recorded without it need code that knows them
    if _has_compatibility(connection):
        row = connection.execute(
            f"SELECT max(coalesce({COMPATIBLE_FROM}, version)) FROM schema_migrations "
            "WHERE version > ?",
            (latest,),
        ).fetchone()
        needs = int(row[0])
    return SchemaState(current, latest, needs)


def check_not_newer(connection: sqlite3.Connection, migrations: list[Migration]) -> SchemaState:
    """The database's schema; MigrationError if it is newer than these migrations and not
    compatible with them.

    Only reads: a database this code does not understand is never written to.
    """
    state = schema_state(connection, migrations)
    if not state.older and not state.usable:
        raise MigrationError(state.too_new())
    return state


def migrate(connection: sqlite3.Connection, migrations: list[Migration] | None = None) -> int:
    """Apply what is missing, each migration in its own transaction; returns the version.

    A database newer than the code is refused before anything is written to it, unless its
    newer migrations are compatible with this code (then nothing is done). Another process
    migrating the same file at the same time is tolerated: a step it applied first is
    skipped. The connection must be in autocommit mode (isolation_level=None).
    """
    known = migrations if migrations is not None else load_migrations()
    state = check_not_newer(connection, known)
    if not state.older:
        return state.version
    connection.execute(_TRACKING_TABLE)
    for migration in known[state.version :]:
        try:
            # executescript commits what is pending before it runs; the transaction it
            # begins here stays open until the row below is written with it.
            connection.executescript(f"BEGIN IMMEDIATE;\n{migration.sql}\n;")
            _record(connection, migration)
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            if connection.in_transaction:
                connection.rollback()
            if applied_version(connection) >= migration.version:
                continue  # applied meanwhile by another process
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name}.sql failed: {exc}"
            ) from exc
    return known[-1].version


def plan(state: SchemaState, migrations: list[Migration]) -> str:
    """What `migrate` would do to a database in `state`, and whether bridges of its current
    schema keep working on the result (`migrate --check` prints it)."""
    if state.newer:
        return state.describe()
    pending = migrations[state.version :]
    if not pending:
        return "up to date"
    text = (
        f"{len(pending)} migration(s) to apply with `migrate` "
        f"({pending[0].version:04d} to {pending[-1].version:04d})"
    )
    if state.version == 0:
        return text
    needing = max(pending, key=lambda migration: migration.compatible_from)
    if needing.compatible_from <= state.version:
        return f"{text}; bridges of schema {state.version} keep working on the result"
    return (
        f"{text}; stop the bridges of schema {state.version} before: "
        f"{needing.version:04d}_{needing.name} needs code that knows schema "
        f"{needing.compatible_from}"
    )


def _record(connection: sqlite3.Connection, migration: Migration) -> None:
    """The migration's row in the bookkeeping, with its compatibility once that is kept."""
    columns, values = (
        "version, name, applied_at",
        [
            migration.version,
            migration.name,
            int(time.time()),
        ],
    )
    if _has_compatibility(connection):
        columns += f", {COMPATIBLE_FROM}"
        values.append(migration.compatible_from)
    placeholders = ", ".join("?" * len(values))
    connection.execute(f"INSERT INTO schema_migrations ({columns}) VALUES ({placeholders})", values)
