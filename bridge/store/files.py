"""The database file: created private, migrated, checked for corruption; nothing async here."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.migrate import (
    MigrationError,
    applied_version,
    check_not_newer,
    load_migrations,
    migrate,
)

# How long a statement waits for another process's lock before it fails.
BUSY_TIMEOUT_MS = 5000


class StoreError(Exception):
    """The database cannot be opened or brought up to date."""


class DatabaseMissing(StoreError):
    """A command that only reads was pointed at a database that does not exist."""


def prepare_database_file(path: Path) -> None:
    """The directory (0700) and the file (0600) exist before SQLite opens the file.

    SQLite gives its -wal and -shm files the mode of the database file.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


def open_and_migrate(path: Path) -> int:
    """Create the file if needed and bring its schema up to date; returns the version.

    A database newer than this code is refused before anything, even the journal mode,
    is written to it.
    """
    migrations = load_migrations()
    prepare_database_file(path)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        check_not_newer(connection, migrations)
        if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            # Only takes effect before the first table and before the switch to WAL;
            # lets the pruner give space back with incremental_vacuum.
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        _switch_to_wal(connection)
        return migrate(connection, migrations)
    finally:
        connection.close()


def _switch_to_wal(connection: sqlite3.Connection) -> None:
    """PRAGMA journal_mode = WAL, waiting out other processes doing the same.

    Two connections switching a new file at once can deadlock on its rollback-journal
    locks; SQLite then answers "database is locked" at once instead of calling the busy
    handler, so the switch is retried here, for as long as the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write (and never creates the file)."""
    if not path.exists():
        raise DatabaseMissing(f"{path}: no such database")
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return connection


class IntegrityCheck:
    """What SQLite finds wrong with the file's pages and indexes, on a read-only connection
    of its own. quick_check reads every page (O(size)); integrity_check (`full`) also
    checks every index against its table. `run` blocks; `cancel` may be called from another
    thread and makes `run` return None at once."""

    def __init__(self, path: Path, *, full: bool = False) -> None:
        self.path = path
        self.full = full
        self._connection: sqlite3.Connection | None = None
        self._cancelled = False

    def run(self) -> str | None:
        connection = read_only(self.path)
        self._connection = connection
        try:
            if self._cancelled:
                return None
            pragma = "integrity_check" if self.full else "quick_check"
            rows = connection.execute(f"PRAGMA {pragma}(20)").fetchall()
        except sqlite3.DatabaseError as exc:
            return None if self._cancelled else str(exc)
        finally:
            self._connection = None
            connection.close()
        found = [str(row[0]) for row in rows]
        return None if found == ["ok"] else "; ".join(found)

    def cancel(self) -> None:
        self._cancelled = True
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(sqlite3.ProgrammingError):
                connection.interrupt()


def integrity_problem(path: Path, *, full: bool = False) -> str | None:
    """IntegrityCheck(path, full=full).run()."""
    return IntegrityCheck(path, full=full).run()


@dataclass(frozen=True, slots=True)
class DatabaseReport:
    """What `responses-bridge migrate --check` tells about a database, without changing it."""

    version: int
    latest: int
    problem: str | None


def check_database(path: Path) -> DatabaseReport:
    """The schema version, the newest this code knows, and any corruption found."""
    migrations = load_migrations()
    connection = read_only(path)
    try:
        version = applied_version(connection)
    except sqlite3.DatabaseError as exc:
        return DatabaseReport(0, migrations[-1].version, str(exc))
    finally:
        connection.close()
    return DatabaseReport(version, migrations[-1].version, integrity_problem(path, full=True))


__all__ = [
    "BUSY_TIMEOUT_MS",
    "DatabaseMissing",
    "DatabaseReport",
    "IntegrityCheck",
    "MigrationError",
    "StoreError",
    "check_database",
    "integrity_problem",
    "open_and_migrate",
    "prepare_database_file",
    "read_only",
]
