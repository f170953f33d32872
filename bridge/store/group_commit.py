"""SQLite's turn writes, committed together: the turns that arrive while a commit is under way
are written in the next transaction, one sync to disk for all of them.

The writers of a commit are answered in the order their turns arrived, one per loop step,
while the next commit is already under way: answered all at once, the streams they end
resumed together, their clients came back together and their next turns landed in one
commit again (issue 25: 4.2 turns per commit on average, up to 13, at 16 streams).

Each turn is written in a savepoint of its own, so one turn's failure fails only that turn
(unless the whole transaction is lost, e.g. a full disk). While another process holds the
database locked, a group is tried again until write_timeout (the turns' clients get
heartbeats meanwhile). Every turn taken gets its answer whatever happens: written, or its
error as the store's own (bridge.store.sqlite_driver).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.records import TurnRecord
from bridge.store import sqlite_driver
from bridge.store.errors import StoreError, StoreUnavailable
from bridge.store.sqlite_driver import BIND_ERRORS, is_busy, is_corruption, store_error, transaction
from bridge.store.turn_writes import insert_turn

log = logging.getLogger(__name__)

# Most turns committed in one transaction (they arrived while the previous commit ran).
MAX_GROUP = 64
# How long a group waits before it is tried again on a locked database.
BUSY_RETRY = 0.2
Queued = tuple[TurnRecord, "tuple[str, int] | None", "asyncio.Future[None]"]
# Runs `work(connection, ...)` in the writer's thread (SQLiteStore._write_raw).
WriteRaw = Callable[..., Awaitable[Any]]


def insert_group(db: sqlite3.Connection, group: list[Queued]) -> list[Exception | None]:
    """One transaction for the group; each turn in a savepoint of its own, so a turn that
    fails is rolled back alone. Returns each turn's error (None: written)."""
    results: list[Exception | None] = []
    with transaction(db):
        if len(group) == 1:
            record, base, _ = group[0]
            sqlite_driver.run(db, insert_turn(record, base))
            return [None]
        for record, base, _ in group:
            db.execute("SAVEPOINT turn")
            try:
                sqlite_driver.run(db, insert_turn(record, base))
            except (sqlite3.Error, *BIND_ERRORS) as exc:
                if not db.in_transaction or is_corruption(exc):
                    raise  # the whole transaction is gone
                db.execute("ROLLBACK TO turn")
                results.append(exc)
            else:
                results.append(None)
            db.execute("RELEASE turn")
    return results


class GroupCommit:
    """The queue of turns waiting for the writer, and the task that commits them."""

    def __init__(
        self,
        label: str,
        write_raw: WriteRaw,
        check_usable: Callable[[], None],
        write_timeout: float,
    ) -> None:
        self._label = label
        self._write_raw = write_raw
        self._check_usable = check_usable
        self._write_timeout = write_timeout
        self._queued: list[Queued] = []
        self._committer: asyncio.Task[None] | None = None
        # Committed (or failed) turns whose writers are still to be answered, oldest first.
        self._answers: collections.deque[tuple[asyncio.Future[None], Exception | None]] = (
            collections.deque()
        )
        self._answering: asyncio.Handle | None = None

    async def write(self, record: TurnRecord, base: tuple[str, int] | None) -> None:
        """The turn written with the others queued meanwhile (StoreError if it was not)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((record, base, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        await future

    async def close(self) -> None:
        """Wait for the turns queued to be written, and answer every writer."""
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        if self._answering is not None:
            self._answering.cancel()
            self._answering = None
        while self._answers:
            self._answer_next()

    async def _commit_queued(self) -> None:
        """Write queued turns in transactions of up to MAX_GROUP turns until none is left."""
        group: list[Queued] = []
        try:
            while self._queued:
                group, self._queued = self._queued[:MAX_GROUP], self._queued[MAX_GROUP:]
                results = await self._write_group(group)
                self._answers.extend(
                    (future, error) for (_, _, future), error in zip(group, results, strict=True)
                )
                group = []
                if self._answering is None:
                    self._answer_in_turn()
        finally:
            # Only a cancellation (the store closing) leaves turns here: none waits forever.
            for _, _, future in [*group, *self._queued]:
                if not future.done():
                    future.set_exception(StoreUnavailable(f"{self._label}: the store was closed"))
            self._queued = []

    def _answer_in_turn(self) -> None:
        """Answer the oldest writer waiting, and the next one at the loop's next step."""
        self._answer_next()
        self._answering = None
        if self._answers:
            self._answering = asyncio.get_running_loop().call_soon(self._answer_in_turn)

    def _answer_next(self) -> None:
        while self._answers:
            future, error = self._answers.popleft()
            if future.done():  # its writer was cancelled
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(store_error(self._label, error))
            return

    async def _write_group(self, group: list[Queued]) -> list[Exception | None]:
        """Each turn's error (None: written), tried again while the database is locked."""
        deadline = time.monotonic() + self._write_timeout
        while True:
            try:
                self._check_usable()
                return list(await self._write_raw(insert_group, group))
            except sqlite3.OperationalError as exc:
                if is_busy(exc) and time.monotonic() < deadline:
                    await asyncio.sleep(BUSY_RETRY)
                    continue
                return [exc] * len(group)
            except Exception as exc:  # the committer's boundary: every turn gets an answer
                if not isinstance(exc, sqlite3.Error | ValueError | StoreError):
                    log.exception("writing %d turns failed inside the bridge", len(group))
                return [exc] * len(group)
