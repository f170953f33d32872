"""Queries (bridge.store.statements) run on a sqlite3 connection, in the calling thread; and
sqlite3's errors read for what they mean to the store, and turned into its own."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from bridge.store.errors import StoreError, StoreRejected, StoreUnavailable
from bridge.store.statements import Execute, ExecuteMany, Fetch, InsertKey, Query, Statement

T = TypeVar("T")


def run(db: sqlite3.Connection, query: Query[T]) -> T:
    """Every statement of `query`, one after the other; its answer."""
    result: Any = None
    try:
        while True:
            result = _statement(db, query.send(result))
    except StopIteration as stop:
        answer: T = stop.value
        return answer
    finally:
        query.close()


def _statement(db: sqlite3.Connection, statement: Statement) -> Any:
    match statement:
        case Fetch(sql, params):
            return db.execute(sql, params).fetchall()
        case Execute(sql, params):
            return db.execute(sql, params).rowcount
        case ExecuteMany(sql, rows):
            db.executemany(sql, rows)
            return None
        case InsertKey(sql, params):
            return db.execute(sql, params).lastrowid


def run_in_transaction(db: sqlite3.Connection, query: Query[T]) -> T:
    """`query` as one transaction (BEGIN IMMEDIATE: the write lock from the start)."""
    with transaction(db):
        return run(db, query)


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE, then COMMIT, or ROLLBACK if anything went wrong."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        # SQLite has already rolled back after some errors (a full disk, for one).
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


# SQLite's words for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB).
_CORRUPTION_MARKERS = ("malformed", "not a database", "corrupt")
# What a statement may raise besides sqlite3.Error: a value SQLite cannot bind (an integer
# past 64 bits raises OverflowError, text with lone surrogates UnicodeEncodeError).
BIND_ERRORS = (OverflowError, ValueError)


def is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(
        marker in str(exc).lower() for marker in _CORRUPTION_MARKERS
    )


def is_busy(exc: BaseException) -> bool:
    """Another connection holds the lock (past the busy timeout)."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def store_error(label: str, exc: Exception) -> StoreError:
    """An error of a statement as the store's own: a refused row (a constraint, a value
    the database cannot hold, or anything but SQLite's: trying again fails the same way),
    or the database unusable now."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return StoreRejected(f"{label}: {exc}")
    if isinstance(exc, sqlite3.Error | ValueError):
        return StoreUnavailable(f"{label}: {exc}")
    return StoreRejected(f"{label}: the turn could not be written: {type(exc).__name__}: {exc}")
