"""A turn's record: what the store keeps of it, written once the response has ended.

What the write needs from the input (its items encoded and digested, and the earlier
response a replaying client extends) is found once the turn's request has gone upstream,
while the upstream answers: from the store's replay cache when the client replays a
conversation it knows, else by digesting the input (in a thread when it is large) and
asking a read connection. A turn that names a Conversations API conversation then has its
input and output appended to it (when it gave an answer).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from multidict import CIMultiDictProxy

from bridge.conversation import PlannedTurn
from bridge.records import conversation_items, record_turn
from bridge.scope import SESSION_HEADERS, THREAD_HEADERS, header
from bridge.store import StoreError
from bridge.store.protocol import Store
from bridge.translate.context import ContextDigest, ItemDigests
from bridge.wire.events import ResponseObject
from bridge.wire.responses import ResponsesRequest, encode_items

log = logging.getLogger(__name__)

_In = TypeVar("_In")
_Out = TypeVar("_Out")

# Turns with more items and tools than this are encoded for the store in a thread.
ENCODE_IN_THREAD = 2000
# An input whose upstream body is smaller than this is digested on the loop (well under a
# millisecond): a thread's hand-off costs more than the work.
DIGEST_ON_LOOP_BYTES = 256 * 1024


@dataclass(slots=True)
class _Prepared:
    """What the record needs, computed while the upstream answers."""

    context: ContextDigest | None = None
    encoded: list[bytes | None] | None = None
    digests: ItemDigests | None = None
    base: tuple[str, int] | None = None


def _encode_and_digest(items: list[Any]) -> tuple[list[bytes | None], ItemDigests]:
    encoded = encode_items(items)
    return list(encoded), ItemDigests().extend(encoded)


class TurnRecorder:
    """Writes one turn to the store when it has ended; a storage failure is logged, never
    raised: the answer still reaches the client, its final object saying what was kept."""

    def __init__(
        self,
        store: Store,
        request: ResponsesRequest,
        items: list[Any],
        response: ResponseObject,
        planned: PlannedTurn,
        headers: CIMultiDictProxy[str],
        *,
        conversation_id: str | None = None,
        body_size: int,
    ) -> None:
        self._store = store
        self._request = request
        self._items = items
        self._response = response
        self._planned = planned
        self._session_id = header(headers, SESSION_HEADERS)
        self._thread_id = header(headers, THREAD_HEADERS)
        self._conversation_id = conversation_id
        self._in_thread = body_size >= DIGEST_ON_LOOP_BYTES
        # The digests of the input once stored, until remember() hands them to the cache.
        self._stored_digests: ItemDigests | None = None
        self._preparing: asyncio.Future[_Prepared] | None = None

    def begin(self) -> asyncio.Future[_Prepared]:
        """Start finding what the write needs (once): the turn calls this when its request
        has gone upstream, since the work (a replayed conversation compared with the cache:
        a millisecond for 5 MB) would otherwise delay the request."""
        if self._preparing is None:
            self._preparing = asyncio.ensure_future(self._prepare())
        return self._preparing

    async def _prepare(self) -> _Prepared:
        prepared = _Prepared()
        planned, plan = self._planned, self._planned.plan
        if planned.by_context:
            messages = plan.messages[plan.context_start :]
            base = planned.context_base
            digest = base.copy() if base is not None else ContextDigest()
            prepared.context = await self._digesting(digest.extend, messages)
        if self._request.store is False:
            return prepared
        client, conversation = planned.scope.client, planned.scope.conversation
        known = await self._store.replays.match(client, conversation, self._items)
        if known is not None:
            prepared.encoded, prepared.digests, prepared.base = (
                known.encoded,
                known.digests,
                known.base,
            )
            return prepared
        encoded, digests = await self._digesting(_encode_and_digest, self._items)
        prepared.encoded, prepared.digests = encoded, digests
        if len(self._items) > 1:
            prepared.base = await self._store.find_base(client, digests.digests)
        return prepared

    async def _digesting(self, work: Callable[[_In], _Out], data: _In) -> _Out:
        """`work(data)`: in a thread for a large input, else here on the loop."""
        return await asyncio.to_thread(work, data) if self._in_thread else work(data)

    async def write(self) -> bool:
        """True once the turn is stored (or waits in the spool); False (logged) when it
        could not be. Then its input and output go to its conversation."""
        stored = await self._write_turn()
        if self._conversation_id is not None:
            await self._append_to_conversation(self._conversation_id)
        return stored

    async def _write_turn(self) -> bool:
        response, planned, items = self._response, self._planned, self._items
        try:
            prepared = await self.begin()
            digests = prepared.digests
            response.store_pending = msgspec.UNSET  # not part of what is stored
            make = functools.partial(
                record_turn,
                self._request,
                response,
                planned.scope,
                session_id=self._session_id,
                thread_id=self._thread_id,
                context=prepared.context,
                items=items,
                encoded=prepared.encoded,
                item_digests=digests.digests if digests is not None else None,
            )
            # The items come encoded (_prepare): what is left grows with the tool list, off
            # the loop for a long one. A large input alone is no reason for a thread's
            # hand-off here, which the client would wait for.
            many = len(items) + len(self._request.tools or ()) > ENCODE_IN_THREAD
            turn = await asyncio.to_thread(make) if many else make()
            # What the database could not take yet waits in the spool; the final object
            # lists it.
            response.store_pending = (
                await self._store.save_turn_shielded(turn, base=prepared.base) or msgspec.UNSET
            )
        except StoreError as exc:
            log.warning("response %s not stored: %s", response.id, exc)
            return False
        if digests is not None:
            self._stored_digests = digests
        return True

    def remember(self) -> None:
        """The stored input kept in the store's replay cache, for the client's next request:
        done once the final event is out, as it lets go of the conversation's previous input
        (0.5 ms for a 5 MB one) and the client need not wait for that."""
        digests, self._stored_digests = self._stored_digests, None
        if digests is not None:
            scope = self._planned.scope
            self._store.replays.remember(
                scope.client, scope.conversation, self._response.id, self._items, digests
            )

    async def _append_to_conversation(self, conversation_id: str) -> None:
        """A turn that gave an answer joins its conversation; a failed or cancelled one
        leaves it as it was."""
        response = self._response
        if response.status not in ("completed", "incomplete"):
            return
        added = conversation_items(self._items) + conversation_items(
            msgspec.to_builtins(response.output)
        )
        client = self._planned.scope.client
        try:
            appended = await self._store.append_conversation(conversation_id, client, added)
        except StoreError as exc:
            log.error("response %s not added to %s: %s", response.id, conversation_id, exc)
            return
        if appended is None:
            log.warning(
                "response %s: conversation %s was deleted meanwhile", response.id, conversation_id
            )
