"""The last stored input of recent conversations, in memory, for clients that replay.

A client that sends the whole conversation again on every request (store: true) has its
new response stored as an extension of the previous one (only the new items are written).
Finding that previous response means comparing the whole input with what was stored:
without this cache, by encoding and digesting every item; with it, by comparing the
request's decoded items with the previous request's (a C-level comparison, well under a
millisecond for megabytes) and encoding and digesting only the new ones. A miss (a new
process, an edited history, an evicted conversation) falls back to digesting everything and
asking the database (bridge.store.lookups.find_base).

The comparison is made a slice of items per step of the event loop: a 200-turn Codex-shaped
conversation (5 MB, 1,000 items) compared in one go held the loop for 1.6 ms at each turn,
the other streams' tokens and the turn's own request body waiting behind it (issue 25).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.translate.context import ItemDigests
from bridge.wire.responses import encode_items

# What the cache may hold, counted as the JSON size of the items it keeps (in memory they
# take two to three times that).
MAX_BYTES = 16 * 1024 * 1024
MAX_CONVERSATIONS = 64
# Items compared in one step of the event loop (64 of Codex's 5-20 KB tool outputs: about
# a tenth of a millisecond).
COMPARED_PER_STEP = 64


@dataclass(slots=True)
class _Stored:
    response_id: str
    items: list[Any]
    digests: ItemDigests


@dataclass(frozen=True, slots=True)
class ReplayMatch:
    """The stored response a request's input extends, and what the request's items need:
    the JSON of the new ones (None for those already stored) and the digests of all."""

    base: tuple[str, int]
    encoded: list[bytes | None]
    digests: ItemDigests


def _key(client: str, conversation: str | None, items: Sequence[Any]) -> tuple[str, str, bytes]:
    first = hashlib.sha256(encode_items(items[:1])[0]).digest()[:16]
    return client, conversation or "", first


class ReplayCache:
    """Per (client, conversation, first item): the last stored response's input."""

    def __init__(
        self, max_bytes: int = MAX_BYTES, max_conversations: int = MAX_CONVERSATIONS
    ) -> None:
        self._max_bytes = max_bytes
        self._max_conversations = max_conversations
        self._entries: OrderedDict[tuple[str, str, bytes], _Stored] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def match(
        self, client: str, conversation: str | None, items: Sequence[Any]
    ) -> ReplayMatch | None:
        """The base and digests for `items` if they start with a remembered input,
        compared COMPARED_PER_STEP items per step of the loop. What is compared is the
        entry as it was when the match began: a turn that remembers another input meanwhile
        replaces the entry, never changes it (and the write checks that the base it found
        is still stored)."""
        if not items:
            return None
        key = _key(client, conversation, items)
        stored = self._entries.get(key)
        if stored is None:
            return None
        known = len(stored.items)
        if len(items) < known:
            return None
        for start in range(0, known, COMPARED_PER_STEP):
            if start:
                await asyncio.sleep(0)
            end = min(start + COMPARED_PER_STEP, known)
            if stored.items[start:end] != list(items[start:end]):
                return None
        if self._entries.get(key) is stored:
            self._entries.move_to_end(key)
        fresh = encode_items(items[known:])
        encoded: list[bytes | None] = [None] * known
        encoded.extend(fresh)
        return ReplayMatch(
            (stored.response_id, known), encoded, stored.digests.copy().extend(fresh)
        )

    def remember(
        self,
        client: str,
        conversation: str | None,
        response_id: str,
        items: Sequence[Any],
        digests: ItemDigests,
    ) -> None:
        """`items` are now stored as the input of `response_id`."""
        if not items or digests.size > self._max_bytes:
            return
        key = _key(client, conversation, items)
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._bytes -= previous.digests.size
        self._entries[key] = _Stored(response_id, list(items), digests)
        self._bytes += digests.size
        while self._entries and (
            self._bytes > self._max_bytes or len(self._entries) > self._max_conversations
        ):
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.digests.size
