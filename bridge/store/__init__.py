"""The SQLite store: responses, their input items, and reasoning indexed by scope.

One writer connection behind one lock, one transaction per turn; reads go through
connections of their own (WAL lets them read while a write is under way), so a large read
never waits for a write and a write never waits for a read. `synchronous` comes from the
config (FULL by default: a commit is on disk before response.completed is sent).

A background check reads every page soon after start; corruption it (or any statement)
finds stops all writes and shows on /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bridge.migrate import MigrationError
from bridge.records import TurnRecord
from bridge.store import reads, retention, writes
from bridge.store.files import (
    BUSY_TIMEOUT_MS,
    DatabaseMissing,
    IntegrityCheck,
    StoreError,
    open_and_migrate,
)
from bridge.store.reads import (
    Chain,
    ChainNotFound,
    ItemNotFound,
    ItemsPage,
    ReasoningQuery,
    ResponseRow,
)
from bridge.store.replays import ReplayCache
from bridge.translate.reasoning import Reasoning

log = logging.getLogger(__name__)

READERS = 2
WAL_SIZE_LIMIT = 1024 * 1024
# Most turns committed in one transaction (they arrived while the previous commit ran).
MAX_GROUP = 64
# save_turn's default: find the earlier response whose input this one extends.
FIND_BASE: Any = object()
# SQLite's words for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB).
_CORRUPTION_MARKERS = ("malformed", "not a database", "corrupt")

__all__ = [
    "Chain",
    "ChainNotFound",
    "DatabaseMissing",
    "ItemNotFound",
    "ItemsPage",
    "ReasoningQuery",
    "ResponseRow",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "open_and_migrate",
]


class StoreCorrupt(sqlite3.DatabaseError):
    """The database is damaged; nothing more is written to it."""


def _is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(
        marker in str(exc).lower() for marker in _CORRUPTION_MARKERS
    )


async def _connect(path: Path, *pragmas: str) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        for pragma in (f"busy_timeout = {BUSY_TIMEOUT_MS}", *pragmas):
            await db.execute(f"PRAGMA {pragma}")
    except BaseException:
        await db.close()
        raise
    return db


class Store:
    """Async access to the database; create with `await Store.open(path)`."""

    def __init__(
        self, writer: aiosqlite.Connection, readers: list[aiosqlite.Connection], path: Path
    ) -> None:
        self._db = writer
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers = readers
        for reader in readers:
            self._readers.put_nowait(reader)
        self.path = path
        self._write_lock = asyncio.Lock()
        # Turn writes run as tasks of their own, so a client that disconnects (which
        # cancels its handler) cannot cut a transaction in half; close() waits for them.
        self._pending: set[asyncio.Task[None]] = set()
        # The error of the last turn write, until a write succeeds again (for /readyz).
        self.last_write_error: str | None = None
        # What is wrong with the file, once found; nothing is written after that.
        self.corruption: str | None = None
        self._check: asyncio.Task[None] | None = None
        # Writes wait for the first integrity check: nothing goes on top of a damaged file.
        self._checked = asyncio.Event()
        # Recent conversations' stored inputs, to match replays without digesting them.
        self.replays = ReplayCache()
        # Turns waiting for the committer, which writes them in one transaction.
        self._queued: list[tuple[TurnRecord, tuple[str, int] | None, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path, synchronous: str = "full", *, check: bool = True) -> Store:
        """Open (creating and migrating as needed); StoreError names the file if it fails.

        With `check`, every page is read in the background (see check_integrity).
        """
        try:
            await asyncio.to_thread(open_and_migrate, path)
        except (MigrationError, sqlite3.Error, OSError) as exc:
            raise StoreError(f"{path}: {exc}") from exc
        # aiosqlite logs every statement with its parameters (message content) at debug
        # level; content is logged only where [server] log_bodies asks for it.
        logging.getLogger("aiosqlite").setLevel(logging.INFO)
        connections: list[aiosqlite.Connection] = []
        try:
            connections.append(
                await _connect(
                    path,
                    "journal_mode = WAL",
                    f"synchronous = {_synchronous(synchronous)}",
                    "foreign_keys = ON",
                    # After a checkpoint the WAL file is cut back to this size instead of
                    # staying at its largest.
                    f"journal_size_limit = {WAL_SIZE_LIMIT}",
                )
            )
            for _ in range(READERS):
                connections.append(await _connect(path, "query_only = ON"))
        except BaseException:
            for connection in connections:
                await connection.close()
            raise
        store = cls(connections[0], connections[1:], path)
        if check:
            store._check = asyncio.create_task(store.check_integrity())
        else:
            store._checked.set()
        return store

    async def close(self) -> None:
        if self._check is not None:
            self._check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._check
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        async with self._write_lock:
            await self._db.close()
        for reader in self._all_readers:
            await reader.close()

    # -- health -------------------------------------------------------------------

    async def check_integrity(self) -> None:
        """Read every page (PRAGMA quick_check) on a connection of its own, off the loop."""
        started = time.monotonic()
        check = IntegrityCheck(self.path)
        try:
            problem = await asyncio.to_thread(check.run)
        except asyncio.CancelledError:
            check.cancel()  # the thread returns at once instead of reading on
            raise
        except (sqlite3.Error, OSError) as exc:
            problem = str(exc)
        if problem is not None:
            self._corrupted(problem)
        else:
            log.debug("integrity check of %s: ok in %.2fs", self.path, time.monotonic() - started)
        self._checked.set()

    def _corrupted(self, problem: str) -> None:
        if self.corruption is None:
            log.error(
                "the database %s is corrupt: %s. Nothing more is written to it; stop the "
                "bridge, keep a copy of the file, and see `responses-bridge migrate --check`.",
                self.path,
                problem,
            )
        self.corruption = f"database corrupt: {problem}"

    async def write_problem(self) -> str | None:
        """Why the database cannot take writes now (None: it can)."""
        if self.corruption is not None:
            return self.corruption
        if not self._checked.is_set():
            return None  # being checked; writes wait for it
        try:
            async with self._write_lock:
                await self._db.execute("BEGIN IMMEDIATE")
                await self._db.execute("ROLLBACK")
        except (sqlite3.Error, ValueError) as exc:
            return f"not writable: {exc}"
        return self.last_write_error

    # -- writes -------------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The one writer: the lock, BEGIN IMMEDIATE, and COMMIT or ROLLBACK."""
        await self._checked.wait()
        async with self._write_lock:
            if self.corruption is not None:
                raise StoreCorrupt(self.corruption)
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException as exc:
                # SQLite has already rolled back after some errors (a full disk, for one).
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                if _is_corruption(exc):
                    self._corrupted(str(exc))
                raise
            await self._db.execute("COMMIT")

    async def save_turn_shielded(self, record: TurnRecord, *, base: Any = FIND_BASE) -> None:
        """save_turn, finished even if the caller is cancelled meanwhile."""
        task = asyncio.create_task(self._save_noting_errors(record, base))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.shield(task)

    async def _save_noting_errors(self, record: TurnRecord, base: Any) -> None:
        try:
            await self.save_turn(record, base=base)
        except sqlite3.Error as exc:
            self.last_write_error = f"the last write failed: {exc}"
            raise
        self.last_write_error = None

    async def save_turn(self, record: TurnRecord, *, base: Any = FIND_BASE) -> None:
        """Write one turn, only the input items new since its base (the caller's find_base
        answer, else looked up here; the write checks it still holds).

        Turns that arrive while a write is under way are committed together, each in a
        savepoint of its own: one sync to disk for all of them, and one turn's failure
        fails only that turn (unless the whole transaction is lost, e.g. a full disk).
        """
        content = record.content
        if base is FIND_BASE:
            base = None
            if content is not None and len(content.items) > 1:
                base = await self.find_base(record.client, content.item_digests)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((record, base, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        await future

    async def _commit_queued(self) -> None:
        """Write queued turns in transactions of up to MAX_GROUP turns until none is left."""
        while self._queued:
            group, self._queued = self._queued[:MAX_GROUP], self._queued[MAX_GROUP:]
            try:
                async with self._transaction() as db:
                    if len(group) == 1:
                        record, base, _ = group[0]
                        await writes.insert_turn(db, record, base)
                    else:
                        await self._insert_each(db, group)
            except (sqlite3.Error, ValueError) as exc:
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in group:
                    if not future.done():
                        future.set_result(None)

    @staticmethod
    async def _insert_each(
        db: aiosqlite.Connection,
        group: list[tuple[TurnRecord, tuple[str, int] | None, asyncio.Future[None]]],
    ) -> None:
        """Each turn in a savepoint: a turn that fails is rolled back alone."""
        for record, base, future in group:
            await db.execute("SAVEPOINT turn")
            try:
                await writes.insert_turn(db, record, base)
            except sqlite3.Error as exc:
                if not db.in_transaction or _is_corruption(exc):
                    raise  # the whole transaction is gone
                await db.execute("ROLLBACK TO turn")
                future.set_exception(exc)
            await db.execute("RELEASE turn")

    async def delete_response(self, response_id: str, *, client: str | None = None) -> bool:
        """Delete a stored response (any of the client's; None: any response, for the CLI).

        True if it existed. Its items go at once unless later responses share them.
        """
        async with self._transaction() as db:
            deleted = await writes.mark_deleted(
                db, response_id, client=client, stored_only=client is not None
            )
        if deleted:
            await retention.collect_tombstones(self._transaction)
        return deleted

    async def prune(self, *, max_age_days: float, max_size_mb: float) -> int:
        """Delete what is older than max_age_days, then the oldest until under max_size_mb,
        in short steps. The newest response is never deleted for size. Returns how many
        responses were deleted."""
        cutoff = int(time.time() - max_age_days * 86400)
        deleted = await retention.delete_where(
            self._transaction,
            "SELECT id FROM responses WHERE created_at < ? AND NOT deleted "
            f"ORDER BY created_at LIMIT {retention.BATCH}",
            (cutoff,),
        )
        await retention.collect_tombstones(self._transaction)
        deleted += await retention.delete_to_size(self._transaction, int(max_size_mb * 1024 * 1024))
        await retention.collect_tombstones(self._transaction)
        await retention.delete_orphans(self._transaction, cutoff)
        await self._vacuum()
        return deleted

    async def _vacuum(self) -> None:
        """Give free pages back to the filesystem, a bounded number per step."""
        for _ in range(retention.MAX_STEPS):
            async with self._write_lock:
                if self.corruption is not None:
                    return
                # As a script: a plain execute steps the pragma once, which frees one page.
                await self._db.executescript(
                    f"PRAGMA incremental_vacuum({retention.VACUUM_PAGES});"
                )
                free = await self._fetchone("PRAGMA freelist_count", ())
            if not free or free[0] == 0:
                return
            await asyncio.sleep(0)

    async def _fetchone(self, query: str, params: Sequence[Any]) -> Any:
        async with self._db.execute(query, params) as cursor:
            return await cursor.fetchone()

    # -- reads (on the read connections) -----------------------------------------

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        reader = await self._readers.get()
        try:
            yield reader
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                self._corrupted(str(exc))
            raise
        finally:
            self._readers.put_nowait(reader)

    async def get_response(self, response_id: str, client: str | None = None) -> bytes | None:
        """The stored response object JSON, as it was served (None: not this client's, or
        not stored)."""
        async with self._read() as db:
            return await reads.response_json(db, response_id, client)

    async def input_items(
        self,
        response_id: str,
        client: str | None = None,
        *,
        limit: int = 20,
        descending: bool = True,
        after: str | None = None,
    ) -> ItemsPage | None:
        """One page of a stored response's input items; ItemNotFound for an unknown after."""
        async with self._read() as db:
            return await reads.input_page(
                db, response_id, client, limit=limit, descending=descending, after=after
            )

    async def chain(self, response_id: str, client: str | None = None) -> Chain:
        """The items of a previous_response_id chain, oldest first; ChainNotFound if a link
        is missing."""
        async with self._read() as db:
            return await reads.chain(db, response_id, client)

    async def find_base(self, client: str, digests: Sequence[bytes]) -> tuple[str, int] | None:
        async with self._read() as db:
            return await reads.find_base(db, client, digests)

    async def find_reasoning(
        self, client: str, conversation: str | None, queries: Sequence[ReasoningQuery]
    ) -> list[Reasoning | None]:
        async with self._read() as db:
            return await reads.find_reasoning(db, client, conversation, queries)

    async def list_responses(
        self, *, limit: int = 50, session_id: str | None = None, thread_id: str | None = None
    ) -> list[ResponseRow]:
        async with self._read() as db:
            return await reads.list_responses(
                db, limit=limit, session_id=session_id, thread_id=thread_id
            )

    async def export(self, response_id: str) -> dict[str, Any] | None:
        async with self._read() as db:
            return await reads.export(db, response_id)


def _synchronous(level: str) -> str:
    value = level.upper()
    if value not in ("FULL", "NORMAL", "EXTRA"):
        raise ValueError(f"unknown synchronous level {level!r}")
    return value
