"""The upstream request body as bytes: encoded once, a long conversation off the loop, a
WebSocket's kept messages put in place; and the shorter body `truncation: "auto"` sends after
the provider refused the length."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from bridge.body import UpstreamBody, join_messages
from bridge.errors import ApiError
from bridge.truncation import kept_share, truncate
from bridge.wire.chat import ChatMessage

if TYPE_CHECKING:
    from bridge.conversation import Prefix

log = logging.getLogger(__name__)

_ENCODER = msgspec.json.Encoder()
# Upstream bodies with more messages than this are encoded in a thread, message by message.
ENCODE_IN_THREAD = 5000
# ... and with more than this, message by message on the loop: a long conversation's body
# in one buffer is a fresh allocation of megabytes, whose page faults cost more than the
# encoding (5 MB: 4.5 ms against 2 ms in pieces).
ENCODE_IN_PIECES = 256
# Tool lists longer than this are echoed and encoded in a thread, tool by tool (100,000
# tools held the loop 1.3 s).
ECHO_IN_THREAD = 2000


def encode_messages(messages: Sequence[Any]) -> list[bytes]:
    """Each message (or tool) as JSON, one by one (in a thread, the loop gets in between)."""
    # A comprehension, not map(): the interpreter may switch threads between its steps.
    return [_ENCODER.encode(message) for message in messages]


def _many_tools(body: dict[str, Any]) -> bool:
    tools = body.get("tools")
    return isinstance(tools, list) and len(tools) >= ECHO_IN_THREAD


def _split_body(body: dict[str, Any]) -> tuple[bytes, bytes]:
    """The body's JSON before and after its messages; a long tool list encoded tool by tool
    (in one step, 250,000 tools held the interpreter half a second)."""
    if not _many_tools(body):
        rest = _ENCODER.encode({**body, "messages": []})
    else:
        before, _, after = _ENCODER.encode({**body, "messages": [], "tools": []}).partition(
            b'"tools":[]'
        )
        tools = b",".join(encode_messages(body["tools"]))
        rest = b"".join((before, b'"tools":[', tools, b"]", after))
    head, _, tail = rest.partition(b'"messages":[]')
    return head, tail


@dataclass(slots=True)
class EncodedBody:
    body: UpstreamBody
    # The body's own messages (the instructions left out), each encoded; None unless asked.
    messages: list[bytes] | None = None


async def encode_upstream_body(
    body: dict[str, Any],
    *,
    context_start: int = 0,
    prefix: Prefix | None = None,
    replaces_last: bool = False,
    keep_messages: bool = False,
    large: bool = False,
) -> EncodedBody:
    """The upstream request body as JSON; a very long conversation off the loop.

    With a `prefix` (a WebSocket's conversation) its encoded messages go between the
    instructions (`messages[:context_start]`) and the body's own messages, its last one
    left out when `replaces_last`. `keep_messages` keeps each of the body's own messages
    encoded, for the conversation's next turn. A `large` request's is always encoded in a
    thread.
    """
    messages: list[ChatMessage] = body["messages"]
    earlier: Sequence[bytes] = ()
    if prefix is not None:
        earlier = prefix.pieces[:-1] if replaces_last else prefix.pieces
    large = large or len(messages) + len(earlier) >= ENCODE_IN_THREAD or _many_tools(body)
    pieces = len(messages) >= ENCODE_IN_PIECES
    if prefix is None and not keep_messages and not large and not pieces:
        return EncodedBody(UpstreamBody.of(_ENCODER.encode(body)))
    assemble = functools.partial(_assemble, body, context_start, earlier, keep=keep_messages)
    if not large:
        return assemble()
    return await asyncio.to_thread(assemble)


def _assemble(
    body: dict[str, Any], context_start: int, earlier: Sequence[bytes], *, keep: bool
) -> EncodedBody:
    """The body from its encoded messages, `earlier` going after the instructions; a long
    one in a few large pieces (CPU-bound: in a thread for a long conversation)."""
    head, tail = _split_body(body)
    encoded = encode_messages(body["messages"])
    own = encoded[context_start:]
    pieces = join_messages(head, [*encoded[:context_start], *earlier, *own], tail)
    if len(pieces) < ENCODE_IN_THREAD:
        return EncodedBody(UpstreamBody(pieces), own if keep else None)
    return EncodedBody(UpstreamBody.in_runs(pieces), own if keep else None)


_MESSAGES = msgspec.json.Decoder(list[ChatMessage])


@dataclass(slots=True)
class Truncation:
    """`truncation: "auto"`: the body without its oldest turns, sized by the provider's
    refusal, for one more attempt. `earlier`: the encoded messages a WebSocket kept of the
    conversation, which go between the instructions and the body's own messages; the
    shorter body carries them all itself."""

    body: dict[str, Any]
    label: str
    context_start: int = 0
    earlier: Sequence[bytes] = ()

    async def shorter(self, error: ApiError) -> UpstreamBody | None:
        """The shorter body, or None when nothing can go."""
        own: list[ChatMessage] = self.body["messages"]
        messages = own
        if self.earlier:
            kept_before = _MESSAGES.decode(b"[" + b",".join(self.earlier) + b"]")
            start = self.context_start
            messages = [*own[:start], *kept_before, *own[start:]]
        kept = truncate(messages, kept_share(error.message))
        if kept is None:
            return None
        log.info(
            "%s: the provider refused the input's length; sending it again without its "
            "%d oldest messages (truncation: auto)",
            self.label,
            len(messages) - len(kept),
        )
        encoded = await encode_upstream_body({**self.body, "messages": kept})
        return encoded.body
