"""Digests of a conversation: what came before a turn, and the input items of a request.

A turn's context key (`ContextDigest.turn_key`) names the turn by everything said before it,
so the same answer text or the same tool call ids in another conversation never match. It
is computed over the upstream messages with reasoning left out, because a client may replay
a turn with or without its reasoning; and without the leading `instructions` message, which
the Responses API does not carry from one request to the next.

The item digests (`item_prefix_digests`) let the store find an earlier response whose whole
input a replaying client sent again, so it stores only what is new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from bridge.wire.chat import ChatMessage

_ENCODER = msgspec.json.Encoder()
DIGEST_BYTES = 16


def _message_bytes(message: ChatMessage) -> bytes:
    calls = [
        (call.id, call.function.name, call.function.arguments) for call in message.tool_calls or ()
    ]
    content: Any = message.content if message.content is not None else ""
    return _ENCODER.encode((message.role, content, calls, message.tool_call_id))


class ContextDigest:
    """A running SHA-256 over a conversation's messages, reasoning left out."""

    __slots__ = ("_hash",)

    def __init__(self, state: Any = None) -> None:
        self._hash = state if state is not None else hashlib.sha256(b"rb-context-v1\x00")

    def add(self, message: ChatMessage) -> None:
        data = _message_bytes(message)
        self._hash.update(len(data).to_bytes(8, "big"))
        self._hash.update(data)

    def extend(self, messages: Iterable[ChatMessage]) -> ContextDigest:
        for message in messages:
            self.add(message)
        return self

    def copy(self) -> ContextDigest:
        return ContextDigest(self._hash.copy())

    def turn_key(self, turn_fingerprint: str) -> str:
        """The key of an assistant turn (by its fingerprint) said after these messages."""
        digest = self._hash.copy()
        digest.update(b"\x00turn\x00" + turn_fingerprint.encode("ascii"))
        return digest.hexdigest()[: 2 * DIGEST_BYTES]


def context_of(messages: Sequence[ChatMessage], start: int = 0) -> ContextDigest:
    """The digest of `messages[start:]` (start skips the instructions message)."""
    return ContextDigest().extend(messages[start:])


class ItemDigests:
    """Digests of items[:k] for every k, over the items' exact bytes (bytes or msgspec.Raw,
    anything with the buffer protocol); extend it with later items as they come."""

    __slots__ = ("_running", "digests", "size")

    def __init__(self) -> None:
        self._running = hashlib.sha256(b"rb-items-v1\x00")
        self.digests: list[bytes] = []
        self.size = 0  # bytes digested

    def extend(self, items: Iterable[Any]) -> ItemDigests:
        running = self._running
        for item in items:
            data = memoryview(item)
            running.update(data.nbytes.to_bytes(8, "big"))
            running.update(data)
            self.size += data.nbytes
            self.digests.append(running.copy().digest()[:DIGEST_BYTES])
        return self

    def copy(self) -> ItemDigests:
        twin = ItemDigests()
        twin._running = self._running.copy()
        twin.digests = list(self.digests)
        twin.size = self.size
        return twin


def item_prefix_digests(items: Sequence[Any]) -> list[bytes]:
    """Digest of items[:k] for every k from 1 to len(items)."""
    return ItemDigests().extend(items).digests
