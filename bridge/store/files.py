"""The SQLite database file: created private, migrated, copied, checked for corruption;
nothing async here."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.migrate import (
    SchemaState,
    check_not_newer,
    load_migrations,
    migrate,
    plan,
    schema_state,
)
from bridge.store.errors import DatabaseMissing, SchemaTooNew, SchemaTooOld, StoreError
from bridge.store.protocol import Opening

# How long a statement waits for another process's lock before it fails.
BUSY_TIMEOUT_MS = 5000


# A file as the filesystem knows it (device, inode): another file at the same path differs.
FileIdentity = tuple[int, int]


def file_identity(path: Path) -> FileIdentity:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def file_problem(path: Path, identity: FileIdentity) -> str | None:
    """What happened to the database file opened as `identity`, if it is no longer at
    `path` (deleted, or replaced by another file); None while it is."""
    try:
        current = file_identity(path)
    except FileNotFoundError:
        return f"the database file {path} was deleted while the bridge was running"
    except OSError:
        return None  # not knowable here; SQLite reports what it cannot do
    if current != identity:
        return f"the database file {path} was replaced by another file while the bridge was running"
    return None


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
    is written to it (unless its newer migrations are compatible: then it is left as it is).
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


def migrate_file(path: Path) -> int:
    """open_and_migrate for `responses-bridge migrate`: SQLite's and the filesystem's errors
    as a StoreError naming the file (MigrationError as it is)."""
    with _file_errors(path):
        return open_and_migrate(path)


def backup_database(path: Path, copy: Path) -> None:
    """A consistent copy through SQLite's backup API (other processes may go on writing);
    an existing file at `copy` is not overwritten."""
    if copy.exists():
        raise StoreError(f"{copy}: already exists; choose another backup path")
    with _file_errors(path):
        source = sqlite3.connect(read_only_uri(path), uri=True)
        try:
            copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            target = sqlite3.connect(copy)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()


@contextlib.contextmanager
def _file_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: {exc}") from exc


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
    connection = sqlite3.connect(read_only_uri(path), uri=True)
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return connection


def read_only_uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"


def inspect_schema(path: Path) -> SchemaState:
    """The file's schema against this code's migrations, read without writing anything."""
    connection = read_only(path)
    try:
        return schema_state(connection, load_migrations())
    finally:
        connection.close()


def open_for(path: Path, opening: Opening) -> SchemaState:
    """The file's schema once it is ready to be opened as `opening` says: migrated (only
    SERVE_MIGRATING does), or refused with SchemaTooOld or SchemaTooNew. A serving bridge
    gets a newer schema it cannot use back as it is (it reports it and waits)."""
    label = str(path)
    if not path.exists() or path.stat().st_size == 0:
        if not opening.migrates:
            if not path.exists() and not opening.serves:
                raise DatabaseMissing(f"{path}: no such database")
            latest = load_migrations()[-1].version
            raise SchemaTooOld(label, SchemaState(0, latest))
        latest = open_and_migrate(path)
        return SchemaState(latest, latest)
    if opening.serves:
        prepare_database_file(path)  # a file the bridge cannot write is refused at start
    state = inspect_schema(path)
    if state.older:
        if not opening.migrates:
            raise SchemaTooOld(label, state)
        open_and_migrate(path)
        return inspect_schema(path)
    if not state.usable and not opening.serves:
        raise SchemaTooNew(label, state)
    return state


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

    state: SchemaState
    plan: str  # what `migrate` would do (bridge.migrate.plan)
    problem: str | None


def check_database(path: Path) -> DatabaseReport:
    """The schema version against this code's, what migrating would do, and any corruption
    found (StoreError when the file cannot be read at all)."""
    migrations = load_migrations()
    with _file_errors(path):
        connection = read_only(path)
        try:
            state = schema_state(connection, migrations)
        except sqlite3.DatabaseError as exc:
            return DatabaseReport(SchemaState(0, migrations[-1].version), "", str(exc))
        finally:
            connection.close()
        return DatabaseReport(state, plan(state, migrations), integrity_problem(path, full=True))


__all__ = [
    "BUSY_TIMEOUT_MS",
    "DatabaseReport",
    "FileIdentity",
    "IntegrityCheck",
    "backup_database",
    "check_database",
    "file_identity",
    "file_problem",
    "inspect_schema",
    "integrity_problem",
    "migrate_file",
    "open_and_migrate",
    "open_for",
    "prepare_database_file",
    "read_only",
    "read_only_uri",
]
