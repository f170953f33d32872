"""Queries (bridge.store.statements) run on an asyncpg connection, one statement at a time;
and asyncpg's errors read for what they mean to the store, and turned into its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from bridge.store.errors import StoreError, StoreRejected, StoreUnavailable
from bridge.store.statements import Execute, ExecuteMany, Fetch, InsertKey, Query, Statement

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own or one lent by the pool.
    Connection = asyncpg.Connection | PoolConnectionProxy[Any]

T = TypeVar("T")
# What a lost or refused connection raises: worth trying again once the database is back.
TRANSIENT = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    TimeoutError,
)
# What the database refuses for the rows themselves: writing them again will not help.
_REJECTED = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError)


async def run(db: Connection, query: Query[T]) -> T:
    """Every statement of `query`, each awaited in turn; its answer."""
    result: Any = None
    try:
        while True:
            try:
                statement = query.send(result)
            except StopIteration as stop:
                answer: T = stop.value
                return answer
            result = await _statement(db, statement)
    finally:
        query.close()


async def _statement(db: Connection, statement: Statement) -> Any:
    match statement:
        case Fetch(sql, params):
            return await db.fetch(numbered(sql), *params)
        case Execute(sql, params):
            status = await db.execute(numbered(sql), *params)
            # The command tag: "UPDATE 3", "INSERT 0 1"; its last word is the row count.
            return int(status.rsplit(" ", 1)[-1])
        case ExecuteMany(sql, rows):
            await db.executemany(numbered(sql), rows)
            return None
        case InsertKey(sql, params, key):
            return await db.fetchval(f"{numbered(sql)} RETURNING {key}", *params)


def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's $1, $2, ... (the store's SQL has no `?` in its
    literals)."""
    first, *rest = sql.split("?")
    return first + "".join(f"${number}{part}" for number, part in enumerate(rest, 1))


def store_error(label: str, exc: BaseException) -> StoreError:
    """An error of a statement as the store's own: a refused row, or the database unusable
    now."""
    if isinstance(exc, _REJECTED):
        return StoreRejected(f"{label}: {exc}")
    return StoreUnavailable(f"{label}: {exc}")
