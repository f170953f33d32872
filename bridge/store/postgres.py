"""The store on PostgreSQL (`[store] url`): for several bridges sharing one database.

A pool of asyncpg connections; each turn written in a transaction of its own. When the
database goes away (a restart, a failover), reads fail with StoreUnavailable and writes are
tried again until `[store] write_timeout`, then turns are kept in the spool until it returns
(bridge.store.health); /readyz says what is wrong meanwhile, and ready again as soon as the
database answers. Background runs are shared between the bridges through
bridge.store.postgres_runs.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Collection, Mapping
from typing import ClassVar, TypeVar

import asyncpg

from bridge.config import Config
from bridge.migrate import MigrationError, SchemaState
from bridge.records import TurnRecord
from bridge.store import lookups, postgres_driver, postgres_setup
from bridge.store.errors import (
    SchemaTooNew,
    SchemaTooOld,
    StoreError,
    StoreUnavailable,
)
from bridge.store.operations import StoreOperations
from bridge.store.postgres_driver import TRANSIENT, store_error
from bridge.store.postgres_runs import RunSession, notify_cancel, orphaned
from bridge.store.protocol import Opening
from bridge.store.spool import Spool
from bridge.store.statements import POSTGRES, Query
from bridge.store.turn_writes import insert_turn

T = TypeVar("T")

POOL_SIZE = 10
PROBE_SECONDS = 1.0
RETRY_SECONDS = 0.25


class PostgresStore(StoreOperations):
    """Async access to a PostgreSQL database; create with `await PostgresStore.open(...)`."""

    dialect: ClassVar = POSTGRES

    def __init__(
        self,
        pool: asyncpg.Pool,
        label: str,
        schema: SchemaState,
        write_timeout: float,
        runs: RunSession | None = None,
        *,
        spool: Spool | None = None,
    ) -> None:
        super().__init__(label, schema, spool)
        self._pool = pool
        self._write_timeout = write_timeout
        self._runs = runs

    @classmethod
    async def open(
        cls,
        config: Config,
        environ: Mapping[str, str],
        *,
        write_timeout: float = 10.0,
        opening: Opening = Opening.SERVE_MIGRATING,
        spool: Spool | None = None,
    ) -> PostgresStore:
        """Connect, migrate as `opening` allows (under the migration lock), and open the
        pool (read-only transactions for Opening.READ)."""
        url = config.store.url
        assert url is not None
        label = postgres_setup.display_url(url)
        secret = postgres_setup.password(config, environ)
        try:
            connection = await postgres_setup.connect(config, environ)
        except ConnectionError as exc:
            raise StoreError(str(exc)) from exc
        try:
            schema = await _prepare(connection, label, opening)
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            raise StoreError(f"{label}: {exc}") from exc
        finally:
            await connection.close()
        settings = {"default_transaction_read_only": "on"} if opening.read_only else None
        try:
            pool = await asyncpg.create_pool(
                url,
                password=secret,
                min_size=1,
                max_size=POOL_SIZE,
                timeout=postgres_setup.CONNECT_SECONDS,
                server_settings=settings,
            )
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            raise StoreError(f"{label}: cannot connect: {exc}") from exc
        if spool is not None and not opening.read_only:
            await spool.open()
        else:
            spool = None

        async def connect() -> asyncpg.Connection:
            return await asyncpg.connect(
                url, password=secret, timeout=postgres_setup.CONNECT_SECONDS
            )

        store = cls(pool, label, schema, write_timeout, spool=spool)
        store._runs = RunSession(label, connect, store._cancel_heard)
        store._start_serving(opening)
        return store

    async def _close_connections(self) -> None:
        if self._runs is not None:
            await self._runs.close()
        await self._close_writes()
        await self._pool.close()

    # -- running queries ----------------------------------------------------------------

    async def _read(self, query: Query[T]) -> T:
        self.health.check_usable()
        try:
            async with self._pool.acquire() as connection:
                return await postgres_driver.run(connection, query)
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            self.health.noticed()
            raise store_error(self.label, exc) from exc

    async def _write_turn(self, record: TurnRecord, base: tuple[str, int] | None) -> None:
        await self._write(functools.partial(insert_turn, record, base))

    async def _write(self, make: Callable[[], Query[T]]) -> T:
        """The query `make()` builds, in a transaction, tried again (built again) while the
        database is unreachable, up to write_timeout."""
        self.health.check_usable()
        deadline = time.monotonic() + self._write_timeout
        while True:
            try:
                async with self._pool.acquire() as connection, connection.transaction():
                    return await postgres_driver.run(connection, make())
            except TRANSIENT as exc:
                if time.monotonic() < deadline:
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                self.health.failed(f"the last write failed: {exc}")
                raise StoreUnavailable(f"{self.label}: {exc}") from exc
            except asyncpg.PostgresError as exc:
                self.health.noticed()
                raise store_error(self.label, exc) from exc

    async def probe_write(self) -> str | None:
        """Whether the database answers and takes writes (not a standby)."""
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                async with self._pool.acquire() as connection:
                    standby = await connection.fetchval("SELECT pg_is_in_recovery()")
        except TimeoutError:
            return f"{self.label} did not answer within a second"
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            return f"{self.label} is unreachable: {exc}"
        return f"{self.label} is a standby (read-only)" if standby else None

    async def read_schema(self) -> SchemaState:
        """The database's schema version as it is now (the health task reads it)."""
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                async with self._pool.acquire() as connection:
                    return await postgres_setup.schema_state(connection)
        except (*TRANSIENT, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"{self.label}: {exc}") from exc

    # -- background runs across processes -------------------------------------------------

    async def claim_run(self, response_id: str) -> None:
        """This process runs `response_id` (held until release_run or the process ends)."""
        assert self._runs is not None
        await self._runs.claim(response_id)

    async def release_run(self, response_id: str) -> None:
        assert self._runs is not None
        await self._runs.release(response_id)

    async def listen_for_cancels(self) -> None:
        """Cancels other bridges send for the runs of this one."""
        assert self._runs is not None
        await self._runs.listen()

    async def ask_to_cancel(self, response_id: str) -> None:
        await self._read(notify_cancel(response_id))

    def _cancel_heard(self, response_id: str) -> None:
        if self.on_cancel is not None:
            self.on_cancel(response_id)

    async def fail_interrupted(self, message: str, keep: Collection[str] = ()) -> list[str]:
        """Running responses no bridge holds (their process died), but those in `keep`
        (this bridge's own): marked failed."""
        running = [rid for rid in await self._read(lookups.running()) if rid not in keep]
        if not running:
            return []
        return await self._fail(await self._read(orphaned(running)), message)


async def _prepare(connection: asyncpg.Connection, label: str, opening: Opening) -> SchemaState:
    """The database's schema once it may be opened as `opening` says: migrated (only
    SERVE_MIGRATING does), or refused with SchemaTooOld or SchemaTooNew; a serving bridge
    gets a newer schema it cannot use back as it is (it reports it and waits)."""
    state = await postgres_setup.schema_state(connection)
    if state.older:
        if not opening.migrates:
            raise SchemaTooOld(label, state)
        try:
            await postgres_setup.migrate(connection)
        except MigrationError as exc:
            raise StoreError(f"{label}: {exc}") from exc
        return await postgres_setup.schema_state(connection)
    if not state.usable and not opening.serves:
        raise SchemaTooNew(label, state)
    return state
