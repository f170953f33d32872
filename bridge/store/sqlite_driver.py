"""Queries (bridge.store.statements) run on a sqlite3 connection, in the calling thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

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
