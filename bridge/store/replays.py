"""The last stored input of recent conversations, in memory, for clients that replay.

A client that sends the whole conversation again on every request (store: true) has its
new response stored as an extension of the previous one (only the new items are written).
Finding that previous response means comparing the whole input with what was stored:
without this cache, by digesting every item; with it, by comparing the request's items
with the previous request's, byte for byte (a memcmp per item), and digesting only the new
ones. A miss (a new process, an edited history, an evicted conversation) falls back to
digesting everything and asking the database (bridge.store.reads.find_base).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.translate.context import ItemDigests
from bridge.wire.responses import RawItem

# What the cache may hold: items are kept as the request bodies' own bytes.
MAX_BYTES = 64 * 1024 * 1024
MAX_CONVERSATIONS = 256


@dataclass(slots=True)
class _Stored:
    response_id: str
    items: list[RawItem]
    digests: ItemDigests
    size: int


@dataclass(frozen=True, slots=True)
class ReplayMatch:
    """The stored response a request's input extends, and the digests of that input."""

    base: tuple[str, int]
    digests: ItemDigests


def _same(a: RawItem, b: RawItem) -> bool:
    return a == b if type(a) is type(b) else bytes(a) == bytes(b)


def _key(client: str, conversation: str | None, items: Sequence[RawItem]) -> tuple[str, str, bytes]:
    first = hashlib.sha256(items[0]).digest()[:16]
    return client, conversation or "", first


class ReplayCache:
    """Per (client, conversation, first item): the last stored response's input."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_conversations: int = MAX_CONVERSATIONS):
        self._max_bytes = max_bytes
        self._max_conversations = max_conversations
        self._entries: OrderedDict[tuple[str, str, bytes], _Stored] = OrderedDict()
        self._bytes = 0

    def match(
        self, client: str, conversation: str | None, items: Sequence[RawItem]
    ) -> ReplayMatch | None:
        """The base and digests for `items` if they start with a remembered input."""
        if not items:
            return None
        key = _key(client, conversation, items)
        stored = self._entries.get(key)
        if stored is None:
            return None
        known = len(stored.items)
        if len(items) < known or not all(
            _same(a, b) for a, b in zip(stored.items, items[:known], strict=True)
        ):
            return None
        self._entries.move_to_end(key)
        digests = stored.digests.copy().extend(items[known:])
        return ReplayMatch((stored.response_id, known), digests)

    def remember(
        self,
        client: str,
        conversation: str | None,
        response_id: str,
        items: Sequence[RawItem],
        digests: ItemDigests,
    ) -> None:
        """`items` are now stored as the input of `response_id`."""
        if not items:
            return
        key = _key(client, conversation, items)
        size = sum(memoryview(item).nbytes for item in items)
        if size > self._max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._bytes -= previous.size
        self._entries[key] = _Stored(response_id, list(items), digests, size)
        self._bytes += size
        while self._entries and (
            self._bytes > self._max_bytes or len(self._entries) > self._max_conversations
        ):
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size
