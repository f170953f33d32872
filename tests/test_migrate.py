"""Schema migrations: a blank file migrated, a newer database refused, the installed package."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import create_app
from bridge.config_load import parse_config
from bridge.exit_codes import Exit
from bridge.migrate import (
    MigrationError,
    SchemaState,
    load_migrations,
    migrate,
    migrations_source,
    plan,
)
from bridge.records import ReasoningRecord, StoredContent, TurnRecord
from bridge.store import SchemaTooNew
from bridge.store.files import open_and_migrate, prepare_database_file
from bridge.store.sqlite import SQLiteStore
from tests.processes import BridgeProcess

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 60.0  # seconds for a command that should exit by itself
BUILD_TIMEOUT = 300.0  # seconds for `pip wheel` of the project
SIDE_FILES = ("-wal", "-shm", "-journal")

# The schema the migrations create, written out so that a change to it is deliberate.
# PRAGMA table_info rows: (cid, name, type, notnull, dflt_value, pk).
EXPECTED_COLUMNS = {
    "blobs": [
        (0, "hash", "BLOB", 0, None, 1),
        (1, "body", "BLOB", 1, None, 0),
    ],
    "conversation_items": [
        (0, "conversation_id", "TEXT", 1, None, 1),
        (1, "position", "INTEGER", 1, None, 2),
        (2, "item_id", "TEXT", 1, None, 0),
        (3, "created_at", "INTEGER", 1, None, 0),
        (4, "body", "BLOB", 1, None, 0),
    ],
    "conversations": [
        (0, "id", "TEXT", 0, None, 1),
        (1, "client", "TEXT", 1, None, 0),
        (2, "created_at", "INTEGER", 1, None, 0),
        (3, "updated_at", "INTEGER", 1, None, 0),
        (4, "metadata", "BLOB", 1, None, 0),
        (5, "next_position", "INTEGER", 1, "0", 0),
    ],
    "input_items": [
        (0, "response_id", "TEXT", 1, None, 1),
        (1, "position", "INTEGER", 1, None, 2),
        (2, "item_id", "TEXT", 1, None, 0),
        (3, "body", "BLOB", 1, None, 0),
    ],
    "output_items": [
        (0, "item_id", "TEXT", 1, None, 1),
        (1, "response_id", "TEXT", 1, None, 2),
        (2, "position", "INTEGER", 1, None, 0),
    ],
    "reasoning": [
        (0, "id", "INTEGER", 0, None, 1),
        (1, "response_id", "TEXT", 1, None, 0),
        (2, "created_at", "INTEGER", 1, None, 0),
        (3, "text", "TEXT", 1, None, 0),
        (4, "details", "BLOB", 0, None, 0),
    ],
    "reasoning_keys": [
        (0, "client", "TEXT", 1, None, 1),
        (1, "scope", "TEXT", 1, None, 2),
        (2, "kind", "TEXT", 1, None, 3),
        (3, "value", "TEXT", 1, None, 4),
        (4, "reasoning_id", "INTEGER", 1, None, 0),
    ],
    "responses": [
        (0, "id", "TEXT", 0, None, 1),
        (1, "created_at", "INTEGER", 1, None, 0),
        (2, "model", "TEXT", 1, None, 0),
        (3, "status", "TEXT", 1, None, 0),
        (4, "previous_response_id", "TEXT", 0, None, 0),
        (5, "stored", "INTEGER", 1, None, 0),
        (6, "deleted", "INTEGER", 1, "0", 0),
        (7, "client", "TEXT", 0, None, 0),
        (8, "scope", "TEXT", 0, None, 0),
        (9, "session_id", "TEXT", 0, None, 0),
        (10, "thread_id", "TEXT", 0, None, 0),
        (11, "input_tokens", "INTEGER", 1, "0", 0),
        (12, "output_tokens", "INTEGER", 1, "0", 0),
        (13, "input_base", "TEXT", 0, None, 0),
        (14, "input_offset", "INTEGER", 1, "0", 0),
        (15, "input_count", "INTEGER", 1, "0", 0),
        (16, "input_hash", "BLOB", 0, None, 0),
        (17, "request", "BLOB", 0, None, 0),
        (18, "response", "BLOB", 0, None, 0),
        (19, "tools_hash", "BLOB", 0, None, 0),
    ],
    "response_events": [
        (0, "response_id", "TEXT", 0, None, 1),
        (1, "frames", "BLOB", 1, None, 0),
    ],
    "schema_migrations": [
        (0, "version", "INTEGER", 0, None, 1),
        (1, "name", "TEXT", 1, None, 0),
        (2, "applied_at", "INTEGER", 1, None, 0),
        (3, "compatible_from", "INTEGER", 0, None, 0),
    ],
}
LATEST = 7  # the number of files in migrations/
# Per table: index name -> (unique, origin, partial, indexed columns in order).
EXPECTED_INDEXES = {
    "blobs": {
        "sqlite_autoindex_blobs_1": (1, "pk", 0, ["hash"]),
    },
    "conversation_items": {
        "conversation_items_item": (1, "c", 0, ["conversation_id", "item_id"]),
        "sqlite_autoindex_conversation_items_1": (1, "pk", 0, ["conversation_id", "position"]),
    },
    "conversations": {
        "conversations_updated_at": (0, "c", 0, ["updated_at"]),
        "sqlite_autoindex_conversations_1": (1, "pk", 0, ["id"]),
    },
    "input_items": {
        "input_items_item": (0, "c", 0, ["item_id", "response_id"]),
        "sqlite_autoindex_input_items_1": (1, "pk", 0, ["response_id", "position"]),
    },
    "output_items": {
        "output_items_response": (0, "c", 0, ["response_id"]),
        "sqlite_autoindex_output_items_1": (1, "pk", 0, ["item_id", "response_id"]),
    },
    "reasoning": {
        "reasoning_created_at": (0, "c", 0, ["created_at"]),
        "reasoning_response": (0, "c", 0, ["response_id"]),
    },
    "reasoning_keys": {
        "reasoning_keys_reasoning": (0, "c", 0, ["reasoning_id"]),
        "sqlite_autoindex_reasoning_keys_1": (1, "pk", 0, ["client", "scope", "kind", "value"]),
    },
    "responses": {
        "responses_created_at": (0, "c", 0, ["created_at"]),
        "responses_input_base": (0, "c", 1, ["input_base"]),
        "responses_input_hash": (0, "c", 1, ["input_hash"]),
        "responses_running": (0, "c", 1, ["status"]),
        "responses_session": (0, "c", 0, ["session_id", "created_at"]),
        "responses_thread": (0, "c", 0, ["thread_id", "created_at"]),
        "responses_tools": (0, "c", 1, ["tools_hash"]),
        "sqlite_autoindex_responses_1": (1, "pk", 0, ["id"]),
    },
    "response_events": {
        "sqlite_autoindex_response_events_1": (1, "pk", 0, ["response_id"]),
    },
    "schema_migrations": {},  # INTEGER PRIMARY KEY is the rowid: no index
}

WIDGETS = "CREATE TABLE widgets (id INTEGER PRIMARY KEY, label TEXT NOT NULL);\n"


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """An autocommit connection (as migrate() requires), closed on exit."""
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        yield connection


def table_names(connection: sqlite3.Connection) -> list[str]:
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    ).fetchall()
    return [name for (name,) in rows]


def table_names_of(db: Path) -> list[str]:
    with connect(db) as connection:
        return table_names(connection)


def migration_rows(connection: sqlite3.Connection) -> list[tuple[int, str, int]]:
    return connection.execute(
        "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
    ).fetchall()


def indexes(
    connection: sqlite3.Connection, table: str
) -> dict[str, tuple[int, str, int, list[str]]]:
    found = {}
    for _, name, unique, origin, partial in connection.execute(f"PRAGMA index_list({table})"):
        columns = [row[2] for row in connection.execute(f"PRAGMA index_info({name})")]
        found[name] = (unique, origin, partial, columns)
    return found


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql, encoding="utf-8")
    return directory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def side_files(db: Path) -> list[str]:
    """The -wal, -shm and -journal files next to `db` that exist."""
    return [suffix for suffix in SIDE_FILES if Path(f"{db}{suffix}").exists()]


def fingerprint(db: Path) -> tuple[str, int, list[str]]:
    """What must not change when a database is refused: bytes, mtime, side files."""
    return hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns, side_files(db)


def newer_database(path: Path, journal_mode: str, version: int = 99) -> Path:
    """A database a later responses-bridge wrote: today's schema plus migration `version`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with connect(path) as connection:
        connection.execute(f"PRAGMA journal_mode = {journal_mode}")
        migrate(connection)
        connection.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)",
            (version,),
        )
    # File times advance in coarse ticks: let one pass so a later write shows in the mtime.
    time.sleep(0.05)
    return path


def latest_version() -> int:
    return load_migrations()[-1].version


def assert_names_newer(message: str, current: int, latest: int) -> None:
    assert "newer" in message
    assert re.search(rf"\b{current}\b", message), message
    assert re.search(rf"\b{latest}\b", message), message


# A blank database


def test_blank_database_gets_exactly_the_initial_schema(tmp_path: Path) -> None:
    db = tmp_path / "blank.db"
    with connect(db) as connection:
        version = migrate(connection)

        assert version == LATEST
        assert table_names(connection) == sorted(EXPECTED_COLUMNS)
        for table, columns in EXPECTED_COLUMNS.items():
            assert connection.execute(f"PRAGMA table_info({table})").fetchall() == columns, table
            assert indexes(connection, table) == EXPECTED_INDEXES[table], table
        others = connection.execute(
            "SELECT type, name FROM sqlite_master WHERE type NOT IN ('table', 'index')"
        ).fetchall()
        assert others == []  # no views, no triggers
        rows = migration_rows(connection)
    assert [(v, name) for v, name, _ in rows] == [
        (1, "initial"),
        (2, "reasoning_details"),
        (3, "conversation_state_v2"),
        (4, "output_item_index"),
        (5, "background_events"),
        (6, "conversations"),
        (7, "schema_compatibility"),
    ]
    assert abs(rows[0][2] - time.time()) < 60  # applied_at: unix seconds, now


def test_open_and_migrate_makes_a_wal_database(tmp_path: Path) -> None:
    db = tmp_path / "state" / "bridge.db"

    assert open_and_migrate(db) == LATEST

    with connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert table_names(connection) == sorted(EXPECTED_COLUMNS)


def test_open_and_migrate_makes_a_database_with_incremental_vacuum(tmp_path: Path) -> None:
    db = tmp_path / "state" / "bridge.db"

    open_and_migrate(db)

    with connect(db) as connection:
        assert connection.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # 2: incremental


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "twice.db"
    with connect(db) as connection:
        first = migrate(connection)
        rows = migration_rows(connection)
        schema = connection.execute("SELECT type, name, sql FROM sqlite_master").fetchall()

        second = migrate(connection)

        assert second == first == latest_version()
        assert migration_rows(connection) == rows
        assert connection.execute("SELECT type, name, sql FROM sqlite_master").fetchall() == schema


def test_open_and_migrate_twice_returns_the_same_version(tmp_path: Path) -> None:
    db = tmp_path / "bridge.db"

    assert open_and_migrate(db) == open_and_migrate(db) == latest_version()

    with connect(db) as connection:
        assert [v for v, _, _ in migration_rows(connection)] == list(range(1, LATEST + 1))


# The repository's migrations


def test_the_shipped_migrations_are_all_loaded_in_order() -> None:
    on_disk = sorted(path.name for path in (REPO / "migrations").glob("*.sql"))

    loaded = load_migrations()

    # A misnamed file (0002-add.sql, 2_add.sql) would be silently skipped: none may exist.
    assert [f"{m.version:04d}_{m.name}.sql" for m in loaded] == on_disk
    assert [m.version for m in loaded] == list(range(1, len(on_disk) + 1))
    assert loaded[0].sql == (REPO / "migrations" / "0001_initial.sql").read_text("utf-8")


def test_the_source_tree_reads_the_top_level_migrations_directory() -> None:
    source = Path(str(migrations_source()))

    assert source.resolve() == (REPO / "migrations").resolve()


# load_migrations over a directory of files


def test_load_migrations_reads_files_in_version_order(tmp_path: Path) -> None:
    directory = write_migrations(
        tmp_path / "m",
        {"0002_second.sql": "SELECT 2;", "0001_first.sql": "SELECT 1;", "0003_third.sql": ""},
    )

    loaded = load_migrations(directory)

    assert [(m.version, m.name, m.sql) for m in loaded] == [
        (1, "first", "SELECT 1;"),
        (2, "second", "SELECT 2;"),
        (3, "third", ""),
    ]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["0001_a.sql", "0003_c.sql"], "0002_*.sql"),
        (["0002_b.sql"], "0001_*.sql"),
        (["0001_a.sql", "0001_b.sql"], "0002_*.sql"),
    ],
    ids=["gap", "no-first", "duplicate"],
)
def test_load_migrations_refuses_a_gap(tmp_path: Path, names: list[str], expected: str) -> None:
    directory = write_migrations(tmp_path / "m", dict.fromkeys(names, "SELECT 1;"))

    with pytest.raises(MigrationError, match="not contiguous") as raised:
        load_migrations(directory)

    assert f"expected {expected}" in str(raised.value)


def test_load_migrations_ignores_files_not_named_like_a_migration(tmp_path: Path) -> None:
    ignored = [
        "README.md",
        "notes.txt",
        "0002-dash.sql",
        "2_short.sql",
        "00002_long.sql",
        "0002_Upper.sql",
        "0002_space name.sql",
        "0002_backup.sql.bak",
        "0002_shout.SQL",
        ".0002_hidden.sql",
    ]
    directory = write_migrations(
        tmp_path / "m", {"0001_only.sql": "SELECT 1;", **dict.fromkeys(ignored, "broken (")}
    )

    loaded = load_migrations(directory)

    assert [(m.version, m.name) for m in loaded] == [(1, "only")]


def test_load_migrations_refuses_an_empty_directory(tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "empty", {"README.md": "nothing here"})

    with pytest.raises(MigrationError, match="no migrations found") as raised:
        load_migrations(directory)

    assert str(directory) in str(raised.value)


# Applying migrations


def test_an_upgrade_applies_only_the_missing_migrations_in_order(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    db = tmp_path / "upgrade.db"
    # 0002 depends on 0001's table, and is written to disk first.
    write_migrations(
        directory, {"0002_label_index.sql": "CREATE INDEX w_label ON widgets (label);"}
    )
    write_migrations(directory, {"0001_widgets.sql": WIDGETS})
    with connect(db) as connection:
        assert migrate(connection, load_migrations(directory)[:1]) == 1
        connection.execute("INSERT INTO widgets (label) VALUES ('kept')")

        # 0001 again would fail: CREATE TABLE widgets without IF NOT EXISTS.
        assert migrate(connection, load_migrations(directory)) == 2

        assert [(v, name) for v, name, _ in migration_rows(connection)] == [
            (1, "widgets"),
            (2, "label_index"),
        ]
        assert connection.execute("SELECT label FROM widgets").fetchall() == [("kept",)]
        assert "w_label" in indexes(connection, "widgets")


def test_a_failing_migration_is_rolled_back_whole(tmp_path: Path) -> None:
    directory = write_migrations(
        tmp_path / "m",
        {
            "0001_widgets.sql": WIDGETS,
            "0002_broken.sql": (
                "CREATE TABLE gadgets (id INTEGER PRIMARY KEY);\n"
                "INSERT INTO widgets (label) VALUES ('from 0002');\n"
                "CREATE TABLE broken (;\n"
            ),
        },
    )
    db = tmp_path / "failing.db"
    with connect(db) as connection:
        with pytest.raises(MigrationError, match=r"0002_broken\.sql") as raised:
            migrate(connection, load_migrations(directory))

        assert "syntax error" in str(raised.value)
        assert not connection.in_transaction
        assert [(v, name) for v, name, _ in migration_rows(connection)] == [(1, "widgets")]
        assert table_names(connection) == ["schema_migrations", "widgets"]
        assert connection.execute("SELECT count(*) FROM widgets").fetchone() == (0,)

        # Once the file is fixed, the same database takes it.
        (directory / "0002_broken.sql").write_text("CREATE TABLE gadgets (id INTEGER);\n")
        assert migrate(connection, load_migrations(directory)) == 2
    assert table_names_of(db) == ["gadgets", "schema_migrations", "widgets"]


def test_a_failing_first_migration_leaves_version_zero(tmp_path: Path) -> None:
    directory = write_migrations(
        tmp_path / "m", {"0001_broken.sql": WIDGETS + "INSERT INTO nowhere VALUES (1);\n"}
    )
    db = tmp_path / "first.db"
    with connect(db) as connection:
        with pytest.raises(MigrationError, match=r"0001_broken\.sql.*no such table: nowhere"):
            migrate(connection, load_migrations(directory))

        assert table_names(connection) == ["schema_migrations"]
        assert migration_rows(connection) == []


# A database newer than the code


def test_migrate_refuses_a_newer_database_and_leaves_it_alone(tmp_path: Path) -> None:
    db = newer_database(tmp_path / "newer.db", "delete")
    before = fingerprint(db)

    with connect(db) as connection, pytest.raises(MigrationError) as raised:
        migrate(connection)

    assert_names_newer(str(raised.value), 99, latest_version())
    assert fingerprint(db) == before
    assert before[2] == []


@pytest.mark.parametrize(
    "journal_mode",
    ["wal", "delete"],
)
def test_open_and_migrate_refuses_a_newer_database_unmodified(
    tmp_path: Path, journal_mode: str
) -> None:
    db = newer_database(tmp_path / "state" / "newer.db", journal_mode)
    before = fingerprint(db)

    with pytest.raises(MigrationError) as raised:
        open_and_migrate(db)

    assert_names_newer(str(raised.value), 99, latest_version())
    assert fingerprint(db) == before


# Modes of the directory, the database and SQLite's side files


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask for one test; modes must not depend on it."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def a_turn() -> TurnRecord:
    return TurnRecord(
        id="resp_migrate_test",
        created_at=int(time.time()),
        model="local-model",
        status="completed",
        previous_response_id=None,
        session_id="session-1",
        thread_id=None,
        input_tokens=3,
        output_tokens=5,
        client="",
        scope="s:session-1",
        content=StoredContent(
            request=b'{"model":"local-model"}',
            response=b'{"id":"resp_migrate_test"}',
            tools=None,
            tools_hash=None,
            items=[],
            encoded=[],
            item_digests=[],
        ),
        reasoning=ReasoningRecord(
            "thinking",
            b'[{"type": "reasoning.text"}]',
            [("s:session-1", "call", "call_1"), ("s:session-1", "turn", "turn-fp")],
        ),
    )


async def write_and_check_side_files(db: Path) -> None:
    """Open the store, write a turn, and check the -wal/-shm modes while it is open."""
    store = await SQLiteStore.open(db)
    try:
        await store.save_turn(a_turn())
        assert await store.get_response("resp_migrate_test") == b'{"id":"resp_migrate_test"}'
        for suffix in ("-wal", "-shm"):
            side = Path(f"{db}{suffix}")
            assert side.exists(), suffix  # WAL mode: both exist while a connection is open
            assert mode(side) == 0o600, suffix
    finally:
        await store.close()


async def test_store_open_creates_a_private_directory_and_file(tmp_path: Path, umask: int) -> None:
    db = tmp_path / "not" / "yet" / "there" / "bridge.db"

    await write_and_check_side_files(db)

    assert mode(db.parent) == 0o700
    assert mode(db) == 0o600
    with connect(db) as connection:
        assert [v for v, _, _ in migration_rows(connection)] == list(range(1, LATEST + 1))


# The command line


def write_config(tmp_path: Path, db: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[store]
path = '{db}'

[providers.local]
base_url = "http://127.0.0.1:9/v1"

[models."local-model"]
provider = "local"
""",
        encoding="utf-8",
    )
    return config


def run_bridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_cli_migrate_creates_a_private_database(tmp_path: Path) -> None:
    db = tmp_path / "store" / "bridge.db"
    config = write_config(tmp_path, db)

    result = await asyncio.to_thread(run_bridge, "migrate", "--config", str(config))

    assert result.returncode == Exit.OK, result.stderr
    assert result.stdout.strip() == f"{db}: schema version {latest_version()}"
    assert mode(db.parent) == 0o700
    assert mode(db) == 0o600
    with connect(db) as connection:
        assert table_names(connection) == sorted(EXPECTED_COLUMNS)
    await write_and_check_side_files(db)


def older_database(path: Path) -> Path:
    """A database of release 0.6.0/0.7.0: the migrations up to 6."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with connect(path) as connection:
        connection.execute("PRAGMA journal_mode = wal")
        migrate(connection, load_migrations()[:6])
    time.sleep(0.05)
    return path


# Commands that only read open the file read-only: SQLite may leave its -wal and -shm files
# beside it (empty), the file itself is what must not change.


def test_cli_serve_with_migrate_never_refuses_an_older_database(tmp_path: Path) -> None:
    db = older_database(tmp_path / "store" / "bridge.db")
    config = write_config(tmp_path, db)
    config.write_text(config.read_text().replace("[store]\n", '[store]\nmigrate = "never"\n'))
    before = fingerprint(db)[:2]
    args = ["serve", "--config", str(config), "--port", str(free_port())]
    result = run_bridge(*args)
    assert result.returncode == Exit.STORE, result.stderr
    assert "schema version 6" in result.stderr
    assert "run `responses-bridge migrate`" in result.stderr
    assert fingerprint(db)[:2] == before
    checked = run_bridge("check-config", "--config", str(config))
    assert checked.returncode == Exit.STORE
    assert "run `responses-bridge migrate`" in checked.stderr
    assert fingerprint(db)[:2] == before


def test_check_config_says_what_serve_will_do_to_the_schema(tmp_path: Path) -> None:
    db = older_database(tmp_path / "store" / "bridge.db")
    config = write_config(tmp_path, db)
    before = fingerprint(db)[:2]
    checked = run_bridge("check-config", "--config", str(config))
    assert checked.returncode == Exit.OK, checked.stderr
    first = checked.stdout.splitlines()[0]
    assert f"schema version 6; `serve` migrates it to {LATEST} at start" in first
    assert fingerprint(db)[:2] == before
    with connect(db) as connection:
        migrate(connection)
    with_migration(db, LATEST + 1, LATEST + 1)
    before = fingerprint(db)[:2]
    newer = run_bridge("check-config", "--config", str(config))
    assert newer.returncode == Exit.STORE
    assert_names_newer(newer.stderr, LATEST + 1, LATEST)
    assert fingerprint(db)[:2] == before


def test_cli_migrate_refuses_a_newer_database(tmp_path: Path) -> None:
    db = newer_database(tmp_path / "store" / "bridge.db", "wal")
    config = write_config(tmp_path, db)
    before = fingerprint(db)

    result = run_bridge("migrate", "--config", str(config))

    assert result.returncode == Exit.STORE
    assert result.stdout == ""
    assert result.stderr.startswith("responses-bridge: database: ")
    assert_names_newer(result.stderr, 99, latest_version())
    assert fingerprint(db) == before


async def test_cli_serve_reports_a_newer_database_and_leaves_it_alone(tmp_path: Path) -> None:
    """A bridge that finds a schema it cannot use serves on: /readyz names both versions,
    requests that need the store get a 503 in the error shape, nothing is written."""
    db = newer_database(tmp_path / "store" / "bridge.db", "wal")
    config = write_config(tmp_path, db)
    before = fingerprint(db)
    bridge = BridgeProcess(config, free_port(), log=tmp_path / "serve.log", log_level="info")
    try:
        await bridge.start()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{bridge.url}/readyz") as ready:
                assert ready.status == 503
                problem = (await ready.json())["database"]
            assert_names_newer(problem, 99, latest_version())
            async with session.get(f"{bridge.url}/healthz") as health:
                assert (await health.json())["schema"] == {
                    "database": 99,
                    "bridge": latest_version(),
                }
            for method, path, body in (
                ("POST", "/v1/responses", {"model": "local-model", "input": "hi"}),
                ("GET", "/v1/responses/resp_1", None),
                ("POST", "/v1/conversations", {}),
            ):
                async with session.request(method, f"{bridge.url}{path}", json=body) as answer:
                    assert answer.status == 503, await answer.text()
                    error = (await answer.json())["error"]
                    assert error["type"] == "server_error"
                    assert_names_newer(error["message"], 99, latest_version())
            async with session.get(f"{bridge.url}/v1/models") as models:
                assert models.status == 200  # what needs no store still works
        assert await bridge.terminate() == Exit.OK
    finally:
        await bridge.stop()
    assert fingerprint(db) == before, (tmp_path / "serve.log").read_text()


def with_migration(database: Path, version: int, compatible_from: int | None) -> None:
    """A later release's migration recorded in the database (its own bookkeeping)."""
    with connect(database) as connection:
        connection.execute(
            "INSERT INTO schema_migrations (version, name, applied_at, compatible_from) "
            "VALUES (?, 'later', 0, ?)",
            (version, compatible_from),
        )


@pytest.mark.parametrize(
    ("later", "usable"),
    [
        ([(8, 7)], True),  # expand only: this release keeps working
        ([(8, 7), (9, 7)], True),
        ([(8, 7), (9, 8)], False),  # 9 needs code that knows 8
        ([(8, None)], False),  # recorded without compatibility: needs code that knows it
        ([(8, 8)], False),
    ],
)
async def test_a_newer_database_is_used_when_its_migrations_say_so(
    tmp_path: Path, later: list[tuple[int, int | None]], usable: bool
) -> None:
    db = tmp_path / "bridge.db"
    with connect(db) as connection:
        migrate(connection)
    for version, compatible_from in later:
        with_migration(db, version, compatible_from)
    store = await SQLiteStore.open(db, check=False)
    try:
        assert store.health.schema.usable is usable
        assert store.schema_version == later[-1][0]
        if usable:
            assert await store.write_problem() is None
            assert await store.list_responses() == []
        else:
            assert_names_newer(await store.write_problem() or "", later[-1][0], LATEST)
            with pytest.raises(SchemaTooNew):
                await store.list_responses()
    finally:
        await store.close()
    with connect(db) as connection:  # and never migrated back or changed
        assert [row[0] for row in migration_rows(connection)][-len(later) :] == [
            version for version, _ in later
        ]


def test_compatible_from_comes_from_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "0001_first.sql").write_text(WIDGETS)
    (directory / "0002_expand.sql").write_text(
        "-- compatible_from: 1\nALTER TABLE widgets ADD COLUMN colour TEXT;\n"
    )
    (directory / "0003_contract.sql").write_text("ALTER TABLE widgets DROP COLUMN colour;\n")
    loaded = load_migrations(directory)
    assert [m.compatible_from for m in loaded] == [1, 1, 3]
    assert "keep working" in plan(SchemaState(1, 2), loaded[:2])
    told = plan(SchemaState(1, 3), loaded)
    assert "stop the bridges of schema 1" in told and "0003_contract" in told
    (directory / "0004_wrong.sql").write_text("-- compatible_from: 9\nSELECT 1;\n")
    with pytest.raises(MigrationError, match="after its own version"):
        load_migrations(directory)


def test_the_shipped_compatibility_migrations_keep_the_previous_release_working() -> None:
    """0007 and its PostgreSQL twin only add a column: bridges of the schema before keep
    working (the rolling upgrade of docs/upgrading.md depends on it)."""
    sqlite_7 = load_migrations()[6]
    assert (sqlite_7.version, sqlite_7.compatible_from) == (7, 6)
    postgres_2 = load_migrations(migrations_source() / "postgres")[1]
    assert (postgres_2.version, postgres_2.compatible_from) == (2, 1)


# The installed package


def source_copy(destination: Path) -> Path:
    """The work tree without build output, so a stale build/ cannot leak into the wheel."""
    shutil.copytree(
        REPO,
        destination,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    return destination


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and unpacked, as `pip install .` would lay it out."""
    missing = [name for name in ("setuptools", "wheel") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(
            f"building the wheel needs {' and '.join(missing)} in {sys.prefix}: "
            "pip install '.[test]'"
        )
    root = tmp_path_factory.mktemp("installed")
    source = source_copy(root / "source")
    wheels = root / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    build = subprocess.run(
        [*command, "--disable-pip-version-check", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(f"pip wheel failed ({build.returncode}):\n{build.stdout}\n{build.stderr}")
    (wheel,) = wheels.glob("responses_bridge-*.whl")
    site = root / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


# Run with the unpacked wheel first on sys.path and the work tree nowhere on it.
INSTALLED_CHECK = """
import json, sys
from pathlib import Path
import bridge, bridge.migrate
from bridge.migrate import load_migrations, migrations_source
from bridge.store.files import open_and_migrate

version = open_and_migrate(Path(sys.argv[1]))
print(json.dumps({
    "bridge": bridge.__file__,
    "migrate": bridge.migrate.__file__,
    "source": str(migrations_source()),
    "files": sorted(m.name for m in load_migrations()),
    "version": version,
}))
"""


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Python with `site` on PYTHONPATH; -P keeps the working directory off sys.path."""
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run(
        [sys.executable, "-P", "-s", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def test_the_wheel_ships_every_migration(installed: Path) -> None:
    shipped = sorted(path.name for path in (installed / "bridge" / "migrations").glob("*.sql"))

    assert shipped == sorted(path.name for path in (REPO / "migrations").glob("*.sql"))


def test_the_installed_package_finds_and_applies_its_migrations(
    installed: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    db = tmp_path / "state" / "installed.db"
    repo_files = sorted((REPO / "migrations").glob("*.sql"))

    result = run_installed(installed, elsewhere, "-c", INSTALLED_CHECK, str(db))

    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    package = installed / "bridge"
    assert Path(found["bridge"]).parent == package
    assert Path(found["migrate"]).parent == package
    assert Path(found["source"]).resolve() == package / "migrations"
    assert len(found["files"]) == len(repo_files)
    assert found["version"] == len(repo_files)
    with connect(db) as connection:
        assert table_names(connection) == sorted(EXPECTED_COLUMNS)
        assert len(migration_rows(connection)) == len(repo_files)


def test_the_installed_command_migrates(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    db = tmp_path / "store" / "bridge.db"
    config = write_config(tmp_path, db)

    result = run_installed(installed, elsewhere, "-m", "bridge", "migrate", "--config", str(config))

    assert result.returncode == Exit.OK, result.stderr
    count = len(list((REPO / "migrations").glob("*.sql")))
    assert result.stdout.strip() == f"{db}: schema version {count}"


def test_two_processes_migrating_one_blank_file_both_succeed(tmp_path: Path) -> None:
    """`serve` and `migrate` started together on a new database must not trip each other."""
    db = tmp_path / "state" / "bridge.db"
    barrier = threading.Barrier(4)
    results: list[int | BaseException] = []

    def run() -> None:
        barrier.wait(timeout=10)
        try:
            results.append(open_and_migrate(db))
        except BaseException as exc:  # collected and asserted below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [LATEST] * 4
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT version FROM schema_migrations").fetchall()
    assert rows == [(version,) for version in range(1, LATEST + 1)]


def test_switching_to_wal_waits_for_a_writer_holding_the_new_file(tmp_path: Path) -> None:
    """Another connection mid-write on a file still in rollback-journal mode: SQLite answers
    the WAL switch "database is locked" at once (no busy handler, to avoid a deadlock), which
    made one of two processes starting together fail now and then."""
    db = tmp_path / "bridge.db"
    prepare_database_file(db)
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE elsewhere (x)")
    other.execute("BEGIN")
    other.execute("SELECT * FROM elsewhere").fetchall()
    other.execute("INSERT INTO elsewhere VALUES (1)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        assert open_and_migrate(db) == LATEST
    finally:
        release.join(timeout=10)
        other.close()
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_upgrade_from_version_1_keeps_the_reasoning_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with connect(db) as connection:
        assert migrate(connection, load_migrations()[:1]) == 1
        connection.execute(
            "INSERT INTO reasoning_by_call (call_id, reasoning, response_id, created_at) "
            "VALUES ('call_old', 'kept', 'resp_old', 1)"
        )
        assert migrate(connection, load_migrations()[:2]) == 2
        row = connection.execute(
            "SELECT reasoning, details FROM reasoning_by_call WHERE call_id = 'call_old'"
        ).fetchone()
    assert row == ("kept", None)


async def test_a_later_release_migrating_under_a_running_bridge_is_noticed_on_a_store_error(
    tmp_path: Path, aiohttp_client: Any, state_directory: Path
) -> None:
    """A later release contracts what this one reads while it runs: the request that hits
    the change gets a 503 in the error shape (never a 500), and from then on the bridge
    names both versions, without waiting for its periodic check or a /readyz."""
    client = await aiohttp_client(create_app(parse_config("", "test-config.toml")))
    database = state_directory / "bridge.db"
    assert (await client.get("/v1/responses/resp_1")).status == 404
    with connect(database) as connection:
        connection.execute("ALTER TABLE responses RENAME TO responses_v8")
    with_migration(database, LATEST + 1, LATEST + 1)
    hit = await client.get("/v1/responses/resp_1")
    assert hit.status == 503
    assert (await hit.json())["error"]["type"] == "server_error"
    for _ in range(50):  # the health task reads the schema at once (bounded wait)
        after = await client.get("/v1/responses/resp_1")
        message = (await after.json())["error"]["message"]
        if "newer" in message:
            break
        await asyncio.sleep(0.05)
    assert after.status == 503
    assert_names_newer(message, LATEST + 1, LATEST)
