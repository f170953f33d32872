"""The SQLite store: responses, their input items, and reasoning indexed by scope.

One writer connection, which commits the turns that finish together in one transaction;
reads go through connections of their own (WAL lets them read while a write is under way),
so a large read never waits for a write and a write never waits for a read. Each connection
runs whole transactions or reads in its own thread (bridge.store.database). `synchronous`
comes from the config (FULL by default: a commit is on disk before response.completed is
sent).

A background check reads every page soon after start; corruption it (or any statement)
finds stops all writes and shows on /readyz. A turn the file cannot take (locked past
write_timeout, a full disk) waits in the spool until it can (bridge.store.health).
Statements that fail raise StoreUnavailable (StoreRejected for a refused row), never
sqlite3's own errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from bridge.migrate import Migration, MigrationError, SchemaState, load_migrations, schema_state
from bridge.records import TurnRecord
from bridge.store import conversations, reads, retention, writes
from bridge.store.conversations import ConversationPage, ConversationRow, Item
from bridge.store.database import Connection, Work, transaction
from bridge.store.errors import (
    ChainNotFound,
    DatabaseMissing,
    DatabaseMoved,
    ItemNotFound,
    SchemaTooNew,
    SchemaTooOld,
    StoreCorrupt,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)
from bridge.store.files import (
    FileIdentity,
    IntegrityCheck,
    Opening,
    file_identity,
    file_problem,
    open_and_migrate,
    open_for,
)
from bridge.store.health import StoreHealth
from bridge.store.reads import (
    Chain,
    ItemsPage,
    ReasoningQuery,
    ResponseRow,
)
from bridge.store.replays import ReplayCache
from bridge.store.spool import Spool
from bridge.translate.reasoning import Reasoning

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")
Queued = tuple[TurnRecord, "tuple[str, int] | None", "asyncio.Future[None]"]

READERS = 2
# How long a statement of the writer waits for another process's lock before it fails (and
# the turn write is tried again until write_timeout), and /readyz's probe.
WRITER_BUSY_MS = 1000
PROBE_SECONDS = 1.0
BUSY_RETRY = 0.2
WAL_SIZE_LIMIT = 1024 * 1024
# The WAL is copied into the database by a connection of its own once it holds this much,
# so no turn's commit waits for a checkpoint (SQLite's automatic one runs in the commit).
CHECKPOINT_BYTES = 4 * 1024 * 1024
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
    "Opening",
    "ReasoningQuery",
    "ResponseRow",
    "SchemaTooNew",
    "SchemaTooOld",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "open_and_migrate",
]


def _is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(
        marker in str(exc).lower() for marker in _CORRUPTION_MARKERS
    )


# What a turn's statements may raise besides sqlite3.Error: a value SQLite cannot bind (an
# integer past 64 bits raises OverflowError, text with lone surrogates UnicodeEncodeError).
_BIND_ERRORS = (OverflowError, ValueError)


def _insert_group(db: sqlite3.Connection, group: list[Queued]) -> list[Exception | None]:
    """One transaction for the group; each turn in a savepoint of its own, so a turn that
    fails is rolled back alone. Returns each turn's error (None: written)."""
    results: list[Exception | None] = []
    with transaction(db):
        for record, base, _ in group:
            if len(group) == 1:
                writes.insert_turn(db, record, base)
                results.append(None)
                break
            db.execute("SAVEPOINT turn")
            try:
                writes.insert_turn(db, record, base)
            except (sqlite3.Error, *_BIND_ERRORS) as exc:
                if not db.in_transaction or _is_corruption(exc):
                    raise  # the whole transaction is gone
                db.execute("ROLLBACK TO turn")
                results.append(exc)
            else:
                results.append(None)
            db.execute("RELEASE turn")
    return results


def _store_error(label: str, exc: sqlite3.Error | ValueError) -> StoreError:
    """sqlite3's error as the store's own: a refused row, or the database unusable now."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return StoreRejected(f"{label}: {exc}")
    return StoreUnavailable(f"{label}: {exc}")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _probe_write(db: sqlite3.Connection, path: Path, identity: FileIdentity) -> str | None:
    """Whether a write could begin; what happened to the file, if it is not there."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("ROLLBACK")
    return file_problem(path, identity)


class Store:
    """Async access to the database; create with `await Store.open(path)`."""

    def __init__(
        self,
        writer: Connection,
        readers: list[Connection],
        checkpointer: Connection,
        probe: Connection,
        path: Path,
        write_timeout: float = 10.0,
        *,
        schema: SchemaState | None = None,
        spool: Spool | None = None,
        read_only: bool = False,
        identity: FileIdentity = (0, 0),
    ) -> None:
        self._writer = writer
        self._probe = probe
        self._write_timeout = write_timeout
        # When the writer's current work began (None: it is idle), for /readyz.
        self._write_started: float | None = None
        self._checkpointer = checkpointer
        self._checkpointing: asyncio.Task[None] | None = None
        self._wal = Path(f"{path}-wal")
        self._readers: asyncio.Queue[Connection] = asyncio.Queue()
        self._all_readers = readers
        for reader in readers:
            self._readers.put_nowait(reader)
        self.path = path
        self.read_only = read_only
        self._migrations: list[Migration] = load_migrations()
        latest = self._migrations[-1].version
        # Whether the file takes writes and its schema is usable, kept current in the
        # background; the spool of the turns it could not take.
        self.health = StoreHealth(self, str(path), schema or SchemaState(latest, latest), spool)
        # Turn writes run as tasks of their own, so a client that disconnects (which
        # cancels its handler) cannot lose a turn it was about to be told about; close()
        # waits for them.
        self._pending: set[asyncio.Task[list[str]]] = set()
        # What is wrong with the file, once found; nothing is written after that.
        self.corruption: str | None = None
        # The file opened, and what happened to it once it is no longer at `path` (deleted
        # or replaced while running); nothing is written to it after that either.
        self._identity = identity
        self.moved: str | None = None
        self._check: asyncio.Task[None] | None = None
        # Writes wait for the first integrity check: nothing goes on top of a damaged file.
        self._checked = asyncio.Event()
        # Recent conversations' stored inputs, to match replays without digesting them.
        self.replays = ReplayCache()
        # Turns waiting for the committer, which writes them in one transaction.
        self._queued: list[Queued] = []
        self._committer: asyncio.Task[None] | None = None

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
    ) -> Store:
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
        writer_pragmas = [
            f"synchronous = {_synchronous(synchronous)}",
            "foreign_keys = ON",
            # After a checkpoint the WAL file is cut back to this size instead of staying
            # at its largest.
            f"journal_size_limit = {WAL_SIZE_LIMIT}",
            "wal_autocheckpoint = 0",
            f"busy_timeout = {WRITER_BUSY_MS}",
        ]
        if not read_only:
            writer_pragmas.insert(0, "journal_mode = WAL")
        connections: list[Connection] = []
        try:
            connections.append(
                await Connection.open(path, "writer", *writer_pragmas, read_only=read_only)
            )
            connections.append(
                await Connection.open(
                    path,
                    "checkpointer",
                    f"synchronous = {_synchronous(synchronous)}",
                    read_only=read_only,
                )
            )
            connections.append(
                await Connection.open(path, "probe", "busy_timeout = 250", read_only=read_only)
            )
            for number in range(READERS):
                connections.append(
                    await Connection.open(
                        path, f"reader{number}", "query_only = ON", read_only=read_only
                    )
                )
        except BaseException as exc:
            for connection in connections:
                await connection.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{path}: {exc}") from exc
            raise
        if spool is not None and not read_only:
            await spool.open()
        store = cls(
            connections[0],
            connections[3:],
            connections[1],
            connections[2],
            path,
            write_timeout=write_timeout,
            schema=schema,
            spool=None if read_only else spool,
            read_only=read_only,
            identity=identity,
        )
        if check:
            store._check = asyncio.create_task(store.check_integrity())
        else:
            store._checked.set()
        if opening.serves:
            store.health.start()
            if not schema.usable:
                log.error("%s: %s", path, store.health.schema_problem)
        return store

    @property
    def schema_version(self) -> int:
        """The schema version the file has (as last read)."""
        return self.health.schema.version

    @property
    def last_write_error(self) -> str | None:
        return self.health.last_write_error

    async def close(self) -> None:
        await self.health.close()
        if self._check is not None:
            self._check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._check
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        with contextlib.suppress(sqlite3.Error):
            if self.corruption is None and not self.read_only and self.health.schema.usable:
                await self._writer.run(_checkpoint, "TRUNCATE")
        await self._checkpointer.close()
        await self._probe.close()
        await self._writer.close()
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
        """Why the database cannot take writes now (None: it can), for /readyz. Answers
        within about PROBE_SECONDS, whatever the writer is waiting for."""
        # The schema read again (a newer release may have migrated it meanwhile) while the
        # write is tried: together, so that /readyz answers within about PROBE_SECONDS.
        _, problem = await asyncio.gather(self.health.check_schema(), self.probe_write())
        return self.health.schema_problem or problem or self.health.last_write_error

    async def probe_write(self) -> str | None:
        """Whether a write could start now (None: it could), tried on a connection of its
        own."""
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
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                moved = await self._probe.run(_probe_write, self.path, self._identity)
        except TimeoutError:
            return "the database did not answer within a second"
        except (sqlite3.Error, ValueError) as exc:
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
            raise _store_error(str(self.path), exc) from exc

    # -- writes (in the writer's thread) ------------------------------------------------

    async def _write(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """_write_raw for everything but turns: StoreUnavailable (or StoreRejected) when it
        fails, SchemaTooNew at once when the schema is not usable."""
        self.health.check_usable()
        try:
            return await self._write_raw(work, *args, **kwargs)
        except (sqlite3.Error, ValueError) as exc:
            self.health.noticed()
            raise _store_error(str(self.path), exc) from exc

    async def _write_raw(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
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
            return work(db, *args, **kwargs)

        self._write_started = self._write_started or time.monotonic()
        try:
            return await self._writer.run(where_opened)
        except DatabaseMoved as exc:
            self._moved(str(exc))
            raise
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                self._corrupted(str(exc))
            raise
        finally:
            self._write_started = None
            self._checkpoint_if_large()

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
            await self._checkpointer.run(_checkpoint, "PASSIVE")
        except sqlite3.Error as exc:
            log.warning("checkpoint of %s failed: %s", self.path, exc)

    async def save_turn_shielded(self, record: TurnRecord, *, base: Any = FIND_BASE) -> list[str]:
        """The turn written, or kept in the spool when the file cannot take it (returns what
        is pending then); finished even if the caller is cancelled meanwhile."""
        task = asyncio.create_task(
            self.health.keep_turn(record, lambda: self.write_turn(record, base=base))
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return await asyncio.shield(task)

    async def write_turn(self, record: TurnRecord, *, base: Any = FIND_BASE) -> None:
        """save_turn, its failure as StoreUnavailable or StoreRejected."""
        try:
            await self.save_turn(record, base=base)
        except (sqlite3.Error, ValueError) as exc:
            raise _store_error(str(self.path), exc) from exc

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
        """Write queued turns in transactions of up to MAX_GROUP turns until none is left.

        While another process holds the database locked, the group is tried again until
        write_timeout has passed (the turns' clients get heartbeats meanwhile). Every turn
        taken gets its answer whatever happens here: one the database did not take (or that
        a bug kept from it) fails with its error, a StoreRejected for anything but SQLite's
        and the store's own, and its response says so."""
        group: list[Queued] = []
        try:
            while self._queued:
                group, self._queued = self._queued[:MAX_GROUP], self._queued[MAX_GROUP:]
                results = await self._write_group(group)
                for (_, _, future), error in zip(group, results, strict=True):
                    if future.done():
                        continue
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(_as_store_error(error, self.path))
                group = []
        finally:
            # Only a cancellation (the store closing) leaves turns here: none waits forever.
            for _, _, future in [*group, *self._queued]:
                if not future.done():
                    future.set_exception(StoreUnavailable(f"{self.path}: the store was closed"))
            self._queued = []

    async def _write_group(self, group: list[Queued]) -> list[Exception | None]:
        """Each turn's error (None: written), tried again while the database is locked."""
        deadline = time.monotonic() + self._write_timeout
        while True:
            try:
                self.health.check_usable()
                return list(await self._write_raw(_insert_group, group))
            except sqlite3.OperationalError as exc:
                if _is_busy(exc) and time.monotonic() < deadline:
                    await asyncio.sleep(BUSY_RETRY)
                    continue
                return [exc] * len(group)
            except Exception as exc:  # the committer's boundary: see _commit_queued
                if not isinstance(exc, sqlite3.Error | ValueError | StoreError):
                    log.exception("writing %d turns failed inside the bridge", len(group))
                return [exc] * len(group)

    async def delete_response(self, response_id: str, *, client: str | None = None) -> bool:
        """Delete a stored response (any of the client's; None: any response, for the CLI).

        True if it existed. Its items go at once unless later responses share them.
        """
        await self.health.settle(response_id)
        deleted = await self._write(_mark_deleted, response_id, client)
        if deleted:
            await retention.collect_tombstones(self._write)
        return deleted

    async def save_events(self, response_id: str, frames: bytes) -> list[str]:
        """Keep a background response's events (their SSE frames, in order); in the spool
        when the file cannot take them (returns what is pending then)."""
        return await self.health.keep_events(
            response_id, frames, lambda: self.write_events(response_id, frames)
        )

    async def write_events(self, response_id: str, frames: bytes) -> None:
        await self._write(_in_transaction(writes.save_events), response_id, frames)

    # One process per SQLite file runs background responses: nothing to claim or tell.
    on_cancel: Callable[[str], None] | None = None

    async def claim_run(self, response_id: str) -> None:
        """A background run starts here (bridge.store.postgres_store: across processes)."""

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
        if not set(await self._read(reads.running)) - set(keep):
            return []
        return await self._write(_in_transaction(writes.fail_interrupted), message, frozenset(keep))

    # -- conversations (the Conversations API) ------------------------------------------

    async def create_conversation(
        self, conversation_id: str, client: str, metadata: bytes, items: Sequence[Item]
    ) -> ConversationRow:
        return await self._write(
            _in_transaction(conversations.create),
            conversation_id,
            client,
            int(time.time()),
            metadata,
            items,
        )

    async def get_conversation(self, conversation_id: str, client: str) -> ConversationRow | None:
        return await self._read(conversations.get, conversation_id, client)

    async def update_conversation(
        self, conversation_id: str, client: str, metadata: bytes
    ) -> ConversationRow | None:
        return await self._write(
            _in_transaction(conversations.update),
            conversation_id,
            client,
            int(time.time()),
            metadata,
        )

    async def delete_conversation(self, conversation_id: str, client: str) -> bool:
        return await self._write(_in_transaction(conversations.delete), conversation_id, client)

    async def append_conversation(
        self, conversation_id: str, client: str, items: Sequence[Item]
    ) -> list[bytes] | None:
        """Items added at the end of a conversation (None: no such conversation)."""
        return await self._write(
            _in_transaction(conversations.append),
            conversation_id,
            client,
            int(time.time()),
            items,
        )

    async def conversation_items(self, conversation_id: str, client: str) -> list[bytes] | None:
        """All of a conversation's items in order (None: no such conversation)."""
        return await self._read(conversations.all_items, conversation_id, client)

    async def conversation_page(
        self,
        conversation_id: str,
        client: str,
        *,
        limit: int,
        descending: bool,
        after: str | None,
    ) -> ConversationPage | None:
        return await self._read(
            conversations.page,
            conversation_id,
            client,
            limit=limit,
            descending=descending,
            after=after,
        )

    async def conversation_item(
        self, conversation_id: str, client: str, item_id: str
    ) -> bytes | None:
        return await self._read(conversations.get_item, conversation_id, client, item_id)

    async def delete_conversation_item(
        self, conversation_id: str, client: str, item_id: str
    ) -> bool:
        return await self._write(
            _in_transaction(conversations.delete_item),
            conversation_id,
            client,
            item_id,
            int(time.time()),
        )

    async def prune(self, *, max_age_days: float, max_size_mb: float) -> int:
        """Delete what is older than max_age_days, then the oldest until under max_size_mb,
        in short steps. The newest response is never deleted for size. Returns how many
        responses were deleted."""
        cutoff = int(time.time() - max_age_days * 86400)
        deleted = await retention.delete_where(
            self._write,
            "SELECT id FROM responses WHERE created_at < ? AND NOT deleted "
            f"ORDER BY created_at LIMIT {retention.BATCH}",
            (cutoff,),
        )
        await retention.collect_tombstones(self._write)
        await retention.delete_idle_conversations(self._write, cutoff)
        deleted += await retention.delete_to_size(self._write, int(max_size_mb * 1024 * 1024))
        await retention.collect_tombstones(self._write)
        await retention.delete_orphans(self._write, cutoff)
        await retention.vacuum(self._write)
        return deleted

    # -- reads (in the readers' threads) ----------------------------------------------

    async def _read(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work(connection, ...)` on a reader: StoreUnavailable when it fails, SchemaTooNew
        at once when the schema is not usable."""
        self.health.check_usable()
        try:
            return await self._read_raw(work, *args, **kwargs)
        except (sqlite3.Error, ValueError) as exc:
            self.health.noticed()
            raise _store_error(str(self.path), exc) from exc

    async def _read_raw(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        reader = await self._readers.get()
        try:
            return await reader.run(work, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                self._corrupted(str(exc))
            raise
        finally:
            self._readers.put_nowait(reader)

    async def get_response(self, response_id: str, client: str | None = None) -> bytes | None:
        """The stored response object JSON, as it was served (None: not this client's, or
        not stored)."""
        await self.health.settle(response_id)
        return await self._read(reads.response_json, response_id, client)

    async def response_events(
        self, response_id: str, client: str | None = None
    ) -> tuple[bytes, bytes | None] | None:
        """A stored response and its events' frames, if they were kept."""
        await self.health.settle(response_id)
        return await self._read(reads.response_events, response_id, client)

    async def find_items(self, item_ids: Sequence[str], client: str | None) -> dict[str, bytes]:
        """Items by id, for `item_reference` inputs: input items and output items of this
        client's stored responses (the JSON of each one found)."""
        return await self._read(reads.find_items, item_ids, client)

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
        await self.health.settle(response_id)
        return await self._read(
            reads.input_page,
            response_id,
            client,
            limit=limit,
            descending=descending,
            after=after,
        )

    async def chain(self, response_id: str, client: str | None = None) -> Chain:
        """The items of a previous_response_id chain, oldest first; ChainNotFound if a link
        is missing."""
        await self.health.settle(response_id)
        return await self._read(reads.chain, response_id, client)

    async def find_base(self, client: str, digests: Sequence[bytes]) -> tuple[str, int] | None:
        return await self._read(reads.find_base, client, digests)

    async def find_reasoning(
        self, client: str, conversation: str | None, queries: Sequence[ReasoningQuery]
    ) -> list[Reasoning | None]:
        return await self._read(reads.find_reasoning, client, conversation, queries)

    async def list_responses(
        self, *, limit: int = 50, session_id: str | None = None, thread_id: str | None = None
    ) -> list[ResponseRow]:
        return await self._read(
            reads.list_responses, limit=limit, session_id=session_id, thread_id=thread_id
        )

    async def export(self, response_id: str) -> dict[str, Any] | None:
        await self.health.settle(response_id)
        return await self._read(reads.export, response_id)


def _as_store_error(error: Exception, path: Path) -> Exception:
    """A turn's write error as callers take it: SQLite's and the store's own as they are,
    anything else (a value the database cannot hold, a bug) as a StoreRejected: trying
    it again would fail the same way."""
    if isinstance(error, sqlite3.Error | ValueError | StoreError):
        return error
    return StoreRejected(f"{path}: the turn could not be written: {type(error).__name__}: {error}")


def _checkpoint(db: sqlite3.Connection, mode: str) -> None:
    db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()


def _in_transaction(work: Callable[..., T]) -> Callable[..., T]:
    """`work(db, ...)` as one transaction."""

    def run(db: sqlite3.Connection, *args: Any) -> T:
        with transaction(db):
            return work(db, *args)

    return run


def _mark_deleted(db: sqlite3.Connection, response_id: str, client: str | None) -> bool:
    with transaction(db):
        return writes.mark_deleted(db, response_id, client=client, stored_only=client is not None)


def _synchronous(level: str) -> str:
    value = level.upper()
    if value not in ("FULL", "NORMAL", "EXTRA"):
        raise ValueError(f"unknown synchronous level {level!r}")
    return value
