"""The store's operations, written once: each backend supplies how a query is read, how it is
written as one transaction, and how a turn is written (bridge.store.sqlite, .postgres).

Reads of a response wait while a write of it waits in the spool (bridge.store.health), so a
read right after the database returns finds it; turn writes run as tasks of their own, so a
client that disconnects (which cancels its handler) cannot lose a turn it was about to be
told about.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from bridge.migrate import SchemaState
from bridge.records import TurnRecord
from bridge.store import conversations, lineage, lookups, retention, turn_writes
from bridge.store.deletion import mark_deleted
from bridge.store.health import StoreHealth
from bridge.store.protocol import FIND_BASE, Opening
from bridge.store.reasoning_lookup import find_reasoning
from bridge.store.replays import ReplayCache
from bridge.store.spool import Spool
from bridge.store.statements import Dialect, Query
from bridge.store.values import (
    Chain,
    ConversationPage,
    ConversationRow,
    Item,
    ItemsPage,
    ReasoningQuery,
    ResponseRow,
)
from bridge.translate.reasoning import Reasoning

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreOperations(abc.ABC):
    """What both stores do the same way (bridge.store.protocol.Store)."""

    dialect: ClassVar[Dialect]

    def __init__(self, label: str, schema: SchemaState, spool: Spool | None) -> None:
        self.label = label
        self.health = StoreHealth(self, label, schema, spool)
        self.replays = ReplayCache()
        self.on_cancel: Callable[[str], None] | None = None
        self._pending: set[asyncio.Task[list[str]]] = set()
        self._closed = False

    # -- what each backend supplies ----------------------------------------------------

    @abc.abstractmethod
    async def _read(self, query: Query[T]) -> T:
        """`query` on a connection that reads (StoreError when it fails)."""

    @abc.abstractmethod
    async def _write(self, make: Callable[[], Query[T]]) -> T:
        """The query `make()` builds, as one transaction (StoreError when it fails); built
        again if the backend tries it again."""

    @abc.abstractmethod
    async def _write_turn(self, record: TurnRecord, base: tuple[str, int] | None) -> None:
        """One turn's rows (StoreError when they were not written)."""

    @abc.abstractmethod
    async def read_schema(self) -> SchemaState:
        """The database's schema version as it is now (the health task reads it)."""

    @abc.abstractmethod
    async def probe_write(self) -> str | None:
        """Whether the database takes writes now (None: it does)."""

    # -- health -------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """The schema version the database has (as last read)."""
        return self.health.schema.version

    @property
    def last_write_error(self) -> str | None:
        return self.health.last_write_error

    async def write_problem(self) -> str | None:
        """Why the database cannot take writes now (None: it can), for /readyz."""
        # The schema read again (a newer release may have migrated it meanwhile) while the
        # write is tried: together, so that /readyz answers within about a second.
        _, problem = await asyncio.gather(self.health.check_schema(), self.probe_write())
        return self.health.schema_problem or problem or self.health.last_write_error

    @abc.abstractmethod
    async def _close_connections(self) -> None:
        """Finish the writes under way, then close the backend's connections."""

    async def close(self) -> None:
        """Finish the writes under way, then close the connections (once)."""
        if not self._closed:
            self._closed = True
            await self._close_connections()

    def _start_serving(self, opening: Opening) -> None:
        """The health task of a store that serves; a schema it cannot use logged at once."""
        if opening.serves:
            self.health.start()
            if not self.health.schema.usable:
                log.error("%s: %s", self.label, self.health.schema_problem)

    async def _close_writes(self) -> None:
        """Stop the health task; wait for the turn writes under way."""
        await self.health.close()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    # -- writes -------------------------------------------------------------------------

    async def save_turn_shielded(self, record: TurnRecord, *, base: Any = FIND_BASE) -> list[str]:
        """The turn written, or kept in the spool when the database cannot take it (returns
        what is pending then); finished even if the caller is cancelled meanwhile."""
        task = asyncio.create_task(
            self.health.keep_turn(record, lambda: self.save_turn(record, base=base))
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return await asyncio.shield(task)

    async def save_turn(self, record: TurnRecord, *, base: Any = FIND_BASE) -> None:
        """Write one turn, only the input items new since its base (the caller's find_base
        answer, else looked up here; the write checks it still holds)."""
        content = record.content
        if base is FIND_BASE:
            base = None
            if content is not None and len(content.items) > 1:
                base = await self.find_base(record.client, content.item_digests)
        await self._write_turn(record, base)

    async def save_events(self, response_id: str, frames: bytes) -> list[str]:
        """Keep a background response's events (their SSE frames, in order); in the spool
        when the database cannot take them (returns what is pending then)."""
        return await self.health.keep_events(
            response_id, frames, lambda: self.write_events(response_id, frames)
        )

    async def write_events(self, response_id: str, frames: bytes) -> None:
        await self._write(functools.partial(turn_writes.save_events, response_id, frames))

    async def delete_response(self, response_id: str, *, client: str | None = None) -> bool:
        """Delete a stored response (any of the client's; None: any response, for the CLI).

        True if it existed. Its items go at once unless later responses share them.
        """
        await self.health.settle(response_id)
        deleted = await self._write(
            functools.partial(
                mark_deleted, response_id, client=client, stored_only=client is not None
            )
        )
        if deleted:
            await retention.collect_tombstones(self._write)
        return bool(deleted)

    async def prune(self, *, max_age_days: float, max_size_mb: float) -> int:
        """What is older than max_age_days, then the oldest until under max_size_mb
        (bridge.store.retention); how many responses were deleted."""
        return await retention.prune(
            self._write, self.dialect, max_age_days=max_age_days, max_size_mb=max_size_mb
        )

    async def _fail(self, response_ids: Sequence[str], message: str) -> list[str]:
        """Mark these background responses failed, where they still run."""
        if not response_ids:
            return []
        return await self._write(
            functools.partial(turn_writes.fail_responses, response_ids, message)
        )

    # -- reads --------------------------------------------------------------------------

    async def get_response(self, response_id: str, client: str | None = None) -> bytes | None:
        """The stored response object JSON, as it was served (None: not this client's, or
        not stored)."""
        await self.health.settle(response_id)
        return await self._read(lookups.response_json(response_id, client))

    async def response_events(
        self, response_id: str, client: str | None = None
    ) -> tuple[bytes, bytes | None] | None:
        """A stored response and its events' frames, if they were kept."""
        await self.health.settle(response_id)
        return await self._read(lookups.response_events(response_id, client))

    async def find_items(self, item_ids: Sequence[str], client: str | None) -> dict[str, bytes]:
        """Items by id, for `item_reference` inputs: input items and output items of this
        client's stored responses (the JSON of each one found)."""
        return await self._read(lookups.find_items(item_ids, client))

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
            lineage.input_page(response_id, client, limit=limit, descending=descending, after=after)
        )

    async def chain(self, response_id: str, client: str | None = None) -> Chain:
        """The items of a previous_response_id chain, oldest first; ChainNotFound if a link
        is missing."""
        await self.health.settle(response_id)
        return await self._read(lineage.chain(response_id, client))

    async def find_base(self, client: str, digests: Sequence[bytes]) -> tuple[str, int] | None:
        return await self._read(lookups.find_base(client, digests))

    async def find_reasoning(
        self, client: str, conversation: str | None, queries: Sequence[ReasoningQuery]
    ) -> list[Reasoning | None]:
        return await self._read(find_reasoning(client, conversation, queries))

    async def list_responses(
        self, *, limit: int = 50, session_id: str | None = None, thread_id: str | None = None
    ) -> list[ResponseRow]:
        return await self._read(
            lookups.list_responses(
                self.dialect, limit=limit, session_id=session_id, thread_id=thread_id
            )
        )

    async def export(self, response_id: str) -> dict[str, Any] | None:
        await self.health.settle(response_id)
        return await self._read(lookups.export(response_id))

    # -- conversations (the Conversations API) --------------------------------------------

    async def create_conversation(
        self, conversation_id: str, client: str, metadata: bytes, items: Sequence[Item]
    ) -> ConversationRow:
        now = int(time.time())
        return await self._write(
            functools.partial(conversations.create, conversation_id, client, now, metadata, items)
        )

    async def get_conversation(self, conversation_id: str, client: str) -> ConversationRow | None:
        return await self._read(conversations.get(conversation_id, client))

    async def update_conversation(
        self, conversation_id: str, client: str, metadata: bytes
    ) -> ConversationRow | None:
        now = int(time.time())
        return await self._write(
            functools.partial(conversations.update, conversation_id, client, now, metadata)
        )

    async def delete_conversation(self, conversation_id: str, client: str) -> bool:
        return await self._write(functools.partial(conversations.delete, conversation_id, client))

    async def append_conversation(
        self, conversation_id: str, client: str, items: Sequence[Item]
    ) -> list[bytes] | None:
        """Items added at the end of a conversation (None: no such conversation)."""
        now = int(time.time())
        return await self._write(
            functools.partial(conversations.append, conversation_id, client, now, items)
        )

    async def conversation_items(self, conversation_id: str, client: str) -> list[bytes] | None:
        """All of a conversation's items in order (None: no such conversation)."""
        return await self._read(conversations.all_items(conversation_id, client))

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
            conversations.page(
                conversation_id, client, limit=limit, descending=descending, after=after
            )
        )

    async def conversation_item(
        self, conversation_id: str, client: str, item_id: str
    ) -> bytes | None:
        return await self._read(conversations.get_item(conversation_id, client, item_id))

    async def delete_conversation_item(
        self, conversation_id: str, client: str, item_id: str
    ) -> bool:
        now = int(time.time())
        return await self._write(
            functools.partial(conversations.delete_item, conversation_id, client, item_id, now)
        )
