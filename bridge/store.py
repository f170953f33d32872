"""The SQLite store: responses, their items, and reasoning indexed for replays.

One aiosqlite connection serves the process; writes go through one lock, one transaction
per turn. WAL journal; `synchronous` from the config (FULL by default: a commit is on disk
before response.completed is sent, so nothing acknowledged is lost even on power loss).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from bridge.migrate import MigrationError, check_not_newer, load_migrations, migrate
from bridge.records import TurnRecord
from bridge.translate.reasoning import Reasoning

log = logging.getLogger(__name__)

_ITEMS = msgspec.json.Decoder(list[dict[str, Any]])

# SQLite's default limit on host parameters in one statement is 32766; stay well below.
_LOOKUP_BATCH = 500
REASONING_TABLES = ("reasoning_by_call", "reasoning_by_turn")
# Longest previous_response_id chain followed; a guard, far beyond any real conversation.
MAX_CHAIN = 100_000


class StoreError(Exception):
    """The database cannot be opened or brought up to date."""


class ChainNotFound(Exception):
    """A previous_response_id that is not stored (or not retrievable)."""

    def __init__(self, response_id: str, missing: str) -> None:
        super().__init__(response_id)
        self.response_id = response_id
        self.missing = missing


@dataclass(frozen=True, slots=True)
class ResponseRow:
    """One stored response as listed for a person at a terminal."""

    id: str
    created_at: int
    model: str
    status: str
    retrievable: bool
    session_id: str | None
    thread_id: str | None
    input_tokens: int
    output_tokens: int
    previous_response_id: str | None


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
        connection.execute("PRAGMA busy_timeout = 5000")
        check_not_newer(connection, migrations)
        if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            # Only takes effect before the first table and before the switch to WAL;
            # lets the pruner give space back with incremental_vacuum.
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        connection.execute("PRAGMA journal_mode = WAL")
        return migrate(connection, migrations)
    finally:
        connection.close()


class Store:
    """Async access to the database; create with `await Store.open(path)`."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._write_lock = asyncio.Lock()
        # Turn writes run as tasks of their own, so a client that disconnects (which
        # cancels its handler) cannot cut a transaction in half; close() waits for them.
        self._pending: set[asyncio.Task[None]] = set()
        # The error of the last turn write, until a write succeeds again (for /readyz).
        self.last_write_error: str | None = None

    @classmethod
    async def open(cls, path: Path, synchronous: str = "full") -> Store:
        """Open (creating and migrating as needed); StoreError names the file if it fails."""
        try:
            await asyncio.to_thread(open_and_migrate, path)
        except (MigrationError, sqlite3.Error, OSError) as exc:
            raise StoreError(f"{path}: {exc}") from exc
        # aiosqlite logs every statement with its parameters (message content) at debug
        # level; content is logged only where [server] log_bodies asks for it.
        logging.getLogger("aiosqlite").setLevel(logging.INFO)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {_synchronous(synchronous)}")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("PRAGMA busy_timeout = 5000")
        except BaseException:
            await db.close()
            raise
        return cls(db, path)

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        async with self._write_lock:
            await self._db.close()

    # -- writes -------------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The one writer: the lock, BEGIN IMMEDIATE, and COMMIT or ROLLBACK."""
        async with self._write_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk, for one).
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def save_turn_shielded(self, record: TurnRecord) -> None:
        """save_turn, finished even if the caller is cancelled meanwhile."""
        task = asyncio.create_task(self._save_noting_errors(record))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.shield(task)

    async def _save_noting_errors(self, record: TurnRecord) -> None:
        try:
            await self.save_turn(record)
        except sqlite3.Error as exc:
            self.last_write_error = f"the last write failed: {exc}"
            raise
        self.last_write_error = None

    async def write_problem(self) -> str | None:
        """Why the database cannot take writes now (None: it can)."""
        try:
            async with self._write_lock:
                await self._db.execute("BEGIN IMMEDIATE")
                await self._db.execute("ROLLBACK")
        except (sqlite3.Error, ValueError) as exc:
            return f"not writable: {exc}"
        return self.last_write_error

    async def save_turn(self, record: TurnRecord) -> None:
        """Write one turn (response row and reasoning indexes) in one transaction."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO responses (id, created_at, model, status, "
                "previous_response_id, retrievable, session_id, thread_id, input_tokens, "
                "output_tokens, request, input_items, output_items, response, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.created_at,
                    record.model,
                    record.status,
                    record.previous_response_id,
                    int(record.retrievable),
                    record.session_id,
                    record.thread_id,
                    record.input_tokens,
                    record.output_tokens,
                    record.request,
                    record.input_items,
                    record.output_items,
                    record.response,
                    record.size,
                ),
            )
            for table, key, rows in (
                ("reasoning_by_call", "call_id", record.reasoning_by_call),
                ("reasoning_by_turn", "fingerprint", record.reasoning_by_turn),
            ):
                if rows:
                    await db.executemany(
                        f"INSERT OR REPLACE INTO {table} "
                        f"({key}, reasoning, details, response_id, created_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [
                            (k, text, details, record.id, record.created_at)
                            for k, text, details in rows
                        ],
                    )

    async def delete_response(self, response_id: str, *, any_kind: bool = False) -> bool:
        """Delete a response and its reasoning (retrievable ones only, unless `any_kind`).

        True if it existed.
        """
        query = "DELETE FROM responses WHERE id = ?" + ("" if any_kind else " AND retrievable")
        async with self._transaction() as db:
            cursor = await db.execute(query, (response_id,))
            deleted = cursor.rowcount > 0
            if deleted:
                for table in REASONING_TABLES:
                    await db.execute(f"DELETE FROM {table} WHERE response_id = ?", (response_id,))
        return deleted

    # -- reads --------------------------------------------------------------------

    async def get_response(self, response_id: str, *, any_kind: bool = False) -> bytes | None:
        """The stored response object JSON, as it was served."""
        query = "SELECT response FROM responses WHERE id = ?" + (
            "" if any_kind else " AND retrievable"
        )
        row = await self._fetchone(query, (response_id,))
        return bytes(row[0]) if row else None

    async def input_items(self, response_id: str) -> list[dict[str, Any]] | None:
        """The input items of a retrievable response, in the order they were sent."""
        row = await self._fetchone(
            "SELECT input_items FROM responses WHERE id = ? AND retrievable", (response_id,)
        )
        return _ITEMS.decode(row[0]) if row else None

    async def chain_items(self, response_id: str) -> list[dict[str, Any]]:
        """Input and output items of a response and all its predecessors, oldest first."""
        rows = await self._db.execute_fetchall(
            "WITH RECURSIVE chain(id, previous, depth) AS ("
            " SELECT id, previous_response_id, 0 FROM responses WHERE id = ? AND retrievable"
            " UNION ALL"
            " SELECT r.id, r.previous_response_id, c.depth + 1"
            " FROM responses r JOIN chain c ON r.id = c.previous"
            f" WHERE c.depth < {MAX_CHAIN}"
            ") SELECT c.id, c.previous, r.input_items, r.output_items"
            " FROM chain c JOIN responses r ON r.id = c.id ORDER BY c.depth DESC",
            (response_id,),
        )
        rows = list(rows)
        if not rows:
            raise ChainNotFound(response_id, response_id)
        oldest_previous = rows[0][1]
        if oldest_previous is not None:
            raise ChainNotFound(response_id, oldest_previous)
        items: list[dict[str, Any]] = []
        for _, _, input_items, output_items in rows:
            items.extend(_ITEMS.decode(input_items))
            items.extend(_ITEMS.decode(output_items))
        return items

    async def find_reasoning(
        self, call_ids: Sequence[str], fingerprints: Sequence[str]
    ) -> tuple[dict[str, Reasoning], dict[str, Reasoning]]:
        """Stored reasoning by call id and by turn fingerprint, for the ids that have one."""
        by_call = await self._lookup("reasoning_by_call", "call_id", call_ids)
        by_turn = await self._lookup("reasoning_by_turn", "fingerprint", fingerprints)
        return by_call, by_turn

    async def _lookup(self, table: str, key: str, values: Sequence[str]) -> dict[str, Reasoning]:
        found: dict[str, Reasoning] = {}
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), _LOOKUP_BATCH):
            batch = unique[start : start + _LOOKUP_BATCH]
            marks = ",".join("?" * len(batch))
            rows = await self._db.execute_fetchall(
                f"SELECT {key}, reasoning, details FROM {table} WHERE {key} IN ({marks})", batch
            )
            for row in rows:
                details = _ITEMS.decode(row[2]) if row[2] is not None else None
                found[row[0]] = Reasoning(row[1], details)
        return found

    async def list_responses(
        self,
        *,
        limit: int = 50,
        session_id: str | None = None,
        thread_id: str | None = None,
    ) -> list[ResponseRow]:
        """The newest responses first, optionally of one client session or thread."""
        where: list[str] = []
        params: list[Any] = []
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if thread_id is not None:
            where.append("thread_id = ?")
            params.append(thread_id)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = await self._db.execute_fetchall(
            "SELECT id, created_at, model, status, retrievable, session_id, thread_id, "
            "input_tokens, output_tokens, previous_response_id FROM responses "
            f"{clause}ORDER BY created_at DESC, rowid DESC LIMIT ?",
            [*params, limit],
        )
        return [
            ResponseRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7], r[8], r[9])
            for r in rows
        ]

    async def export(self, response_id: str) -> dict[str, Any] | None:
        """Everything stored about one response, decoded, for `sessions export`."""
        row = await self._fetchone(
            "SELECT request, input_items, response FROM responses WHERE id = ?", (response_id,)
        )
        if row is None:
            return None
        return {
            "request": msgspec.json.decode(row[0]),
            "input_items": _ITEMS.decode(row[1]),
            "response": msgspec.json.decode(row[2]),
        }

    # -- retention ----------------------------------------------------------------

    async def prune(self, *, max_age_days: float, max_size_mb: float) -> int:
        """Delete what is older than max_age_days, then the oldest until under max_size_mb.

        The newest response is never deleted for size. Returns the number deleted.
        """
        cutoff = int(time.time() - max_age_days * 86400)
        deleted = 0
        async with self._write_lock:
            cursor = await self._db.execute("DELETE FROM responses WHERE created_at < ?", (cutoff,))
            deleted += max(cursor.rowcount, 0)
            for table in REASONING_TABLES:
                await self._db.execute(f"DELETE FROM {table} WHERE created_at < ?", (cutoff,))
            limit = int(max_size_mb * 1024 * 1024)
            # Each round deletes the oldest tenth; bounded so a pathological file cannot
            # keep the loop going.
            for _ in range(20):
                if await self._data_bytes() <= limit:
                    break
                # The newest response always stays: it may be mid-conversation.
                cursor = await self._db.execute(
                    "DELETE FROM responses WHERE id IN (SELECT id FROM responses "
                    "ORDER BY created_at, rowid LIMIT min("
                    "(SELECT count(*) FROM responses) - 1,"
                    " max(1, (SELECT count(*) FROM responses) / 10)))"
                )
                if cursor.rowcount <= 0:
                    break
                deleted += cursor.rowcount
                for table in REASONING_TABLES:
                    await self._db.execute(
                        f"DELETE FROM {table} WHERE response_id NOT IN (SELECT id FROM responses)"
                    )
            await self._db.execute("PRAGMA incremental_vacuum")
        return deleted

    async def _data_bytes(self) -> int:
        """Bytes the database holds in use: its pages less the free ones."""
        page_size = await self._fetchone("PRAGMA page_size", ())
        pages = await self._fetchone("PRAGMA page_count", ())
        free = await self._fetchone("PRAGMA freelist_count", ())
        assert page_size and pages and free
        return int(page_size[0]) * (int(pages[0]) - int(free[0]))

    async def _fetchone(self, query: str, params: Sequence[Any]) -> Any:
        async with self._db.execute(query, params) as cursor:
            return await cursor.fetchone()


def _synchronous(level: str) -> str:
    value = level.upper()
    if value not in ("FULL", "NORMAL", "EXTRA"):
        raise ValueError(f"unknown synchronous level {level!r}")
    return value
