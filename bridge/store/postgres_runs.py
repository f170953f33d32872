"""Background responses across bridges on one PostgreSQL database: which bridge runs which,
and cancels sent to the bridge that runs one.

The bridge that runs a response holds a session-level advisory lock on it, on a connection
of its own: a response stored as running whose lock nobody holds was left by a process that
died. Cancelling a response that another bridge runs goes to it by NOTIFY on that
connection's channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from bridge.store.errors import StoreUnavailable
from bridge.store.postgres_driver import TRANSIENT
from bridge.store.statements import Query, fetch, fetch_value

log = logging.getLogger(__name__)

# The advisory lock space of running background responses (the migration lock is another).
RUN_LOCKS = 0x7262
CANCEL_CHANNEL = "responses_bridge_cancel"
SESSION_RETRY = 1.0


def orphaned(response_ids: Sequence[str]) -> Query[list[str]]:
    """Those of the responses whose run lock nobody holds (on one connection)."""
    free = []
    for response_id in response_ids:
        key = (RUN_LOCKS, response_id)
        if (yield from fetch_value("SELECT pg_try_advisory_lock(?, hashtext(?))", key)):
            yield from fetch("SELECT pg_advisory_unlock(?, hashtext(?))", key)
            free.append(response_id)
    return free


def notify_cancel(response_id: str) -> Query[None]:
    yield from fetch("SELECT pg_notify(?, ?)", (CANCEL_CHANNEL, response_id))


class RunSession:
    """The connection that holds this bridge's run locks and hears the cancels sent to it,
    opened again (its locks taken again) after the database went away."""

    def __init__(
        self,
        label: str,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        heard: Callable[[str], None],
    ) -> None:
        self._label = label
        self._connect = connect
        # Called with each response id another bridge asks to cancel.
        self._heard = heard
        self._connection: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._claimed: set[str] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._closing = False

    async def close(self) -> None:
        self._closing = True
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._connection is not None:
            with contextlib.suppress(*TRANSIENT, asyncpg.PostgresError):
                await self._connection.close()

    async def claim(self, response_id: str) -> None:
        """This process runs `response_id` (held until release or the process ends)."""
        async with self._lock:
            try:
                connection = await self._session()
                await connection.execute(
                    "SELECT pg_advisory_lock($1, hashtext($2))", RUN_LOCKS, response_id
                )
            except (*TRANSIENT, asyncpg.PostgresError) as exc:
                raise StoreUnavailable(f"{self._label}: {exc}") from exc
            self._claimed.add(response_id)

    async def release(self, response_id: str) -> None:
        async with self._lock:
            self._claimed.discard(response_id)
            if self._connection is None or self._connection.is_closed():
                return
            with contextlib.suppress(*TRANSIENT, asyncpg.PostgresError):
                await self._connection.execute(
                    "SELECT pg_advisory_unlock($1, hashtext($2))", RUN_LOCKS, response_id
                )

    async def listen(self) -> None:
        """Hear the cancels other bridges send for the runs of this one."""
        async with self._lock:
            await self._session()

    async def _session(self) -> asyncpg.Connection:
        """The session's connection, opened (again) if need be; under _lock."""
        if self._connection is not None and not self._connection.is_closed():
            return self._connection
        connection = await self._connect()
        try:
            for response_id in self._claimed:
                await connection.execute(
                    "SELECT pg_advisory_lock($1, hashtext($2))", RUN_LOCKS, response_id
                )
            await connection.add_listener(CANCEL_CHANNEL, self._cancel_received)
        except BaseException:
            await connection.close()
            raise
        connection.add_termination_listener(self._lost)
        self._connection = connection
        return connection

    def _cancel_received(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        self._heard(str(payload))

    def _lost(self, connection: Any) -> None:
        if not self._closing:
            self._keeper = asyncio.create_task(self._keep())

    async def _keep(self) -> None:
        """Reopen the session until the database answers again."""
        for _ in range(100_000):
            if self._closing:
                return
            try:
                async with self._lock:
                    await self._session()
                log.info("%s: the bridge's session is back (run locks, cancels)", self._label)
                return
            except (*TRANSIENT, asyncpg.PostgresError) as exc:
                log.debug("%s: session not back yet: %s", self._label, exc)
            await asyncio.sleep(SESSION_RETRY)
