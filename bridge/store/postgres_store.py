"""The store on PostgreSQL: the same operations as the SQLite store (bridge.store.Store),
for several bridges sharing one database.

A pool of asyncpg connections; each turn written in a transaction of its own. When the
database goes away (a restart, a failover), reads fail with StoreUnavailable and turn writes
are tried again until `[store] write_timeout`, then kept in the spool until it returns
(bridge.store.health); /readyz says what is wrong meanwhile, and ready again as soon as the
database answers.

Background responses (bridge.background) are claimed by the process that runs them with a
session-level advisory lock on a connection of their own: a response stored as running
whose lock nobody holds was left by a process that died, and is marked failed. Cancelling
a response that another bridge runs goes to it by NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from bridge.config import Config
from bridge.migrate import MigrationError, SchemaState
from bridge.records import TurnRecord
from bridge.store import postgres
from bridge.store import postgres_queries as q
from bridge.store.conversations import ConversationPage, ConversationRow, Item
from bridge.store.errors import (
    SchemaTooNew,
    SchemaTooOld,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)
from bridge.store.files import Opening
from bridge.store.health import StoreHealth
from bridge.store.reads import Chain, ItemsPage, ReasoningQuery, ResponseRow
from bridge.store.replays import ReplayCache
from bridge.store.spool import Spool
from bridge.translate.reasoning import Reasoning

log = logging.getLogger(__name__)
T = TypeVar("T")

POOL_SIZE = 10
PROBE_SECONDS = 1.0
RETRY_SECONDS = 0.25
SESSION_RETRY = 1.0
# The advisory lock space of running background responses (the migration lock is another).
RUN_LOCKS = 0x7262
CANCEL_CHANNEL = "responses_bridge_cancel"
FIND_BASE: Any = object()
# What a lost or refused connection raises: worth trying again once the database is back.
_TRANSIENT = (
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

__all__ = ["PostgresStore", "StoreUnavailable"]


def _store_error(label: str, exc: BaseException) -> StoreError:
    if isinstance(exc, _REJECTED):
        return StoreRejected(f"{label}: {exc}")
    return StoreUnavailable(f"{label}: {exc}")


class PostgresStore:
    """Async access to a PostgreSQL database; create with `await PostgresStore.open(...)`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        label: str,
        schema: SchemaState,
        write_timeout: float,
        *,
        spool: Spool | None = None,
        read_only: bool = False,
    ) -> None:
        self._pool = pool
        self.path = label
        self.read_only = read_only
        self._write_timeout = write_timeout
        self.replays = ReplayCache()
        # Whether the database takes writes and its schema is usable, kept current in the
        # background; the spool of the turns it could not take.
        self.health = StoreHealth(self, label, schema, spool)
        self._pending: set[asyncio.Task[list[str]]] = set()
        # The session connection: this bridge's run locks, and the cancels it hears.
        self._runs: asyncpg.Connection | None = None
        self._runs_lock = asyncio.Lock()
        self._claimed: set[str] = set()
        self._keeper: asyncio.Task[None] | None = None
        self._closing = False
        # Called with a response id another bridge asked to cancel (set by the app).
        self.on_cancel: Callable[[str], None] | None = None
        self._connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None

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
        label = postgres.display_url(url)
        secret = postgres.password(config, environ)
        try:
            connection = await postgres.connect(config, environ)
        except ConnectionError as exc:
            raise StoreError(str(exc)) from exc
        try:
            schema = await _prepare(connection, label, opening)
        except (*_TRANSIENT, asyncpg.PostgresError) as exc:
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
                timeout=postgres.CONNECT_SECONDS,
                server_settings=settings,
            )
        except (*_TRANSIENT, asyncpg.PostgresError) as exc:
            raise StoreError(f"{label}: cannot connect: {exc}") from exc
        if spool is not None and not opening.read_only:
            await spool.open()
        else:
            spool = None
        store = cls(pool, label, schema, write_timeout, spool=spool, read_only=opening.read_only)

        async def connect() -> asyncpg.Connection:
            return await asyncpg.connect(url, password=secret, timeout=postgres.CONNECT_SECONDS)

        store._connect = connect
        if opening.serves:
            store.health.start()
            if not schema.usable:
                log.error("%s: %s", label, store.health.schema_problem)
        return store

    @property
    def schema_version(self) -> int:
        return self.health.schema.version

    @property
    def last_write_error(self) -> str | None:
        return self.health.last_write_error

    async def close(self) -> None:
        self._closing = True
        await self.health.close()
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._runs is not None:
            with contextlib.suppress(Exception):
                await self._runs.close()
        await self._pool.close()

    # -- running statements -------------------------------------------------------

    async def _read(self, work: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        self.health.check_usable()
        try:
            async with self._pool.acquire() as connection:
                return await work(connection, *args, **kwargs)
        except (*_TRANSIENT, asyncpg.PostgresError) as exc:
            self.health.noticed()
            raise _store_error(self.path, exc) from exc

    async def _write(self, work: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """`work` in a transaction, tried again while the database is unreachable, up to
        write_timeout."""
        self.health.check_usable()
        deadline = time.monotonic() + self._write_timeout
        while True:
            try:
                async with self._pool.acquire() as connection, connection.transaction():
                    return await work(connection, *args, **kwargs)
            except _TRANSIENT as exc:
                if time.monotonic() < deadline:
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                self.health.failed(f"the last write failed: {exc}")
                raise StoreUnavailable(f"{self.path}: {exc}") from exc
            except asyncpg.PostgresError as exc:
                self.health.noticed()
                raise _store_error(self.path, exc) from exc

    async def write_problem(self) -> str | None:
        """Why the database cannot take writes now (None: it can), within about a second."""
        # The schema read again (a newer release may have migrated it meanwhile) while the
        # write is tried: together, so that /readyz answers within about PROBE_SECONDS.
        _, problem = await asyncio.gather(self.health.check_schema(), self.probe_write())
        return self.health.schema_problem or problem or self.health.last_write_error

    async def probe_write(self) -> str | None:
        """Whether the database answers and takes writes (not a standby)."""
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                async with self._pool.acquire() as connection:
                    standby = await connection.fetchval("SELECT pg_is_in_recovery()")
        except TimeoutError:
            return f"{self.path} did not answer within a second"
        except (*_TRANSIENT, asyncpg.PostgresError) as exc:
            return f"{self.path} is unreachable: {exc}"
        return f"{self.path} is a standby (read-only)" if standby else None

    async def read_schema(self) -> SchemaState:
        """The database's schema version as it is now (the health task reads it)."""
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                async with self._pool.acquire() as connection:
                    return await postgres.schema_state(connection)
        except (*_TRANSIENT, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"{self.path}: {exc}") from exc

    # -- turns --------------------------------------------------------------------

    async def save_turn_shielded(self, record: TurnRecord, *, base: Any = FIND_BASE) -> list[str]:
        """The turn written, or kept in the spool when the database cannot take it (returns
        what is pending then); finished even if the caller is cancelled meanwhile."""
        task = asyncio.create_task(
            self.health.keep_turn(record, lambda: self.save_turn(record, base=base))
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return await asyncio.shield(task)

    async def write_turn(self, record: TurnRecord) -> None:
        await self.save_turn(record)

    async def save_turn(self, record: TurnRecord, *, base: Any = FIND_BASE) -> None:
        content = record.content
        if base is FIND_BASE:
            base = None
            if content is not None and len(content.items) > 1:
                base = await self.find_base(record.client, content.item_digests)
        await self._write(q.insert_turn, record, base)

    async def delete_response(self, response_id: str, *, client: str | None = None) -> bool:
        await self.health.settle(response_id)
        deleted = await self._write(
            q.mark_deleted, response_id, client=client, stored_only=client is not None
        )
        if deleted:
            await self._collect_tombstones()
        return deleted

    async def _collect_tombstones(self) -> None:
        for _ in range(10_000):
            pending = await self._read(q.free_tombstones)
            if not pending:
                return
            for response_id in pending:
                following: str | None = response_id
                while following is not None:
                    following = await self._write(q.remove_tombstone, following)

    async def prune(self, *, max_age_days: float, max_size_mb: float) -> int:
        """What is older than max_age_days (responses, reasoning, idle conversations), then
        the oldest responses until the stored content fits in max_size_mb (the newest
        always stays)."""
        cutoff = int(time.time() - max_age_days * 86400)
        deleted = 0
        for _ in range(10_000):
            old = await self._read(q.old_responses, cutoff)
            if not old:
                break
            for response_id in old:
                if await self._write(q.mark_deleted, response_id, client=None, stored_only=False):
                    deleted += 1
        await self._collect_tombstones()
        for _ in range(10_000):
            if await self._write(q.delete_idle_conversations, cutoff) < q.BATCH:
                break
        for response_id in await self._read(q.over_size, int(max_size_mb * 1024 * 1024)):
            if await self._write(q.mark_deleted, response_id, client=None, stored_only=False):
                deleted += 1
        await self._collect_tombstones()
        await self._write(q.delete_orphans, cutoff)
        return deleted

    async def save_events(self, response_id: str, frames: bytes) -> list[str]:
        return await self.health.keep_events(
            response_id, frames, lambda: self.write_events(response_id, frames)
        )

    async def write_events(self, response_id: str, frames: bytes) -> None:
        await self._write(q.save_events, response_id, frames)

    # -- background runs across processes -------------------------------------------

    async def claim_run(self, response_id: str) -> None:
        """This process runs `response_id` (held until release_run or the process ends)."""
        async with self._runs_lock:
            try:
                connection = await self._session_connection()
                await connection.execute(
                    "SELECT pg_advisory_lock($1, hashtext($2))", RUN_LOCKS, response_id
                )
            except (*_TRANSIENT, asyncpg.PostgresError) as exc:
                raise StoreUnavailable(f"{self.path}: {exc}") from exc
            self._claimed.add(response_id)

    async def release_run(self, response_id: str) -> None:
        async with self._runs_lock:
            self._claimed.discard(response_id)
            if self._runs is None or self._runs.is_closed():
                return
            with contextlib.suppress(*_TRANSIENT, asyncpg.PostgresError):
                await self._runs.execute(
                    "SELECT pg_advisory_unlock($1, hashtext($2))", RUN_LOCKS, response_id
                )

    async def _session_connection(self) -> asyncpg.Connection:
        """The connection that holds this bridge's run locks and hears cancels (opened
        again, its locks taken again, after the database went away); under _runs_lock."""
        if self._runs is not None and not self._runs.is_closed():
            return self._runs
        assert self._connect is not None
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
        connection.add_termination_listener(self._session_lost)
        self._runs = connection
        return connection

    def _cancel_received(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        if self.on_cancel is not None:
            self.on_cancel(str(payload))

    def _session_lost(self, connection: Any) -> None:
        if not self._closing:
            self._keeper = asyncio.create_task(self._keep_session())

    async def _keep_session(self) -> None:
        """Reopen the session connection until the database answers again."""
        for _ in range(100_000):
            if self._closing:
                return
            try:
                async with self._runs_lock:
                    await self._session_connection()
                log.info("%s: the bridge's session is back (run locks, cancels)", self.path)
                return
            except (*_TRANSIENT, asyncpg.PostgresError) as exc:
                log.debug("%s: session not back yet: %s", self.path, exc)
            await asyncio.sleep(SESSION_RETRY)

    async def listen_for_cancels(self) -> None:
        """Cancels other bridges send for the runs of this one."""
        async with self._runs_lock:
            await self._session_connection()

    async def ask_to_cancel(self, response_id: str) -> None:
        await self._read(_notify, response_id)

    async def fail_interrupted(self, message: str, keep: Collection[str] = ()) -> list[str]:
        """Running responses no bridge holds (their process died), but those in `keep`
        (this bridge's own): marked failed."""
        orphaned = []
        async with self._pool.acquire() as connection:
            for response_id, _ in await q.running(connection):
                if response_id in keep:
                    continue
                free = await connection.fetchval(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))", RUN_LOCKS, response_id
                )
                if free:
                    await connection.execute(
                        "SELECT pg_advisory_unlock($1, hashtext($2))", RUN_LOCKS, response_id
                    )
                    orphaned.append(response_id)
        if orphaned:
            await self._write(q.fail_responses, orphaned, message)
        return orphaned

    # -- reads --------------------------------------------------------------------

    async def get_response(self, response_id: str, client: str | None = None) -> bytes | None:
        await self.health.settle(response_id)
        return await self._read(q.response_json, response_id, client)

    async def response_events(
        self, response_id: str, client: str | None = None
    ) -> tuple[bytes, bytes | None] | None:
        await self.health.settle(response_id)
        return await self._read(q.response_events, response_id, client)

    async def find_items(self, item_ids: Sequence[str], client: str | None) -> dict[str, bytes]:
        return await self._read(q.find_items, item_ids, client)

    async def input_items(
        self,
        response_id: str,
        client: str | None = None,
        *,
        limit: int = 20,
        descending: bool = True,
        after: str | None = None,
    ) -> ItemsPage | None:
        await self.health.settle(response_id)
        return await self._read(
            q.input_page, response_id, client, limit=limit, descending=descending, after=after
        )

    async def chain(self, response_id: str, client: str | None = None) -> Chain:
        await self.health.settle(response_id)
        return await self._read(q.chain, response_id, client)

    async def find_base(self, client: str, digests: Sequence[bytes]) -> tuple[str, int] | None:
        return await self._read(q.find_base, client, digests)

    async def find_reasoning(
        self, client: str, conversation: str | None, queries: Sequence[ReasoningQuery]
    ) -> list[Reasoning | None]:
        return await self._read(q.find_reasoning, client, conversation, queries)

    async def list_responses(
        self, *, limit: int = 50, session_id: str | None = None, thread_id: str | None = None
    ) -> list[ResponseRow]:
        return await self._read(
            q.list_responses, limit=limit, session_id=session_id, thread_id=thread_id
        )

    async def export(self, response_id: str) -> dict[str, Any] | None:
        await self.health.settle(response_id)
        return await self._read(q.export, response_id)

    # -- conversations ------------------------------------------------------------

    async def create_conversation(
        self, conversation_id: str, client: str, metadata: bytes, items: Sequence[Item]
    ) -> ConversationRow:
        return await self._write(q.create_conversation, conversation_id, client, metadata, items)

    async def get_conversation(self, conversation_id: str, client: str) -> ConversationRow | None:
        return await self._read(q.get_conversation, conversation_id, client)

    async def update_conversation(
        self, conversation_id: str, client: str, metadata: bytes
    ) -> ConversationRow | None:
        return await self._write(q.update_conversation, conversation_id, client, metadata)

    async def delete_conversation(self, conversation_id: str, client: str) -> bool:
        return await self._write(q.delete_conversation, conversation_id, client)

    async def append_conversation(
        self, conversation_id: str, client: str, items: Sequence[Item]
    ) -> list[bytes] | None:
        return await self._write(q.append, conversation_id, client, items)

    async def conversation_items(self, conversation_id: str, client: str) -> list[bytes] | None:
        return await self._read(q.conversation_items, conversation_id, client)

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
            q.conversation_page,
            conversation_id,
            client,
            limit=limit,
            descending=descending,
            after=after,
        )

    async def conversation_item(
        self, conversation_id: str, client: str, item_id: str
    ) -> bytes | None:
        return await self._read(q.conversation_item, conversation_id, client, item_id)

    async def delete_conversation_item(
        self, conversation_id: str, client: str, item_id: str
    ) -> bool:
        return await self._write(q.delete_conversation_item, conversation_id, client, item_id)


async def _notify(connection: asyncpg.Connection, response_id: str) -> None:
    await connection.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, response_id)


async def _prepare(connection: asyncpg.Connection, label: str, opening: Opening) -> SchemaState:
    """The database's schema once it may be opened as `opening` says: migrated (only
    SERVE_MIGRATING does), or refused with SchemaTooOld or SchemaTooNew; a serving bridge
    gets a newer schema it cannot use back as it is (it reports it and waits)."""
    state = await postgres.schema_state(connection)
    if state.older:
        if not opening.migrates:
            raise SchemaTooOld(label, state)
        try:
            await postgres.migrate(connection)
        except MigrationError as exc:
            raise StoreError(f"{label}: {exc}") from exc
        return await postgres.schema_state(connection)
    if not state.usable and not opening.serves:
        raise SchemaTooNew(label, state)
    return state
