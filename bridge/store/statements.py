"""The store's SQL as queries that both backends run: written once, run two ways.

A query is a generator that yields statements and is sent each one's result
(`rows = yield from fetch(sql, params)`), so it does no I/O of its own. SQLite runs a whole
query in its connection's thread without coming back to the event loop
(bridge.store.sqlite_driver: one thread hop per transaction however many statements);
PostgreSQL awaits each statement on an asyncpg connection (bridge.store.postgres_driver).

The SQL is written with `?` placeholders, in what both dialects accept (upserts with
ON CONFLICT, true and false); the little that still differs is in Dialect.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
# A row as both drivers give it: indexable by column position.
Row = Sequence[Any]


@dataclass(frozen=True, slots=True)
class Fetch:
    """A statement whose rows are wanted (a list of rows)."""

    sql: str
    params: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class Execute:
    """A statement that changes rows (how many it changed)."""

    sql: str
    params: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class ExecuteMany:
    """One statement for each of `rows` (nothing back)."""

    sql: str
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class InsertKey:
    """An INSERT of one row whose integer key the database assigns (the key back)."""

    sql: str
    params: Sequence[Any]
    key: str = "id"


Statement = Fetch | Execute | ExecuteMany | InsertKey
# A query that answers T once its statements have run.
Query = Generator[Statement, Any, T]


def fetch(sql: str, params: Sequence[Any] = ()) -> Query[list[Row]]:
    found: list[Row] = yield Fetch(sql, params)
    return found


def fetch_one(sql: str, params: Sequence[Any] = ()) -> Query[Row | None]:
    found = yield from fetch(sql, params)
    return found[0] if found else None


def fetch_value(sql: str, params: Sequence[Any] = ()) -> Query[Any]:
    """The first column of the first row (None: no row)."""
    row = yield from fetch_one(sql, params)
    return None if row is None else row[0]


def execute(sql: str, params: Sequence[Any] = ()) -> Query[int]:
    changed: int = yield Execute(sql, params)
    return changed


def execute_many(sql: str, rows: Sequence[Sequence[Any]]) -> Query[None]:
    if rows:
        yield ExecuteMany(sql, rows)


def insert_key(sql: str, params: Sequence[Any], key: str = "id") -> Query[int]:
    assigned: int = yield InsertKey(sql, params, key)
    return assigned


def marks(count: int) -> str:
    """`count` placeholders for an IN list."""
    return ",".join("?" * count)


def binary(value: bytes | str | memoryview) -> bytes:
    """A BLOB or bytea column's value as bytes (SQLite gives TEXT back as str)."""
    return value.encode() if isinstance(value, str) else bytes(value)


@dataclass(frozen=True, slots=True)
class Dialect:
    """What the two databases' SQL still do differently."""

    name: str
    # What orders responses created in the same second, last for the newest: SQLite's rowid
    # follows the writes; PostgreSQL has none, the id is the steady order there.
    tiebreak: str


SQLITE = Dialect("sqlite", tiebreak="rowid")
POSTGRES = Dialect("postgresql", tiebreak="id")
