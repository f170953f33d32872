"""The store on SQLite (`[store] path`): one file, for one bridge.

One writer connection, which commits the turns that finish together in one transaction
(bridge.store.group_commit); reads go through connections of their own (WAL lets them read
while a write is under way), so a large read never waits for a write and a write never waits
for a read. Each connection is an aiosqlite connection that runs whole transactions or reads
in its own thread (bridge.store.database). `synchronous` comes from the config (FULL by
default: a commit is on disk before response.completed is sent).

A background check reads every page soon after start; corruption it (or any statement)
finds stops all writes and shows on /readyz, as does the file being deleted or replaced
while the bridge runs. A turn the file cannot take (locked past write_timeout, a full disk)
waits in the spool until it can (bridge.store.health). Statements that fail raise
StoreUnavailable (StoreRejected for a refused row), never sqlite3's own errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from bridge.migrate import Migration, MigrationError, SchemaState, load_migrations, schema_state
from bridge.records import TurnRecord
from bridge.store import lookups, sqlite_driver
from bridge.store.database import Connection, Connections, Work
from bridge.store.errors import DatabaseMoved, StoreCorrupt, StoreError
from bridge.store.files import (
    FileIdentity,
    IntegrityCheck,
    file_identity,
    file_problem,
    open_for,
)
from bridge.store.group_commit import GroupCommit
from bridge.store.operations import StoreOperations
from bridge.store.protocol import Opening
from bridge.store.spool import Spool
from bridge.store.sqlite_driver import is_busy, is_corruption, store_error
from bridge.store.statements import SQLITE, Query

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long /readyz's probe waits for a write to be able to begin.
PROBE_SECONDS = 1.0
# The WAL is copied into the database by a connection of its own once it holds this much,
# so no turn's commit waits for a checkpoint (SQLite's automatic one runs in the commit).
CHECKPOINT_BYTES = 4 * 1024 * 1024
# Pages given back per incremental_vacuum step of a prune.
VACUUM_PAGES = 200
VACUUM_STEPS = 100_000


class SQLiteStore(StoreOperations):
    """Async access to the database file; create with `await SQLiteStore.open(path)`."""

    dialect: ClassVar = SQLITE

    def __init__(
        self,
        connections: Connections,
        path: Path,
        write_timeout: float,
        *,
        schema: SchemaState,
        spool: Spool | None,
        read_only: bool,
        identity: FileIdentity,
    ) -> None:
        super().__init__(str(path), schema, spool)
        self.path = path
        self.read_only = read_only
        self._connections = connections
        self._readers: asyncio.Queue[Connection] = asyncio.Queue()
        for reader in connections.readers:
            self._readers.put_nowait(reader)
        self._migrations: list[Migration] = load_migrations()
        self._turns = GroupCommit(
            self.label, self._write_raw, self.health.check_usable, write_timeout
        )
        # When the writer's current work began (None: it is idle), for /readyz; and how
        # many of its works have committed.
        self._write_started: float | None = None
        self._writes_done = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._wal = Path(f"{path}-wal")
        # What is wrong with the file, once found; nothing is written after that.
        self.corruption: str | None = None
        # The file opened, and what happened to it once it is no longer at `path` (deleted
        # or replaced while running); nothing is written to it after that either.
        self._identity = identity
        self.moved: str | None = None
        self._check: asyncio.Task[None] | None = None
        # Writes wait for the first integrity check: nothing goes on top of a damaged file.
        self._checked = asyncio.Event()

    @classmethod
    async def open(
        cls,
        path: Path,
        synchronous: str = "full",
        *,
        check: bool = True,
        write_timeout: float = 10.0,
        opening: Opening = Opening.SERVE_MIGRATING,
        spool: Spool | None = None,
    ) -> SQLiteStore:
        """Open as `opening` says (creating and migrating only for SERVE_MIGRATING);
        StoreError names the file if it fails.

        With `check`, every page is read in the background (see check_integrity).
        """
        try:
            schema = await asyncio.to_thread(open_for, path, opening)
            identity = await asyncio.to_thread(file_identity, path)
        except (MigrationError, sqlite3.Error, OSError) as exc:
            raise StoreError(f"{path}: {exc}") from exc
        read_only = opening.read_only
        try:
            connections = await Connections.open(path, synchronous, read_only=read_only)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from exc
        if spool is not None and not read_only:
            await spool.open()
        store = cls(
            connections,
            path,
            write_timeout,
            schema=schema,
            spool=None if read_only else spool,
            read_only=read_only,
            identity=identity,
        )
        if check:
            store._check = asyncio.create_task(store.check_integrity())
        else:
            store._checked.set()
        store._start_serving(opening)
        return store

    async def _close_connections(self) -> None:
        await self.health.close()
        if self._check is not None:
            self._check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._check
        await self._close_writes()
        await self._turns.close()
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        with contextlib.suppress(sqlite3.Error):
            if self.corruption is None and not self.read_only and self.health.schema.usable:
                await self._connections.writer.run(_checkpoint, "TRUNCATE")
        await self._connections.close()

    # -- health -------------------------------------------------------------------------

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

    async def probe_write(self) -> str | None:
        """Whether a write could start now (None: it could), tried on a connection of its
        own; answers within about PROBE_SECONDS, whatever the writer is waiting for."""
        if self.corruption is not None:
            return self.corruption
        if self.moved is not None:
            return self.moved
        if self._write_started is not None:
            waited = time.monotonic() - self._write_started
            if waited > PROBE_SECONDS:
                return f"a write has waited {waited:.0f}s (the database is locked or slow)"
        if not self._checked.is_set():
            return None  # being checked; writes wait for it
        writer = self._connections.writer
        if writer.in_transaction:
            # The writer has the lock: the file takes writes, and a probe would only wait
            # behind the bridge's own write (which, with the loop busy, can hold it longer
            # than the probe waits, and /readyz said "locked" under load).
            return None
        done = self._writes_done
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                moved = await self._connections.probe.run(_probe_write, self.path, self._identity)
        except TimeoutError:
            return "the database did not answer within a second"
        except (sqlite3.Error, ValueError) as exc:
            if is_busy(exc) and (writer.in_transaction or self._writes_done != done):
                return None  # the lock was the bridge's own writer's, which wrote
            return f"not writable: {exc}"
        if moved is not None:
            self._moved(moved)
        return self.moved

    def _moved(self, problem: str) -> None:
        if self.moved is None:
            log.error(
                "%s. Nothing more is written to it (turns wait in the spool, or say store: "
                "false without one; other writes fail); restart the bridge to open the "
                "database at that path again.",
                problem,
            )
        self.moved = problem

    async def read_schema(self) -> SchemaState:
        """The file's schema version as it is now (the health task reads it)."""
        try:
            return await self._read_raw(schema_state, self._migrations)
        except (sqlite3.Error, ValueError) as exc:
            raise store_error(self.label, exc) from exc

    # -- writes (in the writer's thread) ------------------------------------------------

    async def _write(self, make: Callable[[], Query[T]]) -> T:
        """The query `make()` builds, as one transaction: StoreUnavailable (or StoreRejected)
        when it fails, SchemaTooNew at once when the schema is not usable."""
        self.health.check_usable()
        try:
            return await self._write_raw(sqlite_driver.run_in_transaction, make())
        except (sqlite3.Error, ValueError) as exc:
            self.health.noticed()
            raise store_error(self.label, exc) from exc

    async def _write_turn(self, record: TurnRecord, base: tuple[str, int] | None) -> None:
        await self._turns.write(record, base)

    async def _write_raw(self, work: Work[..., T], *args: Any) -> T:
        """`work(connection, ...)` in the writer's thread, once the file is known sound."""
        await self._checked.wait()
        if self.corruption is not None:
            raise StoreCorrupt(self.corruption)
        if self.moved is not None:
            raise DatabaseMoved(self.moved)
        path, identity = self.path, self._identity

        def where_opened(db: sqlite3.Connection) -> T:
            # Checked in the writer's thread, with the write: a file deleted or replaced
            # since would lose it.
            moved = file_problem(path, identity)
            if moved is not None:
                raise DatabaseMoved(moved)
            return work(db, *args)

        self._write_started = self._write_started or time.monotonic()
        try:
            done = await self._connections.writer.run(where_opened)
        except DatabaseMoved as exc:
            self._moved(str(exc))
            raise
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                self._corrupted(str(exc))
            raise
        finally:
            self._write_started = None
            self._checkpoint_if_large()
        self._writes_done += 1
        return done

    def _checkpoint_if_large(self) -> None:
        """Start a checkpoint on its own connection once the WAL is large (see
        CHECKPOINT_BYTES); writes go on meanwhile."""
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        try:
            size = self._wal.stat().st_size
        except OSError:
            return
        if size >= CHECKPOINT_BYTES:
            self._checkpointing = asyncio.create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            await self._connections.checkpointer.run(_checkpoint, "PASSIVE")
        except sqlite3.Error as exc:
            log.warning("checkpoint of %s failed: %s", self.path, exc)

    async def prune(self, *, max_age_days: float, max_size_mb: float) -> int:
        """Retention (bridge.store.retention), then free pages given back to the filesystem,
        VACUUM_PAGES at a time."""
        deleted = await super().prune(max_age_days=max_age_days, max_size_mb=max_size_mb)
        for _ in range(VACUUM_STEPS):
            try:
                if await self._write_raw(_vacuum_step):
                    break
            except (sqlite3.Error, ValueError) as exc:
                raise store_error(self.label, exc) from exc
            await asyncio.sleep(0)  # let waiting turn writes in
        return deleted

    # -- background runs: one process per file runs them -------------------------------

    async def claim_run(self, response_id: str) -> None:
        """A background run starts here (nothing to claim: no other process runs them)."""

    async def release_run(self, response_id: str) -> None:
        """A background run has ended here."""

    async def listen_for_cancels(self) -> None:
        """Cancels from other bridges: there are none on SQLite."""

    async def ask_to_cancel(self, response_id: str) -> None:
        """Ask the bridge running `response_id` to cancel it: none other on SQLite."""

    async def fail_interrupted(self, message: str, keep: Collection[str] = ()) -> list[str]:
        """Mark failed the background responses left running but those in `keep` (this
        process's own runs): one process uses a SQLite file, so the rest were left by a
        process that stopped. A read first: most calls find none and write nothing."""
        left = [rid for rid in await self._read(lookups.running()) if rid not in keep]
        return await self._fail(left, message)

    # -- reads (in the readers' threads) ------------------------------------------------

    async def _read(self, query: Query[T]) -> T:
        """`query` on a reader: StoreUnavailable when it fails, SchemaTooNew at once when
        the schema is not usable."""
        self.health.check_usable()
        try:
            return await self._read_raw(sqlite_driver.run, query)
        except (sqlite3.Error, ValueError) as exc:
            self.health.noticed()
            raise store_error(self.label, exc) from exc

    async def _read_raw(self, work: Work[..., T], *args: Any) -> T:
        reader = await self._readers.get()
        try:
            return await reader.run(work, *args)
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                self._corrupted(str(exc))
            raise
        finally:
            self._readers.put_nowait(reader)


def _probe_write(db: sqlite3.Connection, path: Path, identity: FileIdentity) -> str | None:
    """Whether a write could begin; what happened to the file, if it is not there."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("ROLLBACK")
    return file_problem(path, identity)


def _checkpoint(db: sqlite3.Connection, mode: str) -> None:
    db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()


def _vacuum_step(db: sqlite3.Connection) -> bool:
    """Give up to VACUUM_PAGES free pages back; True when none is left."""
    # As a script: a plain execute steps the pragma once, which frees a single page.
    db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
    return int(db.execute("PRAGMA freelist_count").fetchone()[0]) == 0
