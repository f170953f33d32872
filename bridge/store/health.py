"""The store's health, kept current in the background, and the spool that bridges its outages.

A turn's write that fails because the database is away goes to the spool (bridge.store.spool)
before the turn's final event is sent, and the final object lists what is pending. A task
then tries the database again every RETRY_SECONDS: it writes the spool's entries, oldest
first, and once the database takes writes /readyz says ready again, without waiting for a
client's turn (a balancer that took the bridge out sends none). While all is well it reads
the schema version every CHECK_SECONDS, and at once after any store error: a database that
a newer release migrated in a way this code cannot use is reported on /readyz (503, naming
both versions) and every request that needs the store gets a 503 until it is usable again.
Both stores (SQLite and PostgreSQL) use it the same way, through the few operations of
`Watched`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from bridge.migrate import SchemaState
from bridge.records import TurnRecord
from bridge.store.errors import SchemaTooNew, SchemaTooOld, StoreError, StoreUnavailable
from bridge.store.spool import (
    Spool,
    SpooledEvents,
    SpooledTurn,
    SpoolEntry,
    pending_parts,
    spooled_turn,
    turn_record,
)

log = logging.getLogger(__name__)

# How often a store in trouble (a failed write, entries in the spool, an unusable schema) is
# tried again; how often the schema version is read while all is well.
RETRY_SECONDS = 1.0
CHECK_SECONDS = 10.0
# The longest a read of the schema version may take (/readyz waits for it).
CHECK_WAIT = 1.0
# How long a read of a response whose write waits in the spool waits for it.
SETTLE_SECONDS = 10.0


class Watched(Protocol):
    """What the health task needs from a store."""

    async def read_schema(self) -> SchemaState: ...

    async def probe_write(self) -> str | None: ...

    async def save_turn(self, record: TurnRecord) -> None: ...

    async def write_events(self, response_id: str, frames: bytes) -> None: ...


class StoreHealth:
    """Whether the store takes writes and its schema is usable; the spool's writer."""

    def __init__(
        self, store: Watched, label: str, schema: SchemaState, spool: Spool | None
    ) -> None:
        self._store = store
        self.label = label
        self.schema = schema
        self.spool = spool
        # Why the last write failed, until the database takes writes again.
        self.last_write_error: str | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- what /readyz and the requests see ------------------------------------------

    @property
    def schema_problem(self) -> str | None:
        if self.schema.usable:
            return None
        return self.schema.too_old() if self.schema.older else self.schema.too_new()

    def check_usable(self) -> None:
        """SchemaTooNew (or SchemaTooOld) when the database's schema cannot be used now."""
        if self.schema.usable:
            return
        if self.schema.older:
            raise SchemaTooOld(self.label, self.schema)
        raise SchemaTooNew(self.label, self.schema)

    @property
    def pending(self) -> int:
        """Entries waiting in the spool."""
        return len(self.spool) if self.spool is not None else 0

    def noticed(self) -> None:
        """A statement failed: read the schema again now (it may have been migrated)."""
        self._wake.set()

    # -- writes -----------------------------------------------------------------------

    async def keep_turn(
        self, record: TurnRecord, write: Callable[[], Awaitable[None]]
    ) -> list[str]:
        """`write()` the turn, or keep it in the spool when the database cannot take it;
        returns what of it is pending (empty: written). Raises the store's error when it
        could not be kept either."""
        return await self._keep(record.id, lambda: spooled_turn(record), write)

    async def keep_events(
        self, response_id: str, frames: bytes, write: Callable[[], Awaitable[None]]
    ) -> list[str]:
        return await self._keep(response_id, lambda: SpooledEvents(response_id, frames), write)

    async def _keep(
        self,
        response_id: str,
        entry: Callable[[], SpoolEntry],
        write: Callable[[], Awaitable[None]],
    ) -> list[str]:
        spool = self.spool
        # The database is known to be away, or an earlier write of this response waits in
        # the spool (it must reach the database first): straight to the spool.
        if spool is not None and (self.last_write_error is not None or spool.holds(response_id)):
            kept = entry()
            if await spool.keep(kept):
                self._spooled(response_id, kept, self.last_write_error or "earlier write pending")
                return pending_parts(kept)
        try:
            await write()
        except StoreUnavailable as exc:
            # Spooled before the failure is noted: the health task then tests the database
            # with this very write, not with a probe that a full disk would pass.
            kept = entry()
            spooled = spool is not None and await spool.keep(kept)
            self.failed(f"the last write failed: {exc}")
            if not spooled:
                raise
            self._spooled(response_id, kept, str(exc))
            return pending_parts(kept)
        if self.last_write_error is not None:
            self.last_write_error = None
            log.info("the database %s takes writes again", self.label)
        return []

    def _spooled(self, response_id: str, entry: SpoolEntry, why: str) -> None:
        assert self.spool is not None
        log.warning(
            "response %s: %s kept in the spool %s (%d waiting), written to the database "
            "when it answers again: %s",
            response_id,
            "+".join(pending_parts(entry)),
            self.spool.directory,
            len(self.spool),
            why,
        )
        self._wake.set()

    def failed(self, message: str) -> None:
        """A write failed: /readyz says so until the database takes writes again."""
        if self.last_write_error is None:
            log.warning("the database %s does not take writes: %s", self.label, message)
        self.last_write_error = message
        self._wake.set()

    async def settle(self, response_id: str) -> None:
        """Wait (at most SETTLE_SECONDS) while a write of this response waits in the spool,
        so that a read right after the database returns finds it."""
        spool = self.spool
        if spool is None or not spool.holds(response_id):
            return
        self._wake.set()
        deadline = time.monotonic() + SETTLE_SECONDS
        while spool.holds(response_id):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            progress = self._progress
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await progress.wait()

    def _progressed(self) -> None:
        """Wake what waits in settle (an entry was written, or a pass ended)."""
        self._progress.set()
        self._progress = asyncio.Event()

    # -- the background task ----------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name=f"store health {self.label}")

    async def close(self) -> None:
        """Stop watching (what the spool still holds stays on disk for the next start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flush(self) -> None:
        """Write the spool's entries to the database now, as far as it takes them."""
        await self._flush()

    def _troubled(self) -> bool:
        return bool(self.last_write_error or self.pending or not self.schema.usable)

    async def _watch(self) -> None:
        while True:
            delay = RETRY_SECONDS if self._troubled() else CHECK_SECONDS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._pass()
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except Exception:  # the task's boundary: it must go on watching
                log.exception("checking the database %s failed", self.label)
            finally:
                self._progressed()

    async def _pass(self) -> None:
        await self.check_schema()
        if not self.schema.usable:
            return
        if self.spool is not None:
            await self.spool.scan()  # another bridge sharing it may have written some
        if self.pending:
            await self._flush()
        if not self.pending and self.last_write_error is not None:
            problem = await self._store.probe_write()
            if problem is None:
                self.last_write_error = None
                log.info("the database %s takes writes again", self.label)

    async def check_schema(self) -> None:
        """Read the schema version (within CHECK_WAIT); log when it becomes unusable or
        usable again."""
        try:
            async with asyncio.timeout(CHECK_WAIT):
                state = await self._store.read_schema()
        except (StoreError, TimeoutError) as exc:
            log.debug("schema of %s not read: %s", self.label, exc)
            return
        if state == self.schema:
            return
        before, self.schema = self.schema, state
        if not state.usable:
            log.error("%s: %s", self.label, self.schema_problem)
        elif not before.usable:
            log.info("the database %s is usable again (%s)", self.label, state.describe())
        else:
            log.info("the database %s is now at %s", self.label, state.describe())

    async def _flush(self) -> None:
        spool = self.spool
        assert spool is not None
        written = 0
        async with spool.claim() as claimed:
            if not claimed:
                return  # another bridge sharing the spool writes it now
            async for name, entry in spool.entries():
                try:
                    if isinstance(entry, SpooledTurn):
                        await self._store.save_turn(turn_record(entry))
                    else:
                        await self._store.write_events(entry.response_id, entry.frames)
                except StoreUnavailable as exc:
                    self.last_write_error = f"the last write failed: {exc}"
                    break
                except StoreError as exc:
                    log.error(
                        "the database refused spooled %s of response %s (%s); moved to %s/rejected",
                        "+".join(pending_parts(entry)),
                        entry.id if isinstance(entry, SpooledTurn) else entry.response_id,
                        exc,
                        spool.directory,
                    )
                    await spool.set_aside(name)
                    continue
                await spool.remove(name)
                written += 1
                self._progressed()
        if written:
            log.info(
                "wrote %d spooled entries to the database %s (%d still waiting)",
                written,
                self.label,
                len(spool),
            )
